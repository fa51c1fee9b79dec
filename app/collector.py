"""Python's cyclic garbage collector and the GUI thread.

A full collection walks every object Python tracks. With a 384-channel sort
open for curation (its curation, metrics, the views' plot items: ~130,000
objects) each one took 45-50 ms, every few seconds of clicking or scrolling,
in whichever thread allocated at that moment (the GUI thread, or a worker
holding the GIL it waits for), and freed nothing: those objects live as
long as the folder is open. So once a folder's curation is loaded they are
set aside (gc.freeze): later full collections walk only what came after.

The modules the app imports (torch, scikit-learn, openTSNE, pandas: most of
the objects a fresh process tracks) live as long as the process. They are set
aside once the warm-up has imported them (app/warm_up.py). Until then, the
first curation's full collection walked them all: 135 ms on the GUI thread
as the demo's sort came in, the longest freeze while training
(benchmarks/bench_gui.py).
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_folder_set_aside = False  # whether a folder's objects are among those set aside


def set_aside_imported_modules() -> None:
    """Leave every object alive now (the imported modules, mostly) out of later collections. No
    collection first: a full one is the walk this avoids, and what is garbage now is a few objects."""
    with _lock:
        gc.freeze()


def set_aside_loaded_objects() -> None:
    """Leave the objects alive now out of later collections. When a folder's objects were set aside
    before, everything is first let go and collected once (a full walk, once per folder opened
    after another), so that the first folder's reference cycles are not kept; otherwise only what
    came since the last setting aside is walked."""
    global _folder_set_aside
    with _lock:
        if _folder_set_aside:
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        _folder_set_aside = True
