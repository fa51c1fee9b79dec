"""The views, one per file. The main window gives each its own dock, in this order.

Adding a view: write app/views/<module>.py with one `View` subclass (see
app/views/base.py) and add the module's name to VIEW_MODULES.
"""

from __future__ import annotations

import importlib

VIEW_MODULES = (
    "traces",
    "codes",
    "filters",
    "training",
    "units",
    "similarity",
    "embedding",
    "probe",
    "waveforms",
    "correlograms",
    "isi",
    "amplitudes",
    "firing_rate",
    "features",
)


def view_classes() -> list[type]:
    """The View subclass defined in each module of VIEW_MODULES, in that order."""
    from app.views.base import View

    classes = []
    for module_name in VIEW_MODULES:
        module = importlib.import_module(f"app.views.{module_name}")
        defined_here = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, View) and obj.__module__ == module.__name__
        ]
        if len(defined_here) != 1:
            raise RuntimeError(f"app/views/{module_name}.py must define exactly one View subclass")
        classes.append(defined_here[0])
    return classes
