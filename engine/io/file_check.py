"""Is this file a recording at all? Cheap checks on its first bytes, before anyone is asked its sampling rate.

A person who picks the wrong file (notes, a pickled object, a spreadsheet)
should hear that at once, in words about the file, rather than be asked how
it is stored and then get numpy's internals (its `allow_pickle` advice) or a
few milliseconds of "recording" made of text.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.io.recording import RecordingError

SNIFF_BYTES = 4096
NUMPY_SUFFIX = ".npy"
NUMERIC_KINDS = "iuf"  # signed, unsigned, floating point
# Shortest recording worth sorting: the noise level, the initial spike shapes and the
# training windows all need spikes, and at a few Hz a unit fires only a handful in 1 s.
MIN_SORTABLE_S = 1.0


def check_recording_file(path: str | os.PathLike) -> None:
    """Raise RecordingError naming what is wrong when `path` cannot be a recording; needs no parameters."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise RecordingError(f"{path} is empty (0 bytes): choose the recording's data file")
    if path.suffix.lower() == NUMPY_SUFFIX:
        _check_npy(path)
    else:
        _check_not_text(path)


def check_sortable_duration(recording, path: str | os.PathLike) -> None:
    """Raise RecordingError when `recording` is too short to sort, saying how long it is."""
    if recording.duration >= MIN_SORTABLE_S:
        return
    raise RecordingError(
        f"{Path(path).name} holds {recording.n_samples} samples, {recording.duration:.3g} s at "
        f"{recording.sampling_rate:g} Hz: too short to sort (at least {MIN_SORTABLE_S:g} s is needed to "
        "learn spike shapes). If it should be longer, check the sampling rate, channel count and sample type."
    )


def _check_npy(path: Path) -> None:
    with path.open("rb") as file:
        try:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read_header(file)
        except (ValueError, EOFError, SyntaxError) as error:
            raise RecordingError(f"{path} is not a numpy array file (.npy): its header cannot be read") from error
    if dtype.hasobject:
        raise RecordingError(
            f"{path} holds Python objects (dtype {dtype}), not samples: a recording is a numeric "
            "array of shape (n_samples, n_channels)"
        )
    if dtype.kind not in NUMERIC_KINDS:
        raise RecordingError(
            f"{path} holds {dtype} values, not numbers: a recording is an integer or float array "
            "of shape (n_samples, n_channels)"
        )
    if len(shape) != 2:
        raise RecordingError(
            f"{path} holds an array of shape {shape}; a recording must be (n_samples, n_channels): "
            "save it as traces[:, None] for one channel"
        )


def _check_not_text(path: Path) -> None:
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
    # Samples of a real recording are noise: their bytes include NULs and control codes.
    # Text is printable (any language, in UTF-8) throughout.
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return
    if "\x00" not in text and all(character.isprintable() or character in "\t\r\n" for character in text):
        first_line = text.strip().splitlines()[0][:60] if text.strip() else ""
        raise RecordingError(
            f"{path} is a text file (it starts {first_line!r}), not recorded samples: choose the "
            "recording's binary data file (.bin, .dat, .raw) or a .npy array"
        )
