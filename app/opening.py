"""What opening a file means, as functions that run in a worker thread.

Each returns everything the session needs, fully loaded (the preprocessed
recording with its noise levels already estimated), so the GUI thread only
swaps the new objects in; if any step fails, nothing in the session changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.jobs import JobContext
from app.state import RecordingSource, SignalUnits, UnitTable
from app.unit_table import build_unit_table

# Raw formats whose parameters live outside the file.
NUMPY_SUFFIX = ".npy"
CURATION_NOISE_CHUNKS, CURATION_NOISE_CHUNK_S = 5, 0.1  # noise σ of a sort opened for curation: 0.5 s of data


@dataclass
class Opened:
    """Everything one File > Open produces, ready to put into the Session."""

    path: str  # what was opened: the file or folder the person chose
    recording: object | None  # preprocessed Recording, or None (a phy folder without its data)
    source: RecordingSource | None
    trainer: object | None = None  # engine.pipeline.run.SortPipeline restored from a checkpoint
    dictionary: tuple | None = None  # its (filters, initial_filters), see app.training_worker.current_dictionary
    training_config: object | None = None  # engine.pipeline.training.TrainingConfig
    sorting: object | None = None  # engine.pipeline.sorting.Sorting
    unit_table: UnitTable | None = None
    note: str = ""  # something the person should know, e.g. why the traces are missing
    signal_units: SignalUnits = SignalUnits()  # what the recording and the templates are in


def kind_of_path(path: str | Path) -> str:
    """"session", "phy" or "recording": what the launcher and File > Open should do with `path`."""
    from engine.io.session_folder import is_session_folder

    path = Path(path)
    if path.is_dir() and is_session_folder(path):
        return "session"
    if path.is_dir() and (path / "spike_times.npy").is_file():
        return "phy"
    return "recording"


def missing_raw_parameters(path: str | Path) -> list[str]:
    """Which of sampling_rate / n_channels / dtype / stream nothing beside `path` provides.

    A raw binary has no header: without a `<stem>.json` sidecar or a params.py,
    the person must tell us how to read it. SpikeGLX, Open Ephys and NWB files
    say it themselves, and need only a stream when they hold several.
    """
    from engine.io.formats import recording_format
    from engine.io.recording import sidecar_path

    path = Path(path)
    if recording_format(path) is not None:
        return ["stream"] if stream_choices(path) else []
    if path.is_dir() or path.name == "params.py" or sidecar_path(path).is_file():
        return []
    if path.suffix.lower() == NUMPY_SUFFIX:
        return ["sampling_rate"]
    if (path.parent / "params.py").is_file():
        return []
    return ["sampling_rate", "n_channels", "dtype"]


def stream_choices(path: str | Path) -> list[tuple[str, str]]:
    """(name, what it holds) of each stream to choose from, when `path` holds several and none is the obvious one."""
    from engine.io.formats import stream_choices as choices

    return choices(path)


def open_recording_source(source: RecordingSource, context: JobContext | None = None) -> Opened:
    from engine.io.file_check import check_sortable_duration
    from engine.io.recording import open_recording
    from engine.pipeline.preprocessing import PreprocessedRecording

    _report(context, 0.1, "Opening")
    raw = open_recording(source.path, **{k: v for k, v in source.open_kwargs().items() if v is not None})
    check_sortable_duration(raw, source.path)
    # What was read (rate, channels, gain, where positions came from), shown while the rest loads and after.
    description = raw.describe()
    _report(context, 0.3, description)
    recording = PreprocessedRecording(raw)
    _report(context, 0.5, "Estimating noise")
    recording.noise_levels  # computed here, in the worker, rather than on the first draw
    return Opened(path=source.path, recording=recording, source=source, note=description)


def open_phy_folder(folder: str | Path, context: JobContext | None = None) -> Opened:
    from engine.io.phy import load_phy
    from engine.pipeline.preprocessing import PreprocessedRecording, estimate_noise_levels
    from engine.io.session_folder import UNLABELLED_GROUP

    _report(context, 0.1, "Reading the sorting")
    phy = load_phy(folder)
    sorting = phy.to_sorting()
    recording, source, note = None, None, ""
    if phy.recording is not None:
        recording = PreprocessedRecording(phy.sorted_recording())
        _report(context, 0.5, "Estimating noise")
        # For curation (no training follows), 1 s of data gives σ to about 1 %; the sort's default
        # 10 s took 10 s and 1.4 GB at 384 channels, most of opening a Neuropixels sort.
        recording.noise_levels = estimate_noise_levels(recording, n_chunks=CURATION_NOISE_CHUNKS,
                                                       chunk_duration_s=CURATION_NOISE_CHUNK_S)
        source = RecordingSource(path=str(phy.recording.path))
    else:
        note = phy.missing_data_reason or "the recording this sorting was made from was not found"
    labels = {
        int(unit): group for unit, group in sorting.unit_groups.items() if group != UNLABELLED_GROUP
    }
    # The curation opened on it next computes the metrics, in the background (app/curation_controller.py).
    table = build_unit_table(sorting, recording, labels, with_metrics=False)
    # Another tool's folder gives no gain to µV: its data and templates are labelled as what they are.
    units = SignalUnits(data=phy.data_unit, templates=phy.template_unit)
    return Opened(path=str(folder), recording=recording, source=source, sorting=sorting, unit_table=table, note=note,
                  signal_units=units)


def open_session_folder(folder: str | Path, context: JobContext | None = None) -> Opened:
    from app.training_worker import current_dictionary
    from engine.io.session_folder import load_session

    _report(context, 0.1, "Opening the session")
    saved = load_session(folder)
    source = RecordingSource(path=str(saved.recording_path), **saved.recording_params)
    table = build_unit_table(saved.sorting, saved.recording, saved.labels) if saved.sorting is not None else None
    return Opened(
        path=str(folder),
        recording=saved.recording,
        source=source,
        trainer=saved.pipeline,
        dictionary=current_dictionary(saved.pipeline) if saved.pipeline is not None else None,
        training_config=saved.training_config,
        sorting=saved.sorting,
        unit_table=table,
    )


def _report(context: JobContext | None, fraction: float, message: str) -> None:
    if context is not None:
        context.progress(fraction, message)
