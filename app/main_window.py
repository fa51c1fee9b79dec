"""The main window: one dock per view, menus, the status bar, opening and saving.

The window owns the Session (what is loaded and selected) and the
EngineBridge (the worker threads); views get both and otherwise know nothing
of each other. Layout (which docks are where, open or closed) is saved in
QSettings when the window closes and restored when it opens.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QByteArray, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow

from app import opening
from app.curation_controller import CurationController
from app.dialogs import RawParametersDialog, SaveFolderDialog
from app.engine_bridge import EngineBridge
from app.errors import WorkError, describe_error, show_error
from app.job_progress import JobProgress
from app.settings import app_settings, recent_files, remember_recent_file
from app.state import RecordingSource, Session, TrainingState
from app.theme import configure_plots
from app.views import view_classes
from app.warm_up import start_warm_up
from engine.io.file_check import check_recording_file
from engine.io.formats import recording_format
from engine.io.recording import RecordingError

# Bump when the default dock arrangement changes, so old saved layouts are not applied to it.
LAYOUT_VERSION = 3  # 3: the Firing rate and Features docks
# Two layouts, each remembered on its own: one while a recording is sorted (or a session with its
# model is open), one while another tool's sort is curated without a model (`curation`).
SORTING_LAYOUT, CURATION_LAYOUT = "sorting", "curation"
LAYOUT_KEYS = {SORTING_LAYOUT: "window/state", CURATION_LAYOUT: "window/state_curation"}
# Curating without a model, the docks that serve training go behind a curation view, a click away:
# (dock sent back, dock it becomes a tab of, which stays in front). At 1920 x 1200 Training and the
# empty Codes plot took a third of the window, the Probe was a tab and Waveforms had ~250 px.
CURATION_TABS = (("training", "probe"), ("codes", "amplitudes"), ("filters", "waveforms"))
CLOSE_RETRY_MS = 200
RECORDING_FILTER = (
    "Recordings (*.bin *.dat *.raw *.npy *.meta structure.oebin *.nwb *.rhd *.rhs *.ns5 *.ns6 *.plx *.pl2 *.ncs *.smrx);;"
    "SpikeGLX (*.meta *.bin);;Open Ephys (structure.oebin);;NWB (*.nwb);;All files (*)"
)


# Relative sizes of the docks that share a row or a column in the default layout.
DOCK_WEIGHTS = (
    (Qt.Orientation.Horizontal, {"codes": 3, "amplitudes": 2}),
    (Qt.Orientation.Vertical, {"codes": 3, "correlograms": 2}),
    (Qt.Orientation.Vertical, {"filters": 4, "units": 4, "similarity": 3, "waveforms": 5}),
)
# The curation layout's, where Codes and Filters are tabs: without these, Firing rate under
# Amplitudes was a 20 px title bar.
CURATION_DOCK_WEIGHTS = (
    (Qt.Orientation.Vertical, {"amplitudes": 2, "firing_rate": 2, "correlograms": 4}),
    (Qt.Orientation.Vertical, {"units": 4, "similarity": 3, "waveforms": 6}),
)


class MainWindow(QMainWindow):
    opened = pyqtSignal(str)  # a file or folder finished opening (its path)
    open_failed = pyqtSignal(object)  # WorkError of an open that failed (the session is unchanged)
    saved = pyqtSignal(str)  # a session was saved (its folder)
    closed = pyqtSignal()  # the window closed, its workers stopped

    def __init__(self) -> None:
        super().__init__()
        configure_plots()
        self.setObjectName("main_window")
        self.setWindowTitle("Sparsort")
        self.resize(1500, 920)
        self.session = Session(self)
        self.engine = EngineBridge(self.session, self)
        self.engine.error.connect(self.show_error)
        self.engine.progress.connect(self._on_progress)
        self.engine.notice.connect(self._on_notice)
        self.views = {}  # view name -> View
        self.docks = {}  # view name -> QDockWidget
        self.layout_mode = SORTING_LAYOUT
        self._build_docks()
        self._default_layouts = {SORTING_LAYOUT: self.saveState(LAYOUT_VERSION)}
        self._default_layouts[CURATION_LAYOUT] = self._curation_default_layout()
        self.restoreState(self._default_layouts[SORTING_LAYOUT], LAYOUT_VERSION)
        self._build_menus()
        self._build_status_bar()
        self.curation_controller = CurationController(self)
        self._restore_layout()
        self.session.training_state_changed.connect(self._on_training_state_changed)
        self.views["traces"].window_drawn.connect(self._warm_up_for_training)

    def _warm_up_for_training(self) -> None:
        # With a recording on screen, Train is the next step: load what training imports on first use
        # now (app/warm_up.py). Every later draw calls this too; only the first starts anything.
        start_warm_up()

    # ---- docks -------------------------------------------------------------------------
    def _build_docks(self) -> None:
        self.setDockNestingEnabled(True)
        # The left and right columns run the full height, so the top and bottom
        # areas form a wide middle column for the time-based views.
        for corner, area in (
            (Qt.Corner.TopLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea),
            (Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea),
            (Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea),
            (Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea),
        ):
            self.setCorner(corner, area)
        for view_class in view_classes():
            view = view_class(self.session, self.engine)
            dock = QDockWidget(view_class.title, self)
            dock.setObjectName(f"{view_class.name}_dock")
            dock.setWidget(view)
            # A bound method of the view, not a lambda holding it: when the garbage collector broke the
            # window's reference cycles it cleared such a lambda's defaults first, and each dock hidden as
            # the window was then destroyed called it as "() missing 1 required positional argument: 'view'".
            dock.visibilityChanged.connect(view.on_dock_visibility_changed)
            dock.setFeatures(
                QDockWidget.DockWidgetFeature.DockWidgetMovable
                | QDockWidget.DockWidgetFeature.DockWidgetClosable
                | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            )
            if view_class.tabify_with in self.docks:
                self.tabifyDockWidget(self.docks[view_class.tabify_with], dock)
                # The view already there stays the one in front; the new tab is a click away.
                self.docks[view_class.tabify_with].raise_()
            elif view_class.split_from is not None and view_class.split_from[0] in self.docks:
                self.addDockWidget(view_class.default_area, dock)
                self.splitDockWidget(self.docks[view_class.split_from[0]], dock, view_class.split_from[1])
            else:
                self.addDockWidget(view_class.default_area, dock, Qt.Orientation.Vertical)
            self.views[view_class.name] = view
            self.docks[view_class.name] = dock
        self._size_columns()

    def _size_columns(self) -> None:
        by_area = {}
        for name, dock in self.docks.items():
            if self._in_layout(dock):
                by_area.setdefault(self.dockWidgetArea(dock), dock)
        widths = {Qt.DockWidgetArea.LeftDockWidgetArea: 330, Qt.DockWidgetArea.RightDockWidgetArea: 430}
        sized = [(by_area[area], width) for area, width in widths.items() if area in by_area]
        if sized:
            self.resizeDocks([d for d, _ in sized], [w for _, w in sized], Qt.Orientation.Horizontal)
        top = by_area.get(Qt.DockWidgetArea.TopDockWidgetArea)
        bottom = by_area.get(Qt.DockWidgetArea.BottomDockWidgetArea)
        if top is not None and bottom is not None:
            self.resizeDocks([top, bottom], [560, 300], Qt.Orientation.Vertical)
        # Within a row or column, by weight: left alone, Qt gave the Codes view the whole row and
        # squeezed Amplitudes and Firing rate to ~60 px, Correlograms and ISI to their title bars,
        # and Waveforms under the Units table to a sliver (1600 × 1000 and 1920 × 1200
        # screenshots), though a unit is judged by them.
        for orientation, weights in DOCK_WEIGHTS + (CURATION_DOCK_WEIGHTS if self.layout_mode == CURATION_LAYOUT else ()):
            docks = [self.docks[name] for name in weights if name in self.docks and self._in_layout(self.docks[name])]
            if len(docks) > 1:
                self.resizeDocks(docks, [weights[d.widget().name] for d in docks], orientation)

    def _in_layout(self, dock: QDockWidget) -> bool:
        # Sizes are shared among the docks in place: one floating, closed or behind a tab has none of its own.
        behind = {name for name, _front in CURATION_TABS} if self.layout_mode == CURATION_LAYOUT else set()
        return not dock.isFloating() and not dock.isHidden() and dock.widget().name not in behind

    def _curation_default_layout(self) -> QByteArray:
        for behind, front in CURATION_TABS:
            self.tabifyDockWidget(self.docks[front], self.docks[behind])
            self.docks[front].raise_()
        return self.saveState(LAYOUT_VERSION)

    def _restore_layout(self) -> None:
        settings = app_settings()
        geometry = settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        self._restore_mode_layout(self.layout_mode)

    def _restore_mode_layout(self, mode: str) -> None:
        state = app_settings().value(LAYOUT_KEYS[mode])
        if not (isinstance(state, QByteArray) and self.restoreState(state, LAYOUT_VERSION)):
            self._apply_default_layout(mode)

    def set_layout_mode(self, mode: str) -> None:
        """Switch between the sorting and the curation layout, keeping the one left for next time."""
        if mode == self.layout_mode:
            return
        app_settings().setValue(LAYOUT_KEYS[self.layout_mode], self.saveState(LAYOUT_VERSION))
        self.layout_mode = mode
        self._restore_mode_layout(mode)

    def save_layout(self) -> None:
        settings = app_settings()
        settings.setValue("window/geometry", self.saveGeometry())
        settings.setValue(LAYOUT_KEYS[self.layout_mode], self.saveState(LAYOUT_VERSION))
        settings.sync()

    def reset_layout(self) -> None:
        self._apply_default_layout(self.layout_mode)

    def _apply_default_layout(self, mode: str) -> None:
        self.restoreState(self._default_layouts[mode], LAYOUT_VERSION)
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.show()
        if mode == CURATION_LAYOUT:
            for _behind, front in CURATION_TABS:
                self.docks[front].raise_()
        self._size_columns()  # the saved state was taken before the window had its size

    # ---- menus and status bar --------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = self._action(file_menu, "&Open Recording…", self.choose_recording, QKeySequence.StandardKey.Open)
        self.open_folder_action = self._action(
            file_menu, "Open &Folder (sort or session)…", self.choose_folder, "Ctrl+Shift+O"
        )
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.demo_action = self._action(file_menu, "Open &Demo Recording", self.open_demo)
        file_menu.addSeparator()
        self.save_action = self._action(file_menu, "&Save Session…", self.choose_session_folder, "Ctrl+Shift+S")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        self._fill_recent_menu(recent_files())

        view_menu = self.menuBar().addMenu("&View")
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addSeparator()
        self._action(view_menu, "&Reset Layout", self.reset_layout)

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = menu.addAction(text)
        action.triggered.connect(lambda _checked=False: slot())
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        return action

    def _fill_recent_menu(self, paths: list[str]) -> None:
        self.recent_menu.clear()
        for path in paths:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _checked=False, path=path: self.open_path(path))
        self.recent_menu.setEnabled(bool(paths))

    def _build_status_bar(self) -> None:
        self.status_label = QLabel()
        self.job_progress = JobProgress()
        # Always shown, at one size, and blank while nothing runs: showing it, or a title of another
        # length, re-laid out the whole window, every dock and the Units table included (1-2 s of the
        # GUI thread while a 384-channel folder opened, once per job started).
        self.job_progress.setFixedSize(260, self.status_label.sizeHint().height())  # no taller than the bar's text
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.job_progress)
        self._on_progress("", -1.0)

    def _on_notice(self, text: str) -> None:
        self.status_label.setText(text)

    def _on_progress(self, title: str, fraction: float) -> None:
        self.job_progress.show_progress(title, fraction)

    def _on_training_state_changed(self, state: TrainingState) -> None:
        # A new file would pull the recording out from under the running trainer.
        idle = state == TrainingState.IDLE
        for action in (self.open_action, self.open_folder_action, self.recent_menu.menuAction(), self.demo_action):
            action.setEnabled(idle)
        self.save_action.setEnabled(idle)

    def show_error(self, error: WorkError) -> None:
        self.status_label.setText(f"{error.title}: {error.message}")
        show_error(self, error)

    # ---- opening ---------------------------------------------------------------------
    def choose_recording(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open recording", "", RECORDING_FILTER)
        if path:
            self.open_path(path)

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder: a recording (SpikeGLX, Open Ephys), a sort (phy) or a session")
        if path:
            self.open_path(path)

    def open_demo(self) -> None:
        from engine.evaluation.simulator import demo_recording_path

        def work(context):
            context.progress(0.05, "Preparing the demo recording")
            return opening.open_recording_source(RecordingSource(path=str(demo_recording_path())), context)

        self._open_in_worker("the demo recording", work)

    def open_path(self, path: str | Path, **raw_parameters) -> None:
        """Open a recording, phy folder or session folder, off the GUI thread.

        `raw_parameters`: sampling_rate / n_channels / dtype for a raw binary, stream, probe;
        any that are still missing are asked for in a dialog first.
        """
        path = str(path)
        kind = opening.kind_of_path(path)
        if kind == "session":
            self._open_in_worker(path, lambda context: opening.open_session_folder(path, context))
        elif kind == "phy":
            self._open_in_worker(path, lambda context: opening.open_phy_folder(path, context))
        else:
            try:
                # Before asking how the file is stored: a file that is no recording is refused now.
                # (A format that describes itself, SpikeGLX, Open Ephys, NWB, is checked by its reader.)
                if recording_format(path, raw_parameters_given=bool(raw_parameters)) is None:
                    check_recording_file(path)
            except RecordingError as error:
                failure = describe_error(error, doing=f"Opening {Path(path).name}")
                self.show_error(failure)
                self.open_failed.emit(failure)
                return
            missing = [name for name in opening.missing_raw_parameters(path) if name not in raw_parameters]
            if missing:
                self._ask_raw_parameters(path, missing, raw_parameters)
                return
            source = RecordingSource(path=path, **raw_parameters)
            self._open_in_worker(path, lambda context: opening.open_recording_source(source, context))

    def _ask_raw_parameters(self, path: str, missing: list[str], known: dict) -> None:
        streams = opening.stream_choices(path) if "stream" in missing else []
        dialog = RawParametersDialog(Path(path).name, missing, self, streams=streams)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.open_path(path, **known, **dialog.values()))
        dialog.open()

    def _open_in_worker(self, what: str, work) -> None:
        # The status bar shows each step, among them what was read from the file (rate, channels, gain, probe).
        self.engine.run_job(f"Opening {Path(what).name}", work, self._install, self.open_failed.emit,
                            on_message=self.status_label.setText)

    def _install(self, opened: opening.Opened) -> None:
        """Swap a fully loaded result into the session (the only step on the GUI thread)."""
        if self.engine.is_training:
            # Training started while the file was loading: keep the run, drop the file.
            self.status_label.setText(f"{opened.path} was not opened: stop training first")
            return
        # A sort opened without its model is curated: the curation views get the room.
        curating = opened.sorting is not None and opened.trainer is None
        self.set_layout_mode(CURATION_LAYOUT if curating else SORTING_LAYOUT)
        self.session.set_recording(opened.recording, opened.source, opened.signal_units)
        if opened.training_config is not None:
            self.session.set_training_config(opened.training_config)
        if opened.trainer is not None:
            self.session.set_trainer(opened.trainer, *opened.dictionary)
        if opened.sorting is not None:
            self.session.set_sorting(opened.sorting, opened.unit_table)
        elif opened.recording is not None:
            # A recording to sort: the training form is needed now (a sort opened for curation never needs it).
            self.views["training"].load_settings()
        self.setWindowTitle(f"Sparsort — {Path(opened.path).name}")
        self.status_label.setText(opened.note)
        self._fill_recent_menu(remember_recent_file(opened.path))
        self.opened.emit(opened.path)

    # ---- saving ------------------------------------------------------------------------
    def choose_session_folder(self) -> None:
        dialog = SaveFolderDialog(self, "Save the session into a folder (a new name creates it)")
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(lambda path: path and self.save_session(path))
        dialog.open()

    def save_session(self, folder: str | Path) -> None:
        from engine.io.session_folder import save_session

        session = self.session
        if session.source is not None and session.training_config is None:
            self.views["training"].load_settings()  # a sort opened for curation: its config is the defaults
        if session.source is None or session.training_config is None:
            self.status_label.setText("Nothing to save: open a recording first")
            return
        params = {key: value for key, value in session.source.open_kwargs().items() if value is not None}
        arguments = dict(
            recording_path=session.source.path,
            recording_params=params,
            training_config=session.training_config,
            pipeline=session.trainer,
            sorting=session.sorting,
            # The sort's own labels: the Units table shows the curation's units, whose
            # labels the curation controller saves over these once the session is written.
            labels=session.sorting.unit_groups if session.sorting is not None else None,
            raw_recording=getattr(session.recording, "parent", None),
        )
        self.engine.run_job("Saving the session", lambda _context: save_session(folder, **arguments), self._on_saved)

    def _on_saved(self, folder) -> None:
        self.status_label.setText(f"Session saved in {folder}")
        self.saved.emit(str(folder))

    # ---- closing -----------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self.save_layout()
        if not self.engine.shutdown():
            # A step that outlasts the wait (a slow GPU kernel, a long file read) cannot be
            # interrupted: look closed now, and really close once the workers have ended.
            event.ignore()
            self.hide()
            QTimer.singleShot(CLOSE_RETRY_MS, self.close)
            return
        super().closeEvent(event)
        self.closed.emit()
