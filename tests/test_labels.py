"""Suggested labels: bombcell-style rules in the open, and what they write into cluster_info.tsv."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest

from engine.curation.labels import (
    DEFAULT_RULES,
    LabelRule,
    rules_from_json,
    rules_to_json,
    suggest_label,
    suggest_labels,
    suggested_label_column,
)
from engine.curation.metrics import UnitMetrics, metrics_to_phy_columns
from engine.curation.model import Curation
from engine.io.phy import export_phy
from engine.pipeline.sorting import Sorting

GOOD = UnitMetrics(
    n_spikes=5000, firing_rate=5.0, snr=8.0, isi_violation_ratio=0.0, isi_violation_count=0,
    presence_ratio=0.95, amplitude_median=80.0, rp_violations=0, rp_contamination=0.0,
    amplitude_cutoff=0.01,
)


def test_a_unit_passing_every_rule_is_good_and_each_broken_rule_says_why():
    assert suggest_label(GOOD).label == "good" and suggest_label(GOOD).reasons == ()
    weak = replace(GOOD, snr=3.0, presence_ratio=0.5)
    suggestion = suggest_label(weak)
    assert suggestion.label == "mua"
    assert suggestion.reasons == ("presence_ratio 0.5 < 0.7", "snr 3 < 5")
    assert suggest_label(replace(GOOD, rp_contamination=0.3)).label == "mua"


def test_unmeasured_metrics_do_not_count_and_noise_rules_win():
    assert suggest_label(replace(GOOD, snr=np.nan)).label == "good"
    rules = DEFAULT_RULES + (LabelRule("amplitude_median", "min", 30.0, label="noise"),)
    assert suggest_label(replace(GOOD, amplitude_median=10.0, snr=2.0), rules).label == "noise"
    disabled = tuple(replace(rule, enabled=False) for rule in DEFAULT_RULES)
    assert suggest_label(replace(GOOD, snr=1.0), disabled).label == "good"


def test_rules_round_trip_through_json_and_bad_rules_are_refused():
    assert rules_from_json(rules_to_json(DEFAULT_RULES)) == DEFAULT_RULES
    with pytest.raises(ValueError, match="unknown metric"):
        LabelRule("beauty", "min", 1.0)
    with pytest.raises(ValueError, match="'min' or 'max'"):
        LabelRule("snr", "at least", 1.0)
    with pytest.raises(ValueError, match="unexpected fields"):
        rules_from_json([{"metric": "snr", "bound": "min", "threshold": 5, "colour": "red"}])


def test_cluster_info_carries_metrics_and_the_suggested_label(tmp_path):
    rng = np.random.default_rng(0)
    sorting = Sorting(np.sort(rng.integers(0, 300_000, 600)), np.arange(600) % 3, np.full(600, 50.0),
                      rng.normal(size=(3, 20, 2)), 30_000.0)
    folder = export_phy(sorting, tmp_path / "sort")
    curation = Curation(sorting.spike_units)
    metrics = {0: GOOD, 1: replace(GOOD, snr=2.0), 2: GOOD}
    columns = {**metrics_to_phy_columns(metrics, {}), **suggested_label_column(suggest_labels(metrics))}
    curation.save_phy(folder, columns)
    with open(folder / "cluster_info.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["suggested_label"] for row in rows] == ["good", "mua", "good"]
    assert {"fr", "snr", "rp_contamination", "amplitude_cutoff", "presence_ratio", "l_ratio"} <= set(rows[0])
    assert float(rows[1]["snr"]) == 2.0
