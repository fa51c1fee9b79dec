"""Before Qt starts: are the system libraries of Qt's X11 (xcb) platform plugin installed?

The PyQt6 wheel brings Qt but not the X11 libraries its xcb plugin links to.
On a plain Debian or Fedora install some are missing (libxcb-cursor0 most
often), and Qt then aborts with "Could not load the Qt platform plugin xcb",
which names neither the library nor the package (Kilosort's users hit the
same: their issues 613, 969, 981, 1029). This module finds the missing
libraries and says the one command that installs them. Qt-free: it runs
before the QApplication exists.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

# (library name for ctypes.util.find_library, Debian/Ubuntu package, Fedora/RHEL package):
# what Qt 6's xcb plugin (libQt6XcbQpa) links to outside the wheel.
XCB_LIBRARIES = (
    ("xcb", "libxcb1", "libxcb"),
    ("X11-xcb", "libx11-xcb1", "libX11-xcb"),
    ("xcb-cursor", "libxcb-cursor0", "xcb-util-cursor"),
    ("xcb-icccm", "libxcb-icccm4", "xcb-util-wm"),
    ("xcb-keysyms", "libxcb-keysyms1", "xcb-util-keysyms"),
    ("xcb-image", "libxcb-image0", "xcb-util-image"),
    ("xcb-util", "libxcb-util1", "xcb-util"),
    ("xcb-render-util", "libxcb-render-util0", "xcb-util-renderutil"),
    ("xcb-randr", "libxcb-randr0", "libxcb"),
    ("xcb-shape", "libxcb-shape0", "libxcb"),
    ("xcb-shm", "libxcb-shm0", "libxcb"),
    ("xcb-sync", "libxcb-sync1", "libxcb"),
    ("xcb-xfixes", "libxcb-xfixes0", "libxcb"),
    ("xcb-xkb", "libxcb-xkb1", "libxcb"),
    ("xkbcommon", "libxkbcommon0", "libxkbcommon"),
    ("xkbcommon-x11", "libxkbcommon-x11-0", "libxkbcommon-x11"),
)
PROBE_TIMEOUT_S = 30


def xcb_platform_advice(environ, find_library, os_release: str, platform: str = "linux") -> str | None:
    """What to install so that Qt's xcb plugin loads, or None when nothing is missing (or xcb is not used).

    `find_library`: ctypes.util.find_library or a stand-in; `os_release`: the
    text of /etc/os-release, which decides between apt and dnf.
    """
    if not platform.startswith("linux"):
        return None
    requested = environ.get("QT_QPA_PLATFORM", "")
    if requested and not requested.startswith("xcb"):
        return None  # offscreen, wayland, vnc, ...: not the xcb plugin
    if not environ.get("DISPLAY"):
        return None  # no X server: Qt's own message about the display says it better
    missing = [entry for entry in XCB_LIBRARIES if find_library(entry[0]) is None]
    if not missing:
        return None
    names = ", ".join(f"lib{name}" for name, _deb, _rpm in missing)
    debian = " ".join(dict.fromkeys(deb for _name, deb, _rpm in missing))
    fedora = " ".join(dict.fromkeys(rpm for _name, _deb, rpm in missing))
    family = _os_family(os_release)
    if family == "debian":
        commands = f"    sudo apt install {debian}"
    elif family == "fedora":
        commands = f"    sudo dnf install {fedora}"
    else:
        commands = f"    sudo apt install {debian}      (Debian, Ubuntu)\n    sudo dnf install {fedora}      (Fedora, RHEL)"
    return (
        f"sparsort: Qt cannot open a window: its X11 platform plugin (xcb) needs {names}, "
        f"which this system lacks. Install {'them' if len(missing) > 1 else 'it'} with\n{commands}\n"
        "then run sparsort again."
    )


def _os_family(os_release: str) -> str:
    fields = {}
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip().strip('"').lower()
    ids = {fields.get("ID", ""), *fields.get("ID_LIKE", "").split()}
    if ids & {"debian", "ubuntu"}:
        return "debian"
    if ids & {"fedora", "rhel", "centos"}:
        return "fedora"
    return ""


def qt_window_can_start() -> bool:
    """Ask a throw-away process to start Qt: the libraries may live where find_library does not look (conda)."""
    probe = "from PyQt6.QtWidgets import QApplication; QApplication(['sparsort-probe'])"
    try:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return True  # no verdict: let Qt try and speak for itself
    return result.returncode == 0


def display_problem() -> str | None:
    """The advice to print instead of starting Qt, or None to go ahead."""
    os_release = Path("/etc/os-release")
    text = os_release.read_text(errors="replace") if os_release.is_file() else ""
    advice = xcb_platform_advice(os.environ, ctypes.util.find_library, text, sys.platform)
    # A library found nowhere by find_library may still load (a conda environment):
    # only a Qt that really fails to start is stopped.
    if advice is not None and not qt_window_can_start():
        return advice
    return None
