"""Kilosort/phy's params.py, read without running it: the one parser both recordings and phy folders use."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Collection


def read_params_py(path: str | Path, error_type: type[Exception] = ValueError,
                   keys: Collection[str] | None = None) -> dict:
    """params.py's top-level `name = value` assignments (only those named in `keys`, when given).

    Values must be literals (30000.0, 'int16', ['a.bin']); a dtype written as
    `np.int16` (as Kilosort writes it) is read by its name, 'int16'. Code is
    never executed. Errors are raised as `error_type`, naming the file, the
    line and the fix.
    """
    path = Path(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as error:
        raise error_type(f"{path} is not valid Python ({error}): fix or rewrite it") from error
    values = {}
    for statement in tree.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            continue
        name = statement.targets[0].id
        if keys is not None and name not in keys:
            continue
        if isinstance(statement.value, ast.Attribute):  # np.int16, numpy.float32
            values[name] = statement.value.attr
            continue
        try:
            values[name] = ast.literal_eval(statement.value)
        except ValueError as error:
            raise error_type(
                f"{path} line {statement.lineno}: {name} is not a plain value "
                f"(only literals like 30000.0 or 'int16' are read, code is never run): write the value itself"
            ) from error
    return values
