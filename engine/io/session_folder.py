"""A session folder: everything needed to come back to a piece of work without retraining.

    settings.json   which recording (path and how to read it), the training config,
                    and which of the files below are present
    checkpoint.pt   the trained model (engine/io/checkpoints.py)
    sorting/        the sort, as a phy folder (engine.io.phy), labels included

Each file is written atomically, and settings.json last: it is what makes a
folder a session, so a save interrupted half-way leaves either the previous
session or a folder that is not mistaken for a complete one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.io.atomic import write_text_atomic
from engine.pipeline.sorting import Sorting

SETTINGS_FILE = "settings.json"
CHECKPOINT_FILE = "checkpoint.pt"
SORTING_FOLDER = "sorting"
FORMAT_VERSION = 1
# phy's name for "not curated yet"; not worth storing as a label.
UNLABELLED_GROUP = "unsorted"


class SessionError(ValueError):
    """A session folder that cannot be read; the message says what is wrong with it."""


@dataclass
class SavedSession:
    recording_path: Path
    recording_params: dict  # open_recording keyword arguments given explicitly (sampling_rate, ...)
    training_config: object  # engine.pipeline.training.TrainingConfig
    recording: object = None  # the PreprocessedRecording the trainer and views use
    pipeline: object = None  # engine.pipeline.run.SortPipeline with the trained model, or None if saved untrained
    sorting: Sorting | None = None
    labels: dict[int, str] = field(default_factory=dict)  # unit id -> good / mua / noise


def is_session_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / SETTINGS_FILE).is_file()


def save_session(
    folder: str | os.PathLike,
    recording_path: str | os.PathLike,
    recording_params: dict,
    training_config,
    pipeline=None,
    sorting: Sorting | None = None,
    labels: dict[int, str] | None = None,
    raw_recording=None,
) -> Path:
    """Write (or overwrite) the session in `folder`; returns its absolute path.

    raw_recording: the unpreprocessed recording; when given, the phy folder
    points at its data so that phy itself can show the traces.
    """
    from engine.io.checkpoints import save_checkpoint
    from engine.io.phy import export_phy
    from engine.io.recording import BinaryRecording

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / CHECKPOINT_FILE
    if pipeline is not None:
        save_checkpoint(pipeline, checkpoint)
    if sorting is not None:
        groups = {int(unit): label for unit, label in (labels or {}).items() if label}
        # Only a binary file can be referenced in place; anything else would be copied, which a
        # session does not need (settings.json already says where the recording is).
        phy_recording = raw_recording if isinstance(raw_recording, BinaryRecording) else None
        export_phy(sorting, folder / SORTING_FOLDER, recording=phy_recording, cluster_groups=groups)
    settings = {
        "format": FORMAT_VERSION,
        "recording": {"path": _portable_path(Path(recording_path), folder), "params": dict(recording_params)},
        "training_config": training_config.to_dict(),
        "checkpoint": CHECKPOINT_FILE if pipeline is not None else None,
        "sorting": SORTING_FOLDER if sorting is not None else None,
    }
    write_text_atomic(folder / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
    return folder


def load_session(folder: str | os.PathLike) -> SavedSession:
    """Reopen the recording, the trained model and the sort saved in `folder`."""
    from engine.io.phy import load_phy
    from engine.pipeline.preprocessing import PreprocessedRecording
    from engine.io.recording import open_recording
    from engine.io.checkpoints import load_checkpoint
    from engine.pipeline.training import TrainingConfig

    folder = Path(folder).resolve()
    settings = _read_settings(folder)
    recording_path = Path(settings["recording"]["path"])
    if not recording_path.is_absolute():
        recording_path = folder / recording_path
    params = settings["recording"].get("params", {})
    saved = SavedSession(
        recording_path=recording_path,
        recording_params=params,
        training_config=TrainingConfig.from_dict(settings["training_config"]),
    )
    raw = open_recording(recording_path, **{key: value for key, value in params.items() if value is not None})
    saved.recording = PreprocessedRecording(raw)
    if settings.get("checkpoint"):
        saved.pipeline = load_checkpoint(folder / settings["checkpoint"], saved.recording)
    if settings.get("sorting"):
        saved.sorting = load_phy(folder / settings["sorting"]).to_sorting()
        groups = saved.sorting.unit_groups
        saved.labels = {int(unit): group for unit, group in groups.items() if group != UNLABELLED_GROUP}
    return saved


def _read_settings(folder: Path) -> dict:
    path = folder / SETTINGS_FILE
    if not path.is_file():
        raise SessionError(f"{folder} is not a session folder: it has no {SETTINGS_FILE}")
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SessionError(f"{path} is not valid JSON ({error}): the session cannot be reopened") from error
    if not isinstance(settings, dict) or "recording" not in settings or "training_config" not in settings:
        raise SessionError(f"{path} lacks the recording or training_config entry: it was not written by sparsort")
    if settings.get("format", 0) > FORMAT_VERSION:
        raise SessionError(
            f"{path} was written by a newer sparsort (format {settings['format']}): update sparsort to open it"
        )
    return settings


def _portable_path(path: Path, folder: Path) -> str:
    # Inside the session folder: store it relative, so moving the folder keeps the link.
    path = path.resolve()
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)
