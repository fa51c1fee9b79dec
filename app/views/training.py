"""Training: hyperparameters, Start / Pause / Resume / Stop, progress, loss curve.

The form is checked by the engine's own `TrainingConfig.validate()`, so the
GUI and the CLI refuse exactly the same values with the same message; while
a value is impossible the field is marked and Start stays disabled.

TrainingConfig lives beside the trainer, which imports torch (1.5-3 s): the form
is filled only once there is something to train on (`load_settings`), so a sort
opened for curation never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from app.state import TrainingState
from app.views.base import View

if TYPE_CHECKING:
    from engine.pipeline.training import TrainingConfig

# (config field, label, parse function, tooltip). An empty n_filters or n_taps means the default rule.
FIELDS = (
    ("n_filters", "Filters", int, "How many spike shapes to start from (pruned to the neurons found). Leave empty for 8 per channel."),
    ("n_taps", "Taps", int, "Filter length in samples. Leave empty for 4 ms."),
    ("n_iterations", "Unrolled steps T", int, "FISTA iterations in the encoder."),
    ("lambda_scale", "λ scale", float, "Sparsity: multiplies the universal threshold σ√(2 log N)."),
    ("learning_rate", "Learning rate", float, "Only for the gradient update (sparsort sort --dictionary-update gradient): the relative Adam step. "
                   "The default update sets each filter to its least-squares shape and has no step size."),
    ("batch_size", "Batch", int, "Windows per optimiser step."),
    ("window_ms", "Window (ms)", float, "Length of each training window."),
    ("n_epochs", "Epochs", float, "Passes over the training data, at most."),
    ("settle_tolerance", "Settle at", float, "Training ends sooner once the filters' shapes are known to within this "
                         "standard error (mean over the filters; distinct neurons differ by 0.1 or more). 0 runs every epoch."),
)
DEVICES = ("auto", "cpu", "cuda", "mps")
# (TrainingConfig.init value, what the Start-from box shows)
INIT_CHOICES = (("data", "data (k-means of spikes)"), ("random", "random (noise)"))
# (the CLI's word for a TrainingConfig.whiten value, what the Whitening box shows): the box holds the
# words (engine.pipeline.training.WHITEN_WORDS), as it cannot tell an item holding None from one holding nothing.
WHITEN_CHOICES = (("auto", "automatic"), ("on", "on"), ("off", "off"))
# (TrainingConfig.motion, what the Motion correction box shows)
MOTION_CHOICES = (("off", "off"), ("rigid", "rigid"), ("nonrigid", "non-rigid"))
# What an empty optional field means, shown greyed in the empty field.
OPTIONAL_FIELDS = {"n_filters": "8 per channel (4 from noise)", "n_taps": "4 ms"}
CURVE_AXIS_WIDTH_PX = 64
CURVES_MIN_HEIGHT_PX = 240
# Written by `sparsort sort` into its phy folders: a folder without it was sorted by another tool.
SPARSORT_SORT_MARKER = "sparsort.json"


def foreign_sort_folder(sorting) -> Path | None:
    """The phy folder `sorting` was read from when another sorter wrote it (Kilosort, SpikeInterface, ...), else None.

    Sparsort's own sorts are those `sparsort sort` wrote (with its summary) and those
    saved in a session folder (the phy folder inside it).
    """
    from engine.io.session_folder import is_session_folder

    folder = sorting.phy_folder if sorting is not None else None
    if folder is None:
        return None
    folder = Path(folder)
    if (folder / SPARSORT_SORT_MARKER).is_file() or is_session_folder(folder.parent):
        return None
    return folder


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _format_duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class TrainingView(View):
    name = "training"
    title = "Training"
    default_area = Qt.DockWidgetArea.LeftDockWidgetArea

    def build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.fields: dict[str, QLineEdit] = {}
        self._settings_loaded = False  # the defaults are in the form (load_settings)
        self._config_valid = False
        for attr, label, _parse, tooltip in FIELDS:
            edit = QLineEdit()
            edit.setObjectName(f"{attr}_field")
            edit.setToolTip(tooltip)
            if attr in OPTIONAL_FIELDS:
                edit.setPlaceholderText(OPTIONAL_FIELDS[attr])
            edit.textChanged.connect(self._on_form_edited)
            form.addRow(label, edit)
            self.fields[attr] = edit
        self.init_box = QComboBox(objectName="init_box")
        for value, text in INIT_CHOICES:
            self.init_box.addItem(text, value)
        self.init_box.setToolTip("Where the filters start: shapes clustered from threshold crossings, "
                                 "or noise, from which training learns the spike shapes.")
        self.init_box.currentIndexChanged.connect(self._on_form_edited)
        form.addRow("Start from", self.init_box)
        self.whiten_box = QComboBox(objectName="whiten_box")
        for word, text in WHITEN_CHOICES:
            self.whiten_box.addItem(text, word)
        from engine.pipeline.whitening import AUTOMATIC_RULE

        self.whiten_box.setToolTip("Decorrelate the channels before sorting, as Kilosort does: on probes it sorts "
                                   "small neurons beside big ones better, and faster. Automatic: "
                                   f"{AUTOMATIC_RULE}. The views and the saved sort stay in the recording's µV.")
        self.whiten_box.currentIndexChanged.connect(self._on_form_edited)
        form.addRow("Whitening", self.whiten_box)
        self.motion_box = QComboBox(objectName="motion_box")
        for word, text in MOTION_CHOICES:
            self.motion_box.addItem(text, word)
        self.motion_box.setToolTip("Follow the probe's drift in the brain from where the spikes are, and undo it "
                                   "before sorting (SpikeInterface's motion correction, the formats extra): rigid "
                                   "moves the whole probe, non-rigid each depth apart. For long probe recordings "
                                   "that drift; off by default.")
        self.motion_box.currentIndexChanged.connect(self._on_form_edited)
        form.addRow("Motion correction", self.motion_box)
        self.device_box = QComboBox()
        self.device_box.addItems(DEVICES)
        self.device_box.currentTextChanged.connect(self._on_form_edited)
        form.addRow("Device", self.device_box)
        layout.addLayout(form)

        self.message = QLabel(objectName="config_message", wordWrap=True)
        layout.addWidget(self.message)
        # What Start would do to the sort on screen, when there is one (see _why_start_is_off).
        self.start_note = QLabel(objectName="start_note", wordWrap=True)
        self.start_note.setVisible(False)
        layout.addWidget(self.start_note)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start", objectName="start_button", clicked=self._on_start)
        self.pause_button = QPushButton("Pause", objectName="pause_button", clicked=self.engine.pause_training)
        self.resume_button = QPushButton("Resume", objectName="resume_button", clicked=self.engine.resume_training)
        self.stop_button = QPushButton("Stop", objectName="stop_button", clicked=self.engine.stop_training)
        for button in (self.start_button, self.pause_button, self.resume_button, self.stop_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)

        self.progress = QProgressBar(maximum=1000, textVisible=True)
        self.progress.setFormat("Not started")
        layout.addWidget(self.progress)
        self.device_label = QLabel(objectName="device_label", wordWrap=True)
        layout.addWidget(self.device_label)

        curves = pg.GraphicsLayoutWidget()
        self.loss_plot = curves.addPlot(row=0, col=0)
        self.loss_plot.setLabel("left", "error (MSE)")
        self.loss_plot.setLogMode(y=True)
        legend = self.loss_plot.addLegend(offset=(-4, 4), labelTextSize="8pt")
        # The batch's error jumps with the windows drawn; the held-out windows are the same
        # every time, so their curve moves only when the model learns.
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen("#ffb347", width=1), name="batch")
        self.heldout_curve = self.loss_plot.plot(pen=pg.mkPen("#ff6f3c", width=3), name="held-out windows")
        legend.setBrush(pg.mkBrush(0, 0, 0, 120))
        self.change_plot = curves.addPlot(row=1, col=0)
        self.change_plot.setLabel("left", "Δ filters")
        self.change_plot.setXLink(self.loss_plot)
        self.change_curve = self.change_plot.plot(pen=pg.mkPen("#7fc8ff", width=2))
        # Shown only for a simulation whose true shapes are known (the demo): how far the
        # filters are from them (engine/evaluation/scoring.py dictionary_error).
        self.truth_plot = curves.addPlot(row=2, col=0)
        self.truth_plot.setLabel("left", "error to truth")
        self.truth_plot.setXLink(self.loss_plot)
        self.truth_plot.setYRange(0.0, 1.0, padding=0.02)
        self.truth_curve = self.truth_plot.plot(pen=pg.mkPen("#8fd694", width=2), symbol="o", symbolSize=4,
                                                symbolBrush="#8fd694", symbolPen=None)
        self._truth_shown: bool | None = None  # set by _show_step_axis
        self._curve_plots = (self.loss_plot, self.change_plot, self.truth_plot)
        self._fitted_steps: int | None = None  # the step axis spans this many steps
        for plot in self._curve_plots:
            plot.showGrid(x=True, y=True, alpha=0.2)
            left = plot.getAxis("left")
            # "(x0.001)" prefixes on a loss axis confuse more than they help.
            left.enableAutoSIPrefix(False)
            # One width for both, wide enough for the label beside ticks like "0.001".
            left.setWidth(CURVE_AXIS_WIDTH_PX)
        self._show_step_axis(truth_shown=False)
        curves.setMinimumHeight(CURVES_MIN_HEIGHT_PX)
        layout.addWidget(curves, 1)

        self.engine.progress.connect(self._on_engine_progress)
        self.message.setText("The settings' defaults appear when a recording is opened, or when a field is edited.")
        self._update_buttons()

    # ---- the form ------------------------------------------------------------------------
    def load_settings(self) -> None:
        """Fill the form with the defaults (fields already typed in are kept) and check it.

        Called when a recording to sort is opened, when a config comes from outside (a session,
        the launcher), and when the person edits the form or presses Start: never while curating
        a sort, unless the person turns to training.
        """
        if self._settings_loaded:
            return
        if self.session.training_config is not None:
            # Given while this view was hidden (the launcher's flags): the form shows it, not the defaults.
            self._show_config(self.session.training_config)
            self._on_form_edited()
            return
        from engine.pipeline.training import TrainingConfig

        defaults = TrainingConfig()
        self._settings_loaded = True
        for attr, edit in self.fields.items():
            value = getattr(defaults, attr)
            if not edit.text():
                edit.blockSignals(True)  # one check once all are filled, not one per field
                edit.setText("" if value is None else f"{value:g}")
                edit.blockSignals(False)
        self._on_form_edited()

    def config(self) -> TrainingConfig:
        """The config the form describes; raises ConfigError naming the bad field."""
        from engine.pipeline.training import ConfigError, TrainingConfig

        self.load_settings()
        values = {}
        base = self.session.training_config or TrainingConfig()
        for attr, label, parse, _tooltip in FIELDS:
            text = self.fields[attr].text().strip()
            if not text and attr in OPTIONAL_FIELDS:
                values[attr] = None
                continue
            try:
                values[attr] = parse(text)
            except ValueError:
                kind = "a whole number" if parse is int else "a number"
                raise ConfigError(f"{attr} must be {kind}, got {text!r}") from None
        config = TrainingConfig.from_dict({**base.to_dict(), **values, "device": self.device_box.currentText(),
                                           "init": self.init_box.currentData(), "whiten": self._whiten(),
                                           "motion": self.motion_box.currentData()})
        config.validate()
        return config

    def _on_form_edited(self, *_args) -> None:
        if not self._settings_loaded:
            self.load_settings()  # the person turned to the form: the rest of it gets its defaults
            return
        from engine.pipeline.training import ConfigError

        for edit in self.fields.values():
            self._mark(edit, False)
        try:
            config = self.config()
        except ConfigError as error:
            self.message.setText(str(error))
            bad_field = str(error).split(" ", 1)[0]
            if bad_field in self.fields:
                self._mark(self.fields[bad_field], True)
            self._config_valid = False
        else:
            self.message.setText("")
            self._config_valid = True
            if config != self.session.training_config:
                self.session.set_training_config(config)
        self._update_buttons()

    @staticmethod
    def _mark(edit: QLineEdit, invalid: bool) -> None:
        if edit.property("invalid") != invalid:
            edit.setProperty("invalid", invalid)
            edit.style().unpolish(edit)
            edit.style().polish(edit)

    def _show_config(self, config: TrainingConfig) -> None:
        # A config given from outside (a session, the launcher) fills every field: no defaults to load.
        self._settings_loaded = True
        for attr, _label, _parse, _tooltip in FIELDS:
            value = getattr(config, attr)
            text = "" if value is None else f"{value:g}"
            if self.fields[attr].text() != text:
                self.fields[attr].setText(text)
        self.device_box.setCurrentText(config.device)
        self.init_box.setCurrentIndex(max(self.init_box.findData(config.init), 0))
        from engine.pipeline.training import WHITEN_WORDS

        word = next(word for word, value in WHITEN_WORDS.items() if value is config.whiten)
        self.whiten_box.setCurrentIndex(self.whiten_box.findData(word))
        self.motion_box.setCurrentIndex(max(self.motion_box.findData(config.motion), 0))

    def _whiten(self) -> bool | None:
        """The Whitening box's choice as TrainingConfig.whiten: None (automatic), True or False."""
        from engine.pipeline.training import WHITEN_WORDS

        return WHITEN_WORDS[self.whiten_box.currentData()]

    def _on_start(self) -> None:
        from engine.pipeline.training import ConfigError

        try:
            config = self.config()
        except ConfigError as error:
            self.message.setText(str(error))
            return
        if self.session.sorting is not None:
            self._confirm_retraining(config)
            return
        self._start(config)

    def _confirm_retraining(self, config: TrainingConfig) -> None:
        """Training sorts afresh: say what becomes of the sort and curation on screen before doing it."""
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Train a new model?",
            "Training learns a new model and sorts the recording again: the new sort replaces "
            f"the {self.session.sorting.n_units} units on screen.",
            QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setObjectName("retrain_dialog")
        box.setInformativeText(self._what_happens_to_the_curation())
        train = box.addButton("Train and sort again", QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def on_clicked(button) -> None:
            if button is train:
                self._start(config)

        box.buttonClicked.connect(on_clicked)
        box.open()

    def _what_happens_to_the_curation(self) -> str:
        folder = self.session.sorting.phy_folder
        if folder is not None:
            return (
                f"The curation saved in {folder} is left untouched: open that folder again to go on curating it."
            )
        return "This sort and its curation are not saved yet: cancel and save the session first (Ctrl+S) to keep them."

    def _start(self, config: TrainingConfig) -> None:
        self.progress.setValue(0)
        self.progress.setFormat("Preparing…")
        self.engine.start_training(config)

    # ---- state -----------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        state = self.session.training_state
        has_recording = self.session.recording is not None
        why_not = self._why_start_is_off()
        self.start_note.setText(why_not)
        self.start_note.setVisible(bool(why_not))
        # Before the form is loaded (a sort opened for curation) Start loads it and checks it when pressed.
        valid = self._config_valid or not self._settings_loaded
        self.start_button.setEnabled(state == TrainingState.IDLE and has_recording and valid and not why_not)
        self.pause_button.setEnabled(state == TrainingState.TRAINING)
        self.resume_button.setEnabled(state == TrainingState.PAUSED)
        self.stop_button.setEnabled(state in (TrainingState.STARTING, TrainingState.TRAINING, TrainingState.PAUSED))
        editable = state == TrainingState.IDLE
        for edit in self.fields.values():
            edit.setReadOnly(not editable)
        self.device_box.setEnabled(editable)
        self.init_box.setEnabled(editable)
        self.whiten_box.setEnabled(editable)

    def _why_start_is_off(self) -> str:
        """Why Start cannot be pressed for what is open, or "" (nothing to explain)."""
        sorting = self.session.sorting
        foreign = foreign_sort_folder(sorting)
        if foreign is not None:
            # Sorting its recording afresh here would only hide the sort the person came to curate.
            return (
                f"Curating {foreign.name}, sorted by another tool: Start is off so the sort stays on screen. "
                "To sort its recording with Sparsort, open the recording itself (File > Open Recording)."
            )
        if sorting is not None and self.session.recording is None:
            return "This sort was opened without its recording: there is nothing to train on."
        return ""

    def _show_device(self) -> None:
        trainer = self.session.trainer
        if trainer is not None:
            self.device_label.setText(f"Device: {trainer.device_name}")
        else:
            self.device_label.setText(f"Device: {self.device_box.currentText()} (chosen when training starts)")

    def refresh(self) -> None:
        if self.session.training_config is not None:
            self._show_config(self.session.training_config)
        self._fit_steps_axis()
        self._draw_curves()
        self._show_device()
        self._update_buttons()
        self._show_idle_progress()

    def _draw_curves(self) -> None:
        snapshots = self.session.snapshots
        trainer = self.session.trainer
        if snapshots:
            steps = np.array([s.step for s in snapshots], dtype=float)
            losses = np.array([s.loss for s in snapshots], dtype=float)
            changes = np.array([s.filter_change for s in snapshots], dtype=float)
        elif trainer is not None and trainer.trainer is not None and trainer.trainer.loss_history:
            # A model restored from a checkpoint: its history, without a live run.
            losses = np.asarray(trainer.trainer.loss_history, dtype=float)
            changes = np.asarray(trainer.trainer.filter_change_history, dtype=float)
            steps = np.arange(1, len(losses) + 1, dtype=float)
        else:
            steps = losses = changes = np.zeros(0)
        self.loss_curve.setData(steps, np.maximum(losses, 1e-12))
        self.change_curve.setData(steps[: len(changes)], changes)
        heldout, truth = self._measured_curves(snapshots, trainer)
        self.heldout_curve.setData(heldout[0], np.maximum(heldout[1], 1e-12))
        self.truth_curve.setData(*truth)
        self._show_step_axis(truth_shown=len(truth[0]) > 0)

    @staticmethod
    def _measured_curves(snapshots, trainer) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """((steps, held-out error), (steps, dictionary error)): measured at most once a second, so
        one point per measure."""
        if snapshots:
            heldout = {s.step: s.heldout_loss for s in snapshots if np.isfinite(s.heldout_loss)}
            truth = {s.step: s.dictionary_error for s in snapshots if s.dictionary_error is not None}
        elif trainer is not None and trainer.trainer is not None:
            heldout = dict(trainer.trainer.heldout_history)
            truth = dict(trainer.trainer.dictionary_error_history)
        else:
            heldout, truth = {}, {}

        def as_arrays(points: dict) -> tuple[np.ndarray, np.ndarray]:
            values = np.array(list(points.values()), dtype=float)
            steps = np.array(list(points.keys()), dtype=float)
            # A value repeats until the next measure: keep the first step of each.
            first = np.r_[True, np.diff(values) != 0] if len(values) else np.zeros(0, dtype=bool)
            return steps[first], values[first]

        return as_arrays(heldout), as_arrays(truth)

    def _show_step_axis(self, truth_shown: bool) -> None:
        """The step axis is shared: shown once, under the lowest plot, so an upper plot's
        tick labels cannot run into the lower one's axis label."""
        if truth_shown == self._truth_shown:
            return
        self._truth_shown = truth_shown
        self.truth_plot.setVisible(truth_shown)
        lowest = self.truth_plot if truth_shown else self.change_plot
        for plot in self._curve_plots:
            if plot is lowest:
                plot.showAxis("bottom")
                plot.setLabel("bottom", "step")
            else:
                plot.hideAxis("bottom")

    def _show_progress(self, snapshot) -> None:
        self.progress.setValue(int(1000 * snapshot.step / max(snapshot.n_steps, 1)))
        state = self.session.training_state
        if state == TrainingState.PAUSED:
            suffix = "paused"
        elif snapshot.step >= snapshot.n_steps:
            suffix = f"done in {_format_duration(snapshot.elapsed_s)}"
        else:
            suffix = f"{_format_duration(snapshot.eta_s)} left"
        self.progress.setFormat(f"Step {snapshot.step} / {snapshot.n_steps} — {suffix}")

    # ---- session events -------------------------------------------------------------------
    def on_recording_changed(self) -> None:
        self.refresh()

    def on_trainer_changed(self) -> None:
        self._show_device()
        self._fit_steps_axis()
        self._draw_curves()

    def _fit_steps_axis(self) -> None:
        # The whole run from the start: the curves fill in from left to right, and the
        # step axis is not re-laid out (and repainted) with every snapshot.
        trainer = self.session.trainer
        if trainer is not None and trainer.trainer is not None:
            self._fitted_steps = trainer.trainer.n_steps
            self.loss_plot.setXRange(0, max(self._fitted_steps, 1), padding=0.02)

    def on_training_snapshot(self, snapshot) -> None:
        if self._fitted_steps is not None and snapshot.n_steps != self._fitted_steps:
            self._fit_steps_axis()  # training settled before its planned end: the run is shorter
        self._draw_curves()
        self._show_progress(snapshot)

    def on_training_state_changed(self, state: TrainingState) -> None:
        self._update_buttons()
        snapshot = self.session.latest_snapshot
        if state == TrainingState.PAUSED and snapshot is not None:
            self._show_progress(snapshot)
        elif state == TrainingState.SORTING:
            self.progress.setValue(0)
            self.progress.setFormat("Sorting the whole recording… %p%")
        elif state == TrainingState.IDLE:
            self._show_idle_progress()

    def _show_idle_progress(self) -> None:
        """The bar between runs: the sort on screen (its current, curated units), the last run, or nothing yet."""
        sorting, table = self.session.sorting, self.session.unit_table
        snapshot = self.session.latest_snapshot
        if self.session.training_state != TrainingState.IDLE:
            if snapshot is not None:
                self._show_progress(snapshot)
        elif sorting is not None:
            n_units = len(table.unit_ids) if table is not None else sorting.n_units
            self.progress.setValue(1000)
            self.progress.setFormat(f"Sorted: {_count(n_units, 'unit')}, {_count(sorting.n_spikes, 'spike')}")
        elif snapshot is not None:
            self._show_progress(snapshot)
        else:
            self.progress.setValue(0)
            self.progress.setFormat("Not started")

    def on_sorting_changed(self) -> None:
        # A merge or split changes the unit count; a sort opened or dropped changes what Start means.
        self._update_buttons()
        self._show_idle_progress()

    def on_training_config_changed(self, config) -> None:
        self._show_config(config)
        self._show_device()

    def _on_engine_progress(self, title: str, fraction: float) -> None:
        if self.session.training_state == TrainingState.SORTING and fraction >= 0:
            self.progress.setValue(int(fraction * 1000))
