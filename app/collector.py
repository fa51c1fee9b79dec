"""Python's cyclic garbage collector and the GUI thread.

A full collection walks every object Python tracks. With a 384-channel sort
open for curation (its curation, metrics, the views' plot items: ~130,000
objects) each one took 45-50 ms, every few seconds of clicking or scrolling,
in whichever thread allocated at that moment (the GUI thread, or a worker
holding the GIL it waits for), and freed nothing: those objects live as
long as the folder is open. So once a folder's curation is loaded they are
set aside (gc.freeze): later full collections walk only what came after.
"""

from __future__ import annotations

import gc


def set_aside_loaded_objects() -> None:
    """Leave the objects alive now out of later collections; those set aside last time are first let go and
    collected once, so that a folder opened after another does not keep the first one's reference cycles."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
