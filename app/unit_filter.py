"""The Units table's filter box: which rows a text like `good snr > 5 depth < 500` keeps (Qt-free).

Terms are separated by spaces or commas, and a row must pass all of them:
- `FIELD OP NUMBER`, OP one of < <= > >= = == !=, FIELD a column's short
  name (snr, depth, rate, spikes, ptp, isi, presence, rp, cutoff, lratio, unit);
  a row whose number is missing (NaN, or a column the table lacks) fails it;
- `good`, `mua`, `noise`: that label; `unsorted`: no label;
- a whole number: that unit id;
- any other word: found (ignoring case) in the unit's label or suggested label.
"""

from __future__ import annotations

import operator
import re

import numpy as np

# Short name -> UnitTable attribute.
FIELDS = {
    "unit": "unit_ids", "id": "unit_ids",
    "spikes": "n_spikes", "n": "n_spikes",
    "rate": "firing_rate", "fr": "firing_rate",
    "ptp": "peak_amplitude", "amp": "peak_amplitude", "amplitude": "peak_amplitude",
    "snr": "snr",
    "isi": "isi_violation_ratio",
    "depth": "depth", "y": "depth",
    "presence": "presence_ratio",
    "rp": "rp_contamination",
    "cutoff": "amplitude_cutoff",
    "lratio": "l_ratio", "l_ratio": "l_ratio",
}
LABELS = ("good", "mua", "noise")
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
             "=": operator.eq, "==": operator.eq, "!=": operator.ne}
_COMPARISON = re.compile(r"([A-Za-z_]+)\s*(<=|>=|==|!=|=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_LEFTOVER_OPERATOR = re.compile(r"[<>=!]")


class UnitFilterError(ValueError):
    """A filter text that cannot be read; the message says what and how to write it."""


def unit_filter_mask(table, text: str) -> np.ndarray:
    """(n_units,) bool: the rows of `table` (app.state.UnitTable) that `text` keeps (all of them for an empty text)."""
    n_units = len(table.unit_ids)
    keep = np.ones(n_units, dtype=bool)
    for name, symbol, number in _COMPARISON.findall(text):
        attribute = FIELDS.get(name.lower())
        if attribute is None:
            raise UnitFilterError(f"unknown column {name!r} in the filter; known: {', '.join(sorted(set(FIELDS)))}")
        column = getattr(table, attribute)
        if column is None:
            keep[:] = False  # a number this table was built without: no row has it
            continue
        values = np.asarray(column, dtype=float)
        with np.errstate(invalid="ignore"):
            keep &= OPERATORS[symbol](values, float(number)) & ~np.isnan(values)
    rest = _COMPARISON.sub(" ", text)
    if _LEFTOVER_OPERATOR.search(rest):
        raise UnitFilterError(
            f"cannot read {rest.strip()!r} in the filter: write a comparison as COLUMN OP NUMBER, e.g. snr > 5"
        )
    labels = [label.lower() for label in table.labels] if table.labels else [""] * n_units
    suggested = [label.lower() for label in table.suggested_labels] if table.suggested_labels else [""] * n_units
    for word in re.split(r"[\s,]+", rest.strip().lower()):
        if not word or word == "and":
            continue
        if word in LABELS:
            keep &= np.array([label == word for label in labels], dtype=bool)
        elif word == "unsorted":
            keep &= np.array([label == "" for label in labels], dtype=bool)
        elif word.isdigit():
            keep &= np.asarray(table.unit_ids) == int(word)
        else:
            keep &= np.array([word in label or word in hint for label, hint in zip(labels, suggested)], dtype=bool)
    return keep
