"""The contract every view follows: build once, refresh from the session, react to signals.

A view is a QWidget that the main window puts in its own dock. Subclasses set
`name` (stable: it keys the saved dock layout) and `title`, build their
widgets and plot items once in `build()`, redraw everything from the session
in `refresh()`, and define `on_<signal>` handlers for the Session signals they
care about (`on_selection_changed(unit_ids)`, `on_training_snapshot(snapshot)`,
...). The base class connects those handlers by name.

Hidden views do no work: while a view is not visible (closed, or a tab behind
another dock) its handlers are skipped and the view is marked stale; the
next time it is shown, `refresh()` redraws it from the session's latest state.
A tab behind another stays "visible" to Qt with an empty visible region, and
becoming the current tab sends no showEvent: the main window therefore calls
`became_visible()` from its dock's visibilityChanged signal.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QWidget

# The Session signals a view may handle (see app/state.py for their arguments).
VIEW_EVENTS = (
    "recording_changed",
    "trainer_changed",
    "training_state_changed",
    "training_snapshot",
    "window_codes_changed",
    "sorting_changed",
    "selection_changed",
    "time_window_changed",
    "training_config_changed",
    "curation_changed",
    "spikes_selected",
    "suggestions_changed",
)


class View(QWidget):
    name = ""  # stable identifier; the dock's objectName, so layouts survive renames of `title`
    title = ""  # dock title shown to the person
    default_area = Qt.DockWidgetArea.RightDockWidgetArea
    # Name of a view whose dock this one shares as a tab, behind it, on first launch (None: its own dock).
    tabify_with: str | None = None
    # (name of a view, orientation): on first launch, split that view's dock space and take the
    # second part (Horizontal: to its right; Vertical: below it). None: stack in `default_area`.
    split_from: tuple[str, Qt.Orientation] | None = None

    def __init__(self, session, engine, parent: QWidget | None = None) -> None:
        """`session`: app.state.Session; `engine`: app.engine_bridge.EngineBridge (runs work off the GUI thread)."""
        super().__init__(parent)
        self.session = session
        self.engine = engine
        self._stale = True
        self.setObjectName(f"{self.name}_view")
        self.build()
        for event in VIEW_EVENTS:
            handler = getattr(self, f"on_{event}", None)
            if handler is not None:
                getattr(session, event).connect(self._when_visible(handler))

    def build(self) -> None:
        """Create the layout and plot items once; later updates only change their data."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Redraw everything from the session's current state."""
        raise NotImplementedError

    def is_shown(self) -> bool:
        return self.isVisible() and not self.visibleRegion().isEmpty()

    def became_visible(self) -> None:
        if self._stale:
            self._stale = False
            self.refresh()

    def on_dock_visibility_changed(self, visible: bool) -> None:
        """Connected to the dock's visibilityChanged: a tab brought to the front redraws if stale."""
        if visible:
            self.became_visible()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.became_visible()

    def _when_visible(self, handler):
        def dispatch(*args):
            if self.is_shown():
                handler(*args)
            else:
                self._stale = True

        return dispatch
