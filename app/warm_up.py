"""Load, in the background and once, the modules that training and the t-SNE map import on first use.

openTSNE, and the scikit-learn, pandas and joblib it brings, take 1-2 s to import. The t-SNE worker
imported them at its first map, in the first seconds of training; then, when the sort came in, the
curation's first garbage collection walked every object they and torch hold: 135 ms on the GUI
thread, the longest freeze while the demo trained (benchmarks/bench_gui.py: 172-229 ms in all).
Now they are imported once a recording's traces are on screen, before anyone presses Train, and
what they hold is set aside from later collections (app/collector.py): the longest freeze while
training became 58-93 ms. The import itself still costs one 82-97 ms hitch then, while the person
looks at the new recording; started while the first recording opened, it put its traces on screen
0.4 s later on 2 cores.
"""

from __future__ import annotations

import importlib
import threading

from app.collector import set_aside_imported_modules

# What the first training and its live t-SNE map import that the window itself does not.
MODULES = ("openTSNE", "sklearn.neighbors", "sklearn.cluster")
_import = importlib.import_module

_lock = threading.Lock()
_thread: threading.Thread | None = None
_done = threading.Event()


def start_warm_up() -> None:
    """Import MODULES on a background thread; only the first call does anything."""
    global _thread
    with _lock:
        if _thread is not None:
            return
        _thread = threading.Thread(target=_import_all, name="sparsort-warm-up", daemon=True)
        _thread.start()


def warm_up_finished(timeout_s: float | None = None) -> bool:
    """Whether the warm-up has run to its end (waiting up to `timeout_s` for it; 0 or None: do not wait)."""
    return _done.wait(timeout_s) if timeout_s else _done.is_set()


def _import_all() -> None:
    try:
        for name in MODULES:
            try:
                _import(name)
            except ImportError:  # a broken install: the feature that needs it says so when used
                pass
        # They live as long as the process: out of the garbage collector's full walks (app/collector.py).
        set_aside_imported_modules()
    finally:
        _done.set()
