"""Docks shown, hidden and brought to the front: the view behind each redraws when it is seen again,
and no dock's visibility slot fails, not even while the garbage collector takes a window apart."""

from __future__ import annotations

import gc

from app.main_window import MainWindow


def _count_refreshes(view, monkeypatch) -> list:
    refreshes = []
    monkeypatch.setattr(view, "refresh", lambda: refreshes.append(view.name))
    return refreshes


def test_a_dock_shown_again_from_the_view_menu_redraws_what_changed_while_it_was_closed(window, qtbot, monkeypatch):
    dock, view = window.docks["isi"], window.views["isi"]
    toggle = dock.toggleViewAction()
    with qtbot.captureExceptions() as exceptions:
        toggle.trigger()
        qtbot.waitUntil(lambda: not dock.isVisible())
        refreshes = _count_refreshes(view, monkeypatch)
        window.session.select_units([1])  # a closed view skips it and is left stale
        assert refreshes == []
        toggle.trigger()
        qtbot.waitUntil(lambda: dock.isVisible())
        qtbot.waitUntil(lambda: refreshes == ["isi"])
    assert toggle.isChecked() and not exceptions


def test_a_tab_brought_to_the_front_redraws_what_changed_while_it_was_behind(window, qtbot, monkeypatch):
    # The probe's tab lies behind the embedding's: Qt sends it no showEvent when it comes to the front,
    # only the dock's visibilityChanged(True).
    dock, view = window.docks["probe"], window.views["probe"]
    assert not view.is_shown()
    with qtbot.captureExceptions() as exceptions:
        window.session.select_units([1])
        refreshes = _count_refreshes(view, monkeypatch)
        dock.raise_()
        qtbot.waitUntil(view.is_shown)
        qtbot.waitUntil(lambda: refreshes == ["probe"])
        window.docks["embedding"].raise_()
        qtbot.waitUntil(lambda: not view.is_shown())
    assert refreshes == ["probe"] and not exceptions


def test_a_window_the_garbage_collector_takes_apart_calls_no_dock_slot_without_its_arguments(qtbot):
    # Each dock is hidden as the window is destroyed. A slot that kept its view in a lambda's default
    # argument had had its defaults cleared by the collector by then: "missing ... argument: 'view'".
    window = MainWindow()
    window.show()
    qtbot.waitExposed(window)
    assert window.engine.shutdown()  # what closing would do; the window itself stays shown
    with qtbot.captureExceptions() as exceptions:
        del window
        gc.collect()
        qtbot.wait(10)
    assert [str(error) for _type, error, _traceback in exceptions] == []
