"""SpikeInterface's curation JSON: what we export replays in SpikeInterface, and what we import replays here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.curation.model import Curation
from engine.curation.si_curation import (
    CurationFormatError,
    apply_spikeinterface_curation,
    export_spikeinterface_curation,
    read_curation_json,
    write_curation_json,
)
from engine.io.phy import export_phy
from engine.pipeline.sorting import Sorting

N_UNITS = 6


@pytest.fixture
def sorting():
    rng = np.random.default_rng(1)
    n_spikes = 3000
    return Sorting(
        spike_times=np.sort(rng.choice(3_000_000, n_spikes, replace=False)),
        spike_units=rng.integers(0, N_UNITS, n_spikes),
        amplitudes=rng.normal(60, 5, n_spikes),
        templates=rng.normal(size=(N_UNITS, 20, 4)),
        sampling_rate=30_000.0,
    )


def curate(curation: Curation) -> None:
    """Merges, splits that build on each other, and labels."""
    merged = curation.merge([0, 1]).added[0]  # 6
    piece, rest = curation.split(curation.spikes_of(2)[::3]).added  # 7, 8
    curation.merge([piece, 3])  # 9
    curation.split(curation.spikes_of(merged)[:50])  # 10 (from 6), 11 (the rest of 6)
    curation.label(4, "good")
    curation.label(rest, "mua")
    curation.label(5, "noise")


def partition(curation: Curation, spike_times: np.ndarray) -> dict[int, frozenset]:
    return {int(u): frozenset(spike_times[curation.spikes_of(u)].tolist()) for u in curation.unit_ids}


def test_export_round_trips_through_spikeinterface_apply_curation(sorting, tmp_path):
    si_curation = pytest.importorskip("spikeinterface.curation")
    extractors = pytest.importorskip("spikeinterface.extractors")
    folder = export_phy(sorting, tmp_path / "sort")
    curation = Curation(sorting.spike_units)
    curate(curation)
    path = write_curation_json(folder / "curation.json", export_spikeinterface_curation(curation, sorting.spike_units))

    theirs = si_curation.apply_curation(extractors.read_phy(folder), json.loads(path.read_text()))
    ours = partition(curation, sorting.spike_times)
    assert sorted(int(u) for u in theirs.unit_ids) == sorted(ours)
    for unit, spike_times in ours.items():
        assert frozenset(theirs.get_unit_spike_train(unit).tolist()) == spike_times
    quality = dict(zip((int(u) for u in theirs.unit_ids), theirs.get_property("quality")))
    labels = curation.labels
    assert all(quality[u] == labels[u] for u in (4, 5, 8))


def test_removing_noise_units_on_export(sorting, tmp_path):
    si_curation = pytest.importorskip("spikeinterface.curation")
    extractors = pytest.importorskip("spikeinterface.extractors")
    folder = export_phy(sorting, tmp_path / "sort")
    curation = Curation(sorting.spike_units)
    curate(curation)
    steps = export_spikeinterface_curation(curation, sorting.spike_units, remove_noise=True)
    theirs = si_curation.apply_curation(extractors.read_phy(folder), steps)
    assert 5 not in {int(u) for u in theirs.unit_ids}


def test_import_replays_an_exported_curation_as_undoable_actions(sorting, tmp_path):
    curation = Curation(sorting.spike_units)
    curate(curation)
    path = write_curation_json(tmp_path / "curation.json", export_spikeinterface_curation(curation, sorting.spike_units))

    fresh = Curation(sorting.spike_units)
    records = apply_spikeinterface_curation(fresh, read_curation_json(path))
    assert records and fresh.can_undo
    assert set(partition(fresh, sorting.spike_times).values()) == set(partition(curation, sorting.spike_times).values())
    by_spikes = {spikes: curation.labels[u] for u, spikes in partition(curation, sorting.spike_times).items()}
    assert all(fresh.labels[u] == by_spikes[s] for u, s in partition(fresh, sorting.spike_times).items())
    while fresh.can_undo:
        fresh.undo()
    assert fresh.spike_clusters.tolist() == sorting.spike_units.tolist()


def test_a_file_that_does_not_fit_changes_nothing(sorting, tmp_path):
    curation = Curation(sorting.spike_units)
    bad = {"format_version": "2", "unit_ids": [0, 1, 99], "merges": [{"unit_ids": [0, 99]}]}
    with pytest.raises(CurationFormatError, match="99"):
        apply_spikeinterface_curation(curation, bad)
    assert not curation.can_undo
    (tmp_path / "old.json").write_text(json.dumps({"format_version": "1", "unit_ids": [0]}))
    with pytest.raises(CurationFormatError, match="format 1"):
        read_curation_json(tmp_path / "old.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(CurationFormatError, match="not a readable JSON"):
        read_curation_json(tmp_path / "junk.json")
