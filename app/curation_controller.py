"""Curation in the window: the Curation menu, its keys (phy's), and the engine's Curation tied to the Session.

Whenever a sorting appears in the session (sorted after training, or opened
from a phy or session folder) a `Curation` is opened on it, in a worker:
journaled in the sort's folder (engine.curation.folder) so every action is on
disk the moment it is done, or, for a sort that has no folder yet, in a
scratch folder whose journal moves into the session folder when the person
saves. After each action the unit metrics of the new units are computed
(engine.curation.metrics.MetricsCache keeps the others), the Units table is rebuilt
from the curation's units, and the session tells every view.

Actions that cannot be done (merging one unit, splitting without a lasso,
undoing nothing, ...) are refused with a message in the status bar. While
work on the curation runs in a worker (re-clustering, saving, ...), the
other actions wait, so that only one thread ever changes the curation.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PyQt6 import sip
from PyQt6.QtCore import QObject
from PyQt6.QtGui import QKeySequence
from PyQt6.QtWidgets import QInputDialog, QMessageBox

from app.collector import set_aside_loaded_objects
from app.curation_aids import CurationAids, feature_sample
from app.errors import describe_error
from app.state import UnitTable
from engine.curation.model import DEFAULT_GROUP, GROUPS, ChangeRecord, Curation, CurationError
from engine.curation.folder import copy_journal, journal_folder_of, open_curation
from engine.curation.journal import JournalCorruptError
from engine.curation.features import Cancelled, SpikeFeatureExtractor, mean_template
from engine.curation.display_snippets import for_views
from engine.curation.labels import suggested_label_column
from engine.curation.metrics import MetricsCache, l_ratios, metrics_to_phy_columns
from engine.curation.unit_positions import main_channel, positions_from_peak_to_peak, unit_positions
from engine.io.session_folder import SORTING_FOLDER

RECLUSTER_MAX_K = 12
METRICS_PENDING = "its metrics are still being computed"
LABEL_KEYS = (("good", "Alt+G"), ("mua", "Alt+M"), ("noise", "Alt+N"))


@dataclass(eq=False)
class _CurationHome:
    """Where the curation of `sorting` lives: its journal, and the phy folder Save writes to."""

    sorting: object
    journal_folder: Path
    phy_folder: Path | None  # where Save writes; None for a sort without a folder
    scratch: tempfile.TemporaryDirectory | None  # owns `journal_folder` when it is a scratch folder
    then: object = None  # called (no arguments) once it is installed
    keep_first: int | None = None  # open only this many actions of a damaged journal (the person agreed)


@dataclass
class _LoadedCuration:
    curation: Curation
    metrics: MetricsCache
    shapes: dict[int, UnitShape]  # unit -> the numbers of its mean template
    note: str  # something the person should know about the journal, or ""


def starting_units(sorting) -> tuple[np.ndarray, dict[int, str]]:
    """The unit of each spike and the labels a curation of `sorting` starts from.

    Units are the phy cluster ids when the sort was read from a phy folder
    (`Sorting.cluster_ids`), so that saving writes back the ids phy
    and the person know; else the sort's own unit indices. The labels are the
    folder's groups, or those a fresh sort gave (its residual units: noise).
    """
    cluster_ids = sorting.cluster_ids
    ids = (np.arange(sorting.n_units, dtype=np.int64) if cluster_ids is None
           else np.asarray(cluster_ids, dtype=np.int64))
    # Groups phy does not know (free-form ones some tools write) start unsorted.
    labels = {int(ids[u]): g for u, g in sorting.unit_groups.items() if g in GROUPS and g != DEFAULT_GROUP}
    return ids[sorting.spike_units], labels


@dataclass(frozen=True)
class UnitShape:
    """What the mean template of a curated unit tells the table and the probe-based views."""

    peak_to_peak: float  # µV, on its main channel
    position: tuple[float, float]  # µm (x, y), engine.curation.unit_positions
    main_channel: int


def unit_shape(sorting, spikes: np.ndarray) -> UnitShape:
    """The shape numbers of a unit made of `spikes` (its mean template is computed once for all)."""
    if sorting.n_units == 0:
        return UnitShape(float("nan"), (float("nan"), float("nan")), 0)
    template = mean_template(sorting, spikes)  # (n_taps, n_channels)
    x, y = unit_positions(template[None], sorting.channel_positions)[0]
    return UnitShape(float(np.ptp(template, axis=0).max()), (float(x), float(y)), main_channel(template))


def unit_shapes(sorting, unit_spikes: dict[int, np.ndarray]) -> dict[int, UnitShape]:
    """unit_shape of each unit, the units still one of the sort's (all of them, before any merge) taken together:
    their mean template is the sort's own, and one pass over all of them cost 0.4 s of 500 at 384 channels."""
    if sorting.n_units == 0:
        return {unit: unit_shape(sorting, spikes) for unit, spikes in unit_spikes.items()}
    whole, shapes = {}, {}
    for unit, spikes in unit_spikes.items():
        sort_units = sorting.spike_units[spikes]
        if len(sort_units) and sort_units.min() == sort_units.max():
            whole[unit] = int(sort_units[0])
        else:
            shapes[unit] = unit_shape(sorting, spikes)
    if whole:
        peak_to_peak = np.ptp(sorting.templates, axis=1)[list(whole.values())]  # (k, n_channels), no copy of the templates
        positions = positions_from_peak_to_peak(peak_to_peak, sorting.channel_positions)
        for row, unit in enumerate(whole):
            shapes[unit] = UnitShape(float(peak_to_peak[row].max()), (float(positions[row, 0]), float(positions[row, 1])),
                                     int(peak_to_peak[row].argmax()))
    return shapes


def curated_unit_table(
    curation: Curation, metrics: dict, shapes: dict[int, UnitShape], suggested: dict | None = None
) -> UnitTable:
    """The Units table's rows: one per current unit of the curation.

    `suggested`: unit -> engine.curation.labels.SuggestedLabel, for the Suggested column.
    """
    unit_ids = curation.unit_ids
    labels = curation.labels

    def column(name: str) -> np.ndarray:
        return np.array([getattr(metrics[u], name) for u in unit_ids.tolist()], dtype=float)

    return UnitTable(
        unit_ids=unit_ids.astype(np.int32),
        n_spikes=np.array([metrics[u].n_spikes for u in unit_ids.tolist()], dtype=np.int64),
        firing_rate=np.array([metrics[u].firing_rate for u in unit_ids.tolist()], dtype=float),
        peak_amplitude=np.array([shapes[u].peak_to_peak for u in unit_ids.tolist()], dtype=float),
        snr=np.array([metrics[u].snr for u in unit_ids.tolist()], dtype=float),
        isi_violation_ratio=np.array([metrics[u].isi_violation_ratio for u in unit_ids.tolist()], dtype=float),
        labels=["" if labels[u] == DEFAULT_GROUP else labels[u] for u in unit_ids.tolist()],
        presence_ratio=column("presence_ratio"),
        rp_contamination=column("rp_contamination"),
        amplitude_cutoff=column("amplitude_cutoff"),
        l_ratio=column("l_ratio"),
        # A unit whose metrics are still being computed has no suggestion yet (an empty cell).
        suggested_labels=None if suggested is None else [
            suggested[u].label if u in suggested else "" for u in unit_ids.tolist()],
        suggested_reasons=None if suggested is None else [
            "; ".join(suggested[u].reasons) if u in suggested else METRICS_PENDING for u in unit_ids.tolist()],
        positions=np.array([shapes[u].position for u in unit_ids.tolist()], dtype=float).reshape(-1, 2),
        main_channels=np.array([shapes[u].main_channel for u in unit_ids.tolist()], dtype=np.int64),
    )


def ask_to_open_intact_actions(parent, error: JournalCorruptError) -> bool:
    """Ask whether to open the actions before the damage (True) or leave the journal as it is (False)."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Curation journal damaged", str(error), parent=parent)
    box.setObjectName("damaged_journal_dialog")
    box.setInformativeText(
        f"Open the first {error.intact_actions} actions and go on from there (the whole journal is kept "
        "in a curation-damaged folder beside it), or cancel and leave every file as it is."
    )
    open_button = box.addButton(f"Open the First {error.intact_actions} Actions", QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is open_button


def _load(journal_folder: Path, sorting, recording, context, keep_first: int | None = None):
    """Worker: open (or resume) the curation journaled in `journal_folder` and compute its metrics.

    A damaged journal is returned (not raised): the person decides what to open.
    """
    context.progress(0.1, "Replaying the curation journal")
    spike_units, labels = starting_units(sorting)
    try:
        curation, note = open_curation(
            journal_folder, spike_units, labels, min_new_unit_id=sorting.n_units, keep_first=keep_first
        )
    except JournalCorruptError as damaged:
        return damaged
    try:
        context.progress(0.5, "Measuring the units' templates")
        # The metrics are computed after the curation opens, in the background (CurationController._measure_metrics),
        # as the L-ratios are (_read_features): the table shows spike counts and rates meanwhile.
        metrics = MetricsCache(curation, sorting, *_duration_and_noise(sorting, recording), compute=False)
        shapes = unit_shapes(sorting, {u: curation.spikes_of(u) for u in curation.unit_ids.tolist()})
    except BaseException:
        curation.close()
        raise
    return _LoadedCuration(curation, metrics, shapes, note)


def _units(units) -> str:
    return ("unit " if len(units) == 1 else "units ") + ", ".join(map(str, units))


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _duration_and_noise(sorting, recording) -> tuple[float, np.ndarray | None]:
    if recording is not None:
        return recording.duration, getattr(recording, "noise_levels", None)
    # Without the data, the span of the spikes is the best estimate of the duration.
    last = sorting.spike_times[-1] + 1 if sorting.n_spikes else 1
    return float(last) / sorting.sampling_rate, None


class CurationController(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.engine = window.engine
        self.curation: Curation | None = None
        self.metrics: MetricsCache | None = None
        self.shapes: dict[int, UnitShape] = {}
        self.home: _CurationHome | None = None  # where `curation` lives
        # One opening runs at a time. `_wanted` is the one that should end up
        # installed; one finishing after it was superseded is closed, and then
        # the wanted one starts (so a scratch folder is never deleted under its job).
        self._wanted: _CurationHome | None = None
        self._in_flight: _CurationHome | None = None
        self._sorting = None  # the sorting the curation (being) opened is of
        self.busy: str | None = None  # what runs on the curation in a worker, if anything
        self._features_job = None  # app.jobs.Job reading the L-ratio features of the installed curation
        self._pending_features = None  # L-ratios measured while an action ran in a worker (applied after it)
        self._build_menu()
        self.aids = CurationAids(self)  # merge suggestions, suggested labels, SpikeInterface files
        self.session.sorting_changed.connect(self._on_sorting_changed)
        self.session.recording_changed.connect(self._on_sorting_changed)
        self.session.spikes_selected.connect(self._on_spikes_selected)
        window.saved.connect(self._on_session_saved)
        window.closed.connect(self._close)  # gives the folder's lock back

    # ---- menu ---------------------------------------------------------------------------------
    def _build_menu(self) -> None:
        menu = self.window.menuBar().addMenu("&Curation")
        self.menu = menu
        add = self._add_action
        self.merge_action = add(menu, "&Merge Selected Units", self.merge, "G")
        self.split_action = add(menu, "&Split Lasso Selection Off", self.split, "K")
        self.recluster_action = add(menu, "&Re-cluster Selected Unit…", self.ask_recluster)
        menu.addSeparator()
        self.label_actions = {
            group: add(menu, f"Label as &{group.upper() if group == 'mua' else group.capitalize()}",
                       lambda group=group: self.label(group), keys)
            for group, keys in LABEL_KEYS
        }
        menu.addSeparator()
        self.undo_action = add(menu, "&Undo", self.undo, "Ctrl+Z")
        self.redo_action = add(menu, "R&edo", self.redo, "Ctrl+Shift+Z")
        menu.addSeparator()
        self.next_action = add(menu, "&Next Unit", lambda: self.step(+1), "Space")
        self.previous_action = add(menu, "&Previous Unit", lambda: self.step(-1), "Shift+Space")
        menu.addSeparator()
        self.save_action = add(menu, "Sa&ve Curation", self.save, QKeySequence.StandardKey.Save)
        self._update_history_actions()

    @staticmethod
    def _add_action(menu, text: str, slot, shortcut=None):
        action = menu.addAction(text)
        action.triggered.connect(lambda _checked=False: slot())
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        return action

    def _update_history_actions(self) -> None:
        curation = self.curation
        undo = curation.undo_descriptions[-1] if curation is not None and curation.can_undo else ""
        redo = curation.redo_descriptions[0] if curation is not None and curation.can_redo else ""
        self.undo_action.setText(f"&Undo {undo}" if undo else "&Undo")
        self.redo_action.setText(f"R&edo {redo}" if redo else "R&edo")

    def say(self, text: str) -> None:
        self.window.status_label.setText(text)

    # ---- opening a curation when a sorting appears -------------------------------------------
    @property
    def phy_folder(self) -> Path | None:
        return self.home.phy_folder if self.home is not None else None

    @property
    def journal_folder(self) -> Path | None:
        return self.home.journal_folder if self.home is not None else None

    def _on_sorting_changed(self) -> None:
        sorting = self.session.sorting
        if sorting is self._sorting:
            return
        self._close()
        self._sorting = sorting
        if sorting is None:
            self._want(None)
            return
        phy_folder = sorting.phy_folder
        if phy_folder is not None:
            self._want(_CurationHome(sorting, journal_folder_of(phy_folder), Path(phy_folder), None))
        else:
            scratch = tempfile.TemporaryDirectory(prefix="sparsort-curation-")
            self._want(_CurationHome(sorting, Path(scratch.name), None, scratch))

    def _want(self, home: _CurationHome | None) -> None:
        self._wanted = home
        if home is not None:
            self.busy = "The curation is opening"
            if self._in_flight is None:
                self._start(home)

    def _start(self, home: _CurationHome) -> None:
        self._in_flight = home
        recording = self.session.recording
        self.engine.run_job(
            "Opening the curation",
            lambda context: _load(home.journal_folder, home.sorting, recording, context, home.keep_first),
            lambda loaded: self._loaded(home, loaded),
            lambda _error: self._loaded(home, None),
        )

    def _loaded(self, home: _CurationHome, loaded: _LoadedCuration | None) -> None:
        self._in_flight = None
        if home is not self._wanted:
            if loaded is not None:
                loaded.curation.close()
            if home.scratch is not None:
                home.scratch.cleanup()
            if self._wanted is not None:
                self._start(self._wanted)
            return
        if loaded is None:
            self.busy = "The curation could not be opened (see the error); open the sort again to curate it"
            return
        if isinstance(loaded, JournalCorruptError):
            if ask_to_open_intact_actions(self.window, loaded):
                self._want(replace(home, keep_first=loaded.intact_actions))
            else:
                self.busy = f"The curation was not opened: {loaded.path.name} is damaged at line {loaded.line}"
                self.say(f"{self.busy}; nothing was changed. Open the sort again to decide anew.")
            return
        self.busy = None
        self.home = home
        self.curation, self.metrics, self.shapes = loaded.curation, loaded.metrics, loaded.shapes
        self.session.set_curation(self.curation, self._unit_table())
        self._measure_metrics()
        self.aids.opened(self.curation, home.sorting, self.session.recording,
                         _duration_and_noise(home.sorting, self.session.recording)[0])
        self._read_features(home.sorting, self.session.recording)
        self._update_history_actions()
        where = "not saved yet: Ctrl+S saves it" if home.scratch is not None else f"journal in {home.journal_folder}"
        replayed = len(self.curation.undo_descriptions)
        history = f", {replayed} action{'' if replayed == 1 else 's'} replayed" if self.curation.can_undo else ""
        no_data = "; no raw data, so no waveforms, map or re-clustering" if self.session.recording is None else ""
        self.say(loaded.note or f"Curating {len(self.curation.unit_ids)} units ({where}{history}){no_data}")
        set_aside_loaded_objects()  # once now, instead of 45-50 ms pauses while clicking (app/collector.py)
        if home.then is not None:
            home.then()

    def _measure_metrics(self) -> None:
        """The metrics of the units the curation opened with, in a worker (1-2 s for 500 units of 2 M spikes,
        which the window waited for); the Units view shows them when they come."""
        metrics = self.metrics
        pending = metrics.pending
        if not pending:
            return
        measure = metrics.unit_metrics_of(pending)

        def done(computed) -> None:
            if metrics is not self.metrics or self.curation is None or sip.isdeleted(self.session):
                return  # this curation (or the window) has since gone
            metrics.fill(computed)
            if self.busy is None:  # else the action running in a worker publishes the table when it is done
                self.session.set_sorting(self.session.sorting, self._unit_table())

        self.engine.run_job("Computing unit metrics", lambda context: measure(context.should_stop), done,
                            lambda _error: None, background=True)

    def _read_features(self, sorting, recording) -> None:
        """Read the waveform features L-ratios are measured on, and measure them, in the background:
        at 384 channels the read took 17 s and the curation waited for it before it opened; the
        L-ratios of 500 units then took 6 s on the GUI thread."""
        if recording is None:
            return
        metrics = self.metrics
        # The worker's own copy: a unit's L-ratio depends only on its own spikes, and an id always
        # means the same spikes, so what it measures for these units stays true whatever is done meanwhile.
        units_now, unit_ids = self.curation.spike_clusters.copy(), self.curation.unit_ids.copy()

        def work(context):
            sample = feature_sample(sorting, for_views(recording), context)
            if sample is None:
                return None
            context.progress(0.9, "Measuring L-ratios")
            spikes, features = sample
            return sample, l_ratios(features, units_now[spikes], unit_ids)

        def done(result) -> None:
            if result is None or metrics is not self.metrics or self.curation is None or sip.isdeleted(self.session):
                return  # cancelled, or this curation (or the window) has since gone
            if self.busy is not None:
                # An action (re-clustering) is changing the curation in a worker: its new units have
                # no metrics until it is published, so the L-ratios wait for that.
                self._pending_features = (metrics, result)
                return
            self._take_features(result)

        self._features_job = self.engine.run_job(
            "Reading waveform features (L-ratio)", work, done, lambda _error: None, background=True,
        )

    def _take_features(self, result) -> None:
        """The L-ratios measured in the background go into the metrics; the Units view redraws them."""
        sample, known = result
        self.metrics.set_feature_sample(sample, known)
        self.session.set_sorting(self.session.sorting, self._unit_table())

    def _take_pending_features(self) -> None:
        pending, self._pending_features = self._pending_features, None
        if pending is None or self.curation is None or sip.isdeleted(self.session):
            return
        metrics, result = pending
        if metrics is self.metrics:  # still the curation they were measured for
            self._take_features(result)

    def _close(self) -> None:
        """Close the installed curation (its journal is complete on disk already)."""
        if self._features_job is not None:
            self._features_job.cancel()
            self._features_job = None
        self._pending_features = None
        if self.curation is not None:
            self.curation.close()
        self.aids.closed()
        if self.home is not None and self.home.scratch is not None:
            self.home.scratch.cleanup()
        self.curation, self.metrics, self.shapes, self.home = None, None, {}, None
        self.busy = None
        self._update_history_actions()

    # ---- doing actions ----------------------------------------------------------------------------
    def _ready(self) -> bool:
        """True when an action can run now; otherwise says why not."""
        if self.busy is not None:
            self.say(f"{self.busy}: wait a moment")
            return False
        if self.curation is None:
            self.say("Nothing to curate: sort the recording, or open a sort (File > Open Folder)")
            return False
        return True

    def _do(self, doing: str, action, select_added: bool = False) -> None:
        """Run `action(curation)` on the GUI thread and publish its record.

        `doing`: the action in words ("Merging 3, 4"), for the message when it fails.
        CurationError (an action that cannot be done) is said in the status bar. An
        OSError (disk full, read-only folder) is shown in a dialog too: the journal is
        written before the action is applied, so nothing changed, and the bar says so.
        """
        try:
            record = action(self.curation)
        except CurationError as error:
            self.say(str(error)[:1].upper() + str(error)[1:])
            return
        except OSError as error:
            where = self.journal_folder
            self.window.show_error(describe_error(error, doing=f"{doing} (writing the journal in {where})"))
            self.say(f"{doing} failed, nothing changed: the journal in {where} could not be written ({_reason(error)})")
            return
        self._publish(record, select_added)

    def _publish(self, record: ChangeRecord, select_added: bool = False) -> None:
        """After an action: metrics of the new units, the table, the session's signals, the status bar.

        `select_added`: select the units the action created (or an undo brought back), as phy does.
        """
        self.metrics.update(record)
        self.aids.followed(record)
        for unit in record.added:
            if unit not in self.shapes:
                self.shapes[unit] = unit_shape(self.session.sorting, self.curation.spikes_of(unit))
        selection = record.added if select_added and record.added else None
        self.session.set_curation(self.curation, self._unit_table(), record, selection)
        self._update_history_actions()
        self.say(record.description)

    def _unit_table(self) -> UnitTable:
        metrics = self.metrics.metrics
        pending = set(self.metrics.pending)
        # Rules on a pending unit's placeholders (nan passes every rule) would suggest "good" for all of them.
        suggested = self.aids.suggested_labels({u: m for u, m in metrics.items() if u not in pending})
        return curated_unit_table(self.curation, metrics, self.shapes, suggested)

    def _run(self, title: str, work, on_done) -> None:
        """Run `work(context)` in a worker while other actions wait; `on_done(result)` on the GUI thread."""
        self.busy = title

        def finished(result) -> None:
            release()
            on_done(result)
            self._take_pending_features()

        def failed(_error) -> None:
            release()
            self._take_pending_features()

        def release() -> None:
            if self.busy == title:  # not if the curation was replaced meanwhile and is opening
                self.busy = None

        self.engine.run_job(title, work, finished, failed)

    # ---- the actions ----------------------------------------------------------------------------
    def merge(self) -> None:
        if not self._ready():
            return
        units = self.session.selected_units
        if len(units) < 2:
            self.say("Select two or more units to merge (Ctrl+click in the Units table), then press G")
            return
        self._do(f"Merging {_units(units)}", lambda curation: curation.merge(units), select_added=True)

    def split(self) -> None:
        if not self._ready():
            return
        selection = self.session.selected_spikes
        if selection is None or len(selection.spikes) == 0:
            self.say("Draw a lasso around spikes (Embedding or Amplitudes view), then press K to split them off")
            return
        if selection.complete is None:
            self._do("Splitting the lasso off", lambda curation: curation.split(selection.spikes), select_added=True)
            return

        curation = self.curation

        def work(context):
            try:
                return selection.complete(
                    lambda fraction: context.progress(fraction, "Extending the lasso"), context.should_stop
                )
            except Cancelled:  # the window is closing
                return None

        def done(spikes) -> None:
            if spikes is not None and curation is self.curation:
                self._do("Splitting the lasso off", lambda curation: curation.split(spikes), select_added=True)

        self._run("Extending the lasso to the spikes the map did not show", work, done)

    def label(self, group: str) -> None:
        if not self._ready():
            return
        units = self.session.selected_units
        if not units:
            self.say(f"Select the units to label as {group} first")
            return
        self._do(f"Labelling {_units(units)} as {group}", lambda curation: curation.label(units, group))

    def undo(self) -> None:
        if not self._ready():
            return
        if not self.curation.can_undo:
            self.say("Nothing to undo")
            return
        self._do("Undoing", lambda curation: curation.undo(), select_added=True)

    def redo(self) -> None:
        if not self._ready():
            return
        if not self.curation.can_redo:
            self.say("Nothing to redo")
            return
        self._do("Redoing", lambda curation: curation.redo(), select_added=True)

    def step(self, direction: int) -> None:
        """Select the next (+1) or previous (-1) unit, in the Units table's current order."""
        table = self.session.unit_table
        if table is None or len(table.unit_ids) == 0:
            self.say("No units to step through")
            return
        order = self._units_in_table_order()
        selected = [u for u in self.session.selected_units if u in order]
        if not selected:
            position = 0 if direction > 0 else len(order) - 1
        else:
            anchor = selected[-1] if direction > 0 else selected[0]
            position = order.index(anchor) + direction
        if not 0 <= position < len(order):
            self.say("That was the last unit" if direction > 0 else "That was the first unit")
            return
        self.session.select_units([order[position]])

    def _units_in_table_order(self) -> list[int]:
        units_view = self.window.views.get("units")
        if units_view is None:
            return [int(u) for u in self.session.unit_table.unit_ids]
        # The Units view sorts through a proxy: its row order is what the person sees.
        proxy = units_view.proxy
        rows = [proxy.mapToSource(proxy.index(row, 0)).row() for row in range(proxy.rowCount())]
        return [units_view.model.unit_at(row) for row in rows]

    def ask_recluster(self) -> None:
        if not self._ready():
            return
        units = self.session.selected_units
        if len(units) != 1:
            self.say("Select exactly one unit to re-cluster")
            return
        if self.session.recording is None:
            self.say("Re-clustering reads the unit's waveforms, and this sort was opened without its raw data")
            return
        unit = units[0]
        dialog = QInputDialog(self.window)
        dialog.setObjectName("recluster_dialog")
        dialog.setWindowTitle("Re-cluster")
        dialog.setLabelText(f"Split unit {unit} into how many units (k-means on its waveform features)?")
        dialog.setInputMode(QInputDialog.InputMode.IntInput)
        dialog.setIntRange(2, min(RECLUSTER_MAX_K, max(self.curation.spike_count(unit), 2)))
        dialog.setIntValue(2)
        dialog.intValueSelected.connect(lambda k: self.recluster(unit, k))
        dialog.open()

    def recluster(self, unit: int, k: int) -> None:
        """Split `unit` into `k` by k-means on its spikes' waveform features (read in a worker)."""
        if not self._ready():
            return
        curation, sorting, recording = self.curation, self.session.sorting, for_views(self.session.recording)
        if unit not in set(curation.unit_ids.tolist()):
            self.say(f"Unit {unit} no longer exists")
            return

        def work(context):
            try:
                features = SpikeFeatureExtractor().fit_transform(
                    recording, sorting, curation.spikes_of(unit),
                    lambda fraction: context.progress(0.8 * fraction, "Reading waveforms"), context.should_stop,
                )
            except Cancelled:  # the window is closing
                return None
            context.progress(0.8, "k-means")
            # Only this worker changes the curation meanwhile: every other action waits on `busy`.
            try:
                return curation.recluster(unit, k, features)
            except CurationError as error:
                return str(error)

        def done(result) -> None:
            if isinstance(result, str):
                self.say(result)
            elif result is not None and curation is self.curation:
                self._publish(result, select_added=True)

        self._run(f"Re-clustering unit {unit}", work, done)

    # ---- saving -----------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the curation into the sort's phy folder; a sort without a folder is saved as a session."""
        if not self._ready():
            return
        if self.phy_folder is None:
            self.say("This sort has no folder yet: choose one to save the session and its curation in")
            self.window.choose_session_folder()
            return
        curation, folder = self.curation, self.phy_folder
        metrics = self.metrics.metrics
        # Saved right after opening, some units' metrics may still be on their way: measured here instead.
        measure_pending = self.metrics.unit_metrics_of(self.metrics.pending)
        peak_amplitudes = {unit: shape.peak_to_peak for unit, shape in self.shapes.items()}
        suggested_labels = self.aids.suggested_labels
        files = "spike_clusters.npy, cluster_group.tsv, cluster_info.tsv"
        saved = f"Saved {len(curation.unit_ids)} units into {folder} ({files})"

        def work(_context):
            whole = dict(metrics)
            whole.update({unit: replace(m, l_ratio=metrics[unit].l_ratio) for unit, m in measure_pending().items()})
            columns = {**metrics_to_phy_columns(whole, peak_amplitudes), **suggested_label_column(suggested_labels(whole))}
            return curation.save_phy(folder, columns)

        self._run("Saving the curation", work, lambda _: self.say(saved))

    def _on_session_saved(self, folder: str) -> None:
        """The session was written to `folder`: the curation moves there (if it was elsewhere) and is saved into it."""
        sorting = self.session.sorting
        if sorting is None or sorting is not self._sorting:
            return
        folder = Path(folder).resolve()
        moved = _CurationHome(sorting, folder, folder / SORTING_FOLDER, None, then=self.save)
        if self.curation is None:
            # Still opening, so nothing was done yet: open it in its new home instead.
            self._want(moved)
            return
        if self.journal_folder.resolve() == folder:
            self.home = moved
            self.save()
            return
        # The session's sort was written afresh there; the journal replays on top of it.
        self.curation.close()
        try:
            copy_journal(self.journal_folder, folder)
        except OSError as error:
            # The journal is whole where it was: reopen it there, so nothing is lost and Save can be tried again.
            here = self.home
            self.curation = None
            self.window.show_error(describe_error(error, doing=f"Moving the curation into {folder}"))
            self._want(_CurationHome(here.sorting, here.journal_folder, here.phy_folder, here.scratch))
            self.say(f"The curation was not moved into {folder} ({_reason(error)}); it is kept, not saved yet")
            return
        self._close()
        self._want(moved)

    def _on_spikes_selected(self, selection) -> None:
        if selection is not None and len(selection.spikes):
            units = ", ".join(map(str, selection.units))
            self.say(f"{len(selection.spikes):,} spikes of {units} in the lasso: K splits them off")
