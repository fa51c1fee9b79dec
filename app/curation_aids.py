"""What helps the person curate faster: merge suggestions, suggested labels, SpikeInterface curation files.

Lives beside the curation controller (app.curation_controller), which owns
the Curation and calls in here when a curation opens, after every action,
and when it closes. Merge suggestions are computed in a worker on a copy of
the curation's units, so the person can curate meanwhile; when they are
ready they catch up with whatever was done (MergeSuggestions.follow) and
from then on follow each action's change record on the GUI thread (only
the pairs of the units an action added are weighed: ~0.1 s after a merge
on a 500-unit sort).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PyQt6 import sip
from PyQt6.QtCore import QObject
from PyQt6.QtWidgets import QFileDialog

from app.label_rules_dialog import LabelRulesDialog
from app.settings import app_settings
from engine.curation.display_snippets import for_views
from engine.curation.labels import DEFAULT_RULES, SuggestedLabel, rules_from_json, rules_to_json, suggest_labels
from engine.curation.model import Curation
from engine.curation.si_curation import (
    CurationFormatError,
    apply_spikeinterface_curation,
    export_spikeinterface_curation,
    read_curation_json,
    write_curation_json,
)
from engine.curation.suggestions import MergeSuggestions, SuggestionsCancelled, data_template_source

RULES_SETTING = "curation/label_rules"
FEATURE_SAMPLE_SPIKES = 10_000  # spikes whose features measure every unit's L-ratio
JSON_FILTER = "SpikeInterface curation (*.json);;All files (*)"


def feature_sample(sorting, recording, context) -> tuple[np.ndarray, np.ndarray] | None:
    """Worker: (spike indices, their waveform features) to measure L-ratios on; None without raw data."""
    from engine.curation.embedding import stratified_subsample
    from engine.curation.features import Cancelled, SpikeFeatureExtractor

    if recording is None or sorting.n_spikes == 0:
        return None
    spikes = stratified_subsample(sorting.spike_units, FEATURE_SAMPLE_SPIKES)
    try:
        features = SpikeFeatureExtractor().fit_transform(
            recording, sorting, spikes, lambda f: context.progress(0.5 + 0.3 * f, "Reading waveform features"),
            context.should_stop,
        )
    except Cancelled:
        return None
    return spikes, features


def saved_rules():
    text = app_settings().value(RULES_SETTING)
    if not text:
        return DEFAULT_RULES
    try:
        return rules_from_json(json.loads(text))
    except ValueError:
        return DEFAULT_RULES  # written by another version: the defaults are a safe start


class CurationAids(QObject):
    def __init__(self, controller) -> None:
        super().__init__(controller)
        self.controller = controller
        self.session = controller.session
        self.rules = saved_rules()
        self.suggestions: MergeSuggestions | None = None
        self._generation = 0  # bumped when a curation closes, so a late worker result is dropped
        self._build_menu(controller.menu)
        # Suggestions still being weighed when the window closes must not land in its deleted session.
        controller.window.closed.connect(self.closed)

    # ---- menu -----------------------------------------------------------------------------------
    def _build_menu(self, menu) -> None:
        add = self.controller._add_action
        menu.addSeparator()
        self.merge_top_action = add(menu, "Merge With &Top Suggestion", self.merge_top_suggestion, "Shift+G")
        self.reject_top_action = add(menu, "Re&ject Top Suggestion", self.reject_top_suggestion, "Shift+X")
        menu.addSeparator()
        self.accept_selected_action = add(
            menu, "&Accept Suggested Labels (Selected Units)", lambda: self.accept_suggested_labels(False), "Alt+A"
        )
        self.accept_all_action = add(menu, "Accept Suggested Labels (&All Units)", lambda: self.accept_suggested_labels(True))
        self.rules_action = add(menu, "Suggested Label &Rules…", self.edit_rules)
        menu.addSeparator()
        self.export_action = add(menu, "E&xport SpikeInterface Curation…", self.export_spikeinterface)
        self.import_action = add(menu, "&Import SpikeInterface Curation…", self.import_spikeinterface)

    # ---- following the curation ---------------------------------------------------------------------
    def opened(self, curation: Curation, sorting, recording, duration_s: float) -> None:
        """A curation was installed: weigh its pairs in a worker, on a copy of its units."""
        self.closed()
        generation = self._generation
        units_now = curation.spike_clusters.copy()  # the worker indexes its own copy, off the GUI thread

        def work(context):
            # Made here: it measures every template's main channel (0.3 s at 500 × 384 channels).
            source = data_template_source(for_views(recording), sorting) if recording is not None else None
            try:
                return MergeSuggestions(
                    Curation(units_now), sorting, duration_s, template_source=source,
                    progress=lambda f: context.progress(f, "Weighing merge suggestions"),
                    should_stop=context.should_stop,
                )
            except SuggestionsCancelled:
                return None

        def done(suggestions) -> None:
            if suggestions is None or generation != self._generation or sip.isdeleted(self.session):
                return
            if self.controller.curation is not curation:
                return
            suggestions.follow(curation)
            self.suggestions = suggestions
            self.session.set_merge_suggestions(suggestions)

        self.controller.engine.run_job("Computing merge suggestions", work, done, background=True)

    def followed(self, record) -> None:
        """An action was done (the controller calls this before redrawing)."""
        if self.suggestions is not None:
            self.suggestions.update(record)
            self.session.set_merge_suggestions(self.suggestions)

    def closed(self) -> None:
        self._generation += 1
        self.suggestions = None
        if not sip.isdeleted(self.session) and self.session.merge_suggestions is not None:
            self.session.set_merge_suggestions(None)

    def suggested_labels(self, metrics) -> dict[int, SuggestedLabel]:
        return suggest_labels(metrics, self.rules)

    # ---- merge suggestions ------------------------------------------------------------------------
    def _top_suggestion(self):
        """The best suggestion for the selected unit (the first selected), or None with the reason said."""
        controller = self.controller
        if not controller._ready():
            return None
        if self.suggestions is None:
            controller.say("Merge suggestions are still being computed: wait a moment")
            return None
        units = self.session.selected_units
        if not units:
            controller.say("Select a unit first: its most similar units are in the Similarity view")
            return None
        rejected = controller.curation.rejected_pairs
        anchor = units[0]
        if len(units) == 2:
            evidence = self.suggestions.evidence(*units)
            if evidence is not None and tuple(sorted(units)) not in rejected:
                return evidence
        best = self.suggestions.for_unit(anchor, rejected)
        if not best:
            controller.say(f"No merge suggestion left for unit {anchor}")
            return None
        return best[0]

    def merge_top_suggestion(self) -> None:
        evidence = self._top_suggestion()
        if evidence is not None:
            self.controller._do(f"Merging {evidence.units[0]} and {evidence.units[1]}",
                                lambda curation: curation.merge(evidence.units), select_added=True)

    def reject_top_suggestion(self) -> None:
        evidence = self._top_suggestion()
        if evidence is None:
            return
        anchor = self.session.selected_units[0]
        self.controller._do(f"Rejecting the merge of {evidence.units[0]} and {evidence.units[1]}",
                            lambda curation: curation.reject_suggestion(*evidence.units))
        # Stay on the unit, so its next suggestion is what the person sees.
        self.session.select_units((anchor,))

    # ---- suggested labels ---------------------------------------------------------------------------
    def accept_suggested_labels(self, all_units: bool) -> None:
        controller = self.controller
        if not controller._ready():
            return
        units = controller.curation.unit_ids.tolist() if all_units else list(self.session.selected_units)
        if not units:
            controller.say("Select the units whose suggested labels to accept (or accept them for all units)")
            return
        if controller.metrics.pending:
            controller.say("The unit metrics are still being computed: accept the suggested labels once the table shows them")
            return
        suggested = self.suggested_labels({u: controller.metrics.metrics[u] for u in units})
        labels = controller.curation.labels
        changes = {u: s.label for u, s in suggested.items() if labels[u] != s.label}
        if not changes:
            controller.say("The labels already are the suggested ones")
            return
        description = f"Accepted suggested labels of {len(changes)} unit{'s' * (len(changes) > 1)}"
        controller._do("Accepting suggested labels", lambda curation: curation.set_labels(changes, description))

    def edit_rules(self) -> None:
        dialog = LabelRulesDialog(self.rules, self.controller.window)
        dialog.accepted.connect(lambda: self.set_rules(dialog.rules()))
        dialog.open()
        self.rules_dialog = dialog  # for tests and to keep it alive while open

    def set_rules(self, rules) -> None:
        self.rules = tuple(rules)
        app_settings().setValue(RULES_SETTING, json.dumps(rules_to_json(self.rules)))
        controller = self.controller
        if controller.curation is not None and controller.metrics is not None:
            # Same sorting, new table: the Units view redraws its Suggested column.
            self.session.set_sorting(self.session.sorting, controller._unit_table())
        controller.say("Suggested labels follow the new rules")

    # ---- SpikeInterface curation files -----------------------------------------------------------------
    def export_spikeinterface(self, path: str | Path | None = None) -> None:
        controller = self.controller
        if not controller._ready():
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(controller.window, "Export the curation for SpikeInterface",
                                                  str(self._default_json_path()), JSON_FILTER)
            if not path:
                return
        steps = export_spikeinterface_curation(controller.curation, self._units_the_file_applies_to())
        write_curation_json(path, steps)
        controller.say(f"Wrote {path}: spikeinterface.curation.apply_curation replays it on this sort")

    def import_spikeinterface(self, path: str | Path | None = None) -> None:
        controller = self.controller
        if not controller._ready():
            return
        if path is None:
            path, _ = QFileDialog.getOpenFileName(controller.window, "Import a SpikeInterface curation",
                                                  str(self._default_json_path().parent), JSON_FILTER)
            if not path:
                return
        try:
            records = apply_spikeinterface_curation(controller.curation, read_curation_json(path))
        except CurationFormatError as error:
            controller.say(str(error))
            return
        for record in records:
            controller._publish(record, select_added=False)
        controller.say(f"Imported {Path(path).name}: {len(records)} actions (each can be undone)")

    def _default_json_path(self) -> Path:
        folder = self.controller.phy_folder
        return (folder if folder is not None else Path.home()) / "curation.json"

    def _units_the_file_applies_to(self) -> np.ndarray:
        """The units SpikeInterface reads from the sort's folder now (read_phy), else those the curation began from."""
        from app.curation_controller import starting_units

        folder = self.controller.phy_folder
        if folder is not None:
            for name in ("spike_clusters.npy", "spike_templates.npy"):
                if (folder / name).exists():
                    return np.load(folder / name).astype(np.int64).reshape(-1)
        return starting_units(self.session.sorting)[0]
