"""The Units table's filter text (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from app.state import UnitTable
from app.unit_filter import UnitFilterError, unit_filter_mask


@pytest.fixture
def table():
    return UnitTable(
        unit_ids=np.array([0, 1, 2, 7], dtype=np.int32),
        n_spikes=np.array([10, 200, 50, 5]),
        firing_rate=np.array([0.5, 10.0, 2.5, 0.1]),
        peak_amplitude=np.array([50.0, 300.0, 120.0, 40.0]),
        snr=np.array([2.0, 12.0, 6.0, np.nan]),
        isi_violation_ratio=np.array([0.0, 0.1, 0.0, 0.0]),
        labels=["", "good", "mua", "noise"],
        suggested_labels=["noise", "good", "mua", "noise"],
        positions=np.array([[0.0, 100.0], [32.0, 400.0], [0.0, 620.0], [16.0, 20.0]]),
    )


def kept(table, text):
    return table.unit_ids[unit_filter_mask(table, text)].tolist()


def test_comparisons_labels_ids_and_words_combine(table):
    assert kept(table, "") == [0, 1, 2, 7]
    assert kept(table, "snr > 5") == [1, 2], "a missing SNR fails a comparison"
    assert kept(table, "depth<500") == [0, 1, 7]
    assert kept(table, "depth < 500, snr >= 2") == [0, 1]
    assert kept(table, "good") == [1]
    assert kept(table, "unsorted") == [0]
    assert kept(table, "GOOD snr > 5") == [1]
    assert kept(table, "7") == [7]
    assert kept(table, "nois") == [0, 7], "free text is found in labels and suggested labels"
    assert kept(table, "l_ratio < 1") == [], "a column the table lacks keeps no row"


def test_unreadable_filters_say_how_to_write_them(table):
    with pytest.raises(UnitFilterError, match="unknown column 'sharpness'.*snr"):
        unit_filter_mask(table, "sharpness > 3")
    with pytest.raises(UnitFilterError, match="COLUMN OP NUMBER"):
        unit_filter_mask(table, "snr > high")
