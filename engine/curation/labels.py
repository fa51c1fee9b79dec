"""Suggested labels: open rules on the quality metrics, bombcell's way.

A unit is suggested "noise" if it breaks a rule whose label is noise, else
"mua" if it breaks a rule whose label is mua, else "good". Every rule is
one metric, one bound and the label it gives, so the person can read and
change each (the app's Suggested Labels dialog). The defaults are
bombcell's published quality thresholds (Fabre et al., bombcell's
`bc_qualityParamValues`): minimum amplitude 20 µV, at most 10 % refractory
contamination, presence in at least 70 % of the recording, SNR of at least
5, at most 20 % of spikes lost below threshold, at least 300 spikes; units
failing any are multi-unit activity. A metric that could not be measured
(nan) does not count against a unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from engine.curation.metrics import UnitMetrics

SUGGESTABLE = ("good", "mua", "noise")


@dataclass(frozen=True)
class LabelRule:
    metric: str  # a UnitMetrics field
    bound: str  # "min": the metric must be at least `threshold`; "max": at most
    threshold: float
    label: str = "mua"  # what a unit breaking the rule is suggested to be
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.metric not in UnitMetrics.__dataclass_fields__:
            known = ", ".join(UnitMetrics.__dataclass_fields__)
            raise ValueError(f"unknown metric {self.metric!r} in a label rule; use one of {known}")
        if self.bound not in ("min", "max"):
            raise ValueError(f"a label rule's bound is 'min' or 'max', got {self.bound!r}")
        if self.label not in ("mua", "noise"):
            raise ValueError(f"a unit breaking a rule is 'mua' or 'noise', got {self.label!r}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"the threshold of the {self.metric} rule must be a number, got {self.threshold}")

    def broken_by(self, metrics: UnitMetrics) -> bool:
        value = float(getattr(metrics, self.metric))
        if not self.enabled or math.isnan(value):
            return False
        return value < self.threshold if self.bound == "min" else value > self.threshold

    def describe(self, metrics: UnitMetrics) -> str:
        sign = "<" if self.bound == "min" else ">"
        return f"{self.metric} {float(getattr(metrics, self.metric)):.3g} {sign} {self.threshold:g}"


DEFAULT_RULES = (
    LabelRule("amplitude_median", "min", 20.0),  # µV
    LabelRule("rp_contamination", "max", 0.1),
    LabelRule("presence_ratio", "min", 0.7),
    LabelRule("snr", "min", 5.0),
    LabelRule("amplitude_cutoff", "max", 0.2),
    LabelRule("n_spikes", "min", 300),
)


@dataclass(frozen=True)
class SuggestedLabel:
    label: str  # "good", "mua" or "noise"
    reasons: tuple[str, ...]  # the rules broken, e.g. "snr 3.2 < 5"

    @property
    def text(self) -> str:
        return self.label if not self.reasons else f"{self.label}: {'; '.join(self.reasons)}"


def suggest_label(metrics: UnitMetrics, rules: Iterable[LabelRule] = DEFAULT_RULES) -> SuggestedLabel:
    broken = [rule for rule in rules if rule.broken_by(metrics)]
    reasons = tuple(rule.describe(metrics) for rule in broken)
    labels = {rule.label for rule in broken}
    label = "noise" if "noise" in labels else "mua" if "mua" in labels else "good"
    return SuggestedLabel(label, reasons)


def suggest_labels(
    metrics: Mapping[int, UnitMetrics], rules: Iterable[LabelRule] = DEFAULT_RULES
) -> dict[int, SuggestedLabel]:
    rules = tuple(rules)
    return {int(unit): suggest_label(unit_metrics, rules) for unit, unit_metrics in metrics.items()}


def rules_to_json(rules: Iterable[LabelRule]) -> list[dict]:
    return [asdict(rule) for rule in rules]


def rules_from_json(items: list[dict]) -> tuple[LabelRule, ...]:
    """Rules saved by `rules_to_json`; a bad entry raises ValueError naming it."""
    try:
        return tuple(LabelRule(**item) for item in items)
    except TypeError as error:
        raise ValueError(f"a saved label rule has unexpected fields: {error}") from error


def suggested_label_column(suggestions: Mapping[int, SuggestedLabel]) -> dict[str, dict[int, str]]:
    """The cluster_info.tsv column (`Curation.save_phy(extra_columns=...)`) phy and bombcell users read."""
    return {"suggested_label": {unit: s.label for unit, s in suggestions.items()}}
