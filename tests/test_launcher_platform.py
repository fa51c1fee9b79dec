"""The launcher names the missing X11 libraries and the command that installs them, before Qt aborts."""

from __future__ import annotations

from app.platform_check import xcb_platform_advice

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
UBUNTU = "ID=ubuntu\nID_LIKE=debian\n"
FEDORA = 'ID=fedora\nVERSION_ID=40\n'
X11 = {"DISPLAY": ":0"}


def lacking(*names):
    return lambda name: None if name in names else f"lib{name}.so"


def test_missing_xcb_libraries_give_the_one_apt_command_on_debian_and_ubuntu():
    for os_release in (DEBIAN, UBUNTU):
        advice = xcb_platform_advice(X11, lacking("xcb-cursor", "xcb-icccm", "xcb-keysyms"), os_release)
        assert "libxcb-cursor, libxcb-icccm, libxcb-keysyms" in advice
        assert "    sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1\n" in advice
        assert "dnf" not in advice


def test_on_fedora_the_command_is_dnf():
    advice = xcb_platform_advice(X11, lacking("xcb-cursor", "xcb-shape", "xcb-randr"), FEDORA)
    assert "    sudo dnf install xcb-util-cursor libxcb\n" in advice
    assert "apt" not in advice


def test_an_unknown_system_gets_both_commands():
    advice = xcb_platform_advice(X11, lacking("xcb-cursor"), "ID=arch\n")
    assert "sudo apt install libxcb-cursor0" in advice and "sudo dnf install xcb-util-cursor" in advice


def test_nothing_is_said_when_xcb_is_not_the_platform_or_nothing_is_missing():
    assert xcb_platform_advice(X11, lacking(), DEBIAN) is None
    missing = lacking("xcb-cursor")
    assert xcb_platform_advice({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, missing, DEBIAN) is None
    assert xcb_platform_advice({}, missing, DEBIAN) is None, "no display: not an xcb library problem"
    assert xcb_platform_advice(X11, missing, DEBIAN, platform="darwin") is None
    assert xcb_platform_advice({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, missing, DEBIAN) is not None


def test_the_launcher_prints_the_advice_instead_of_starting_qt(monkeypatch, capsys):
    import app.launcher
    import app.platform_check
    from PyQt6.QtWidgets import QApplication

    monkeypatch.setattr(QApplication, "instance", staticmethod(lambda: None))
    monkeypatch.setattr(app.platform_check, "display_problem", lambda: "sparsort: Qt cannot open a window: install X")
    monkeypatch.setattr("app.main_window.MainWindow", lambda: (_ for _ in ()).throw(AssertionError("window built")))
    assert app.launcher.main([]) == 1
    assert "sparsort: Qt cannot open a window: install X" in capsys.readouterr().err
