"""SpikeInterface, both ways: its recordings sorted by Sparsort, Sparsort's sortings handed back.

    from engine.io.spikeinterface_adapter import from_spikeinterface, to_spikeinterface_sorting
    recording = from_spikeinterface(si_recording)          # any spikeinterface BaseRecording
    sorting = CRsAESorter().fit_predict(recording)
    si_sorting = to_spikeinterface_sorting(sorting)        # a spikeinterface NumpySorting
    si_view = to_spikeinterface_recording(recording)       # Sparsort's recording, read through SpikeInterface

and `open_with_spikeinterface(path)` reads the formats Sparsort does not read
itself (NWB, Intan, Blackrock, Plexon, Neuralynx, Spike2) through
`spikeinterface.extractors`, with the probe they carry.

SpikeInterface is optional (`pip install sparsort[formats]`): it is imported
only inside these functions, so the engine imports without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.io.recording import Recording, RecordingError

INSTALL_HINT = "pip install 'sparsort[formats]' (spikeinterface, neo, pynwb)"
# suffix -> (spikeinterface.extractors reader, the keyword that picks a stream)
READERS = {
    ".nwb": ("read_nwb_recording", "electrical_series_path"),
    ".rhd": ("read_intan", "stream_name"),
    ".rhs": ("read_intan", "stream_name"),
    ".ns6": ("read_blackrock", "stream_name"),
    ".ns5": ("read_blackrock", "stream_name"),
    ".ns4": ("read_blackrock", "stream_name"),
    ".ns3": ("read_blackrock", "stream_name"),
    ".ns2": ("read_blackrock", "stream_name"),
    ".plx": ("read_plexon", "stream_name"),
    ".pl2": ("read_plexon2", "stream_name"),
    ".ncs": ("read_neuralynx", "stream_name"),
    ".smrx": ("read_ced", "stream_name"),
    ".smr": ("read_ced", "stream_name"),
}
# When a file holds several streams, the one with neural traces, by its name.
NEURAL_STREAM_WORDS = ("amplifier", "-ap", ".ap")


def is_spikeinterface_path(path: Path) -> bool:
    return path.suffix.lower() in READERS


class SpikeInterfaceRecording(Recording):
    """A SpikeInterface BaseRecording (one segment) read in chunks, in µV."""

    def __init__(self, si_recording, segment_index: int = 0, path: str | Path | None = None) -> None:
        n_segments = si_recording.get_num_segments()
        if not 0 <= segment_index < n_segments:
            raise RecordingError(
                f"segment {segment_index} does not exist: the recording has {n_segments} segment(s), "
                f"0 to {n_segments - 1}"
            )
        positions = si_recording.get_channel_locations()[:, :2] if si_recording.has_probe() else None
        super().__init__(
            si_recording.get_sampling_frequency(), si_recording.get_num_channels(),
            si_recording.get_num_samples(segment_index), positions, path, si_recording.get_dtype(),
        )
        self.si_recording = si_recording
        self.segment_index = segment_index
        self.format_name = f"SpikeInterface {type(si_recording).__name__}"
        self.positions_source = "the recording's probe" if positions is not None else self.positions_source
        if si_recording.has_scaleable_traces():
            self.channel_gains_to_uv = np.asarray(si_recording.get_channel_gains(), dtype=np.float64)
            self._offsets_uv = np.asarray(si_recording.get_channel_offsets(), dtype=np.float32)
        else:
            self.channel_gains_to_uv = np.ones(self.n_channels)
            self._offsets_uv = np.zeros(self.n_channels, dtype=np.float32)
            self.notes.append("no gains in the source: values taken as µV")
        if n_segments > 1:
            self.notes.append(f"segment {segment_index} of {n_segments}")

    def _read_block(self, start, stop, channel_index):
        channel_ids = None
        selected = slice(None)
        if channel_index is not None:
            channel_ids = self.si_recording.get_channel_ids()[channel_index]
            selected = channel_index
        raw = self.si_recording.get_traces(segment_index=self.segment_index, start_frame=start, end_frame=stop,
                                           channel_ids=channel_ids)
        # Out of place: a float32 source (a saved binary folder) hands back its read-only memory map.
        gains = self.channel_gains_to_uv[selected].astype(np.float32)
        return np.asarray(raw, dtype=np.float32) * gains + self._offsets_uv[selected]  # (n, n_selected) µV

    # The wrapped SpikeInterface object pickles itself (by its kwargs), so
    # worker processes reopen the file rather than copy traces.


def from_spikeinterface(si_recording, segment_index: int = 0) -> SpikeInterfaceRecording:
    """Wrap a SpikeInterface BaseRecording as a Sparsort Recording (nothing is read yet)."""
    return SpikeInterfaceRecording(si_recording, segment_index)


def to_spikeinterface_sorting(sorting):
    """A Sparsort Sorting as a SpikeInterface NumpySorting (unit ids = Sparsort's unit indices)."""
    NumpySorting = _spikeinterface().core.NumpySorting
    return NumpySorting.from_samples_and_labels(
        [np.asarray(sorting.spike_times, dtype=np.int64)],
        [np.asarray(sorting.spike_units, dtype=np.int64)],
        float(sorting.sampling_rate),
        unit_ids=np.asarray(sorting.unit_ids, dtype=np.int64),
    )


def to_spikeinterface_recording(recording: Recording):
    """`recording` as a SpikeInterface BaseRecording that reads it chunk by chunk (float32 µV, its positions),
    never whole. It lives in this process: SpikeInterface jobs on it run on threads (pool_engine="thread"),
    not in processes that would rebuild it from a file."""
    from spikeinterface.core import BaseRecording, BaseRecordingSegment

    class Segment(BaseRecordingSegment):
        def __init__(self) -> None:
            super().__init__(sampling_frequency=recording.sampling_rate)

        def get_num_samples(self) -> int:
            return recording.n_samples

        def get_traces(self, start_frame=None, end_frame=None, channel_indices=None) -> np.ndarray:
            start = 0 if start_frame is None else int(start_frame)
            stop = recording.n_samples if end_frame is None else int(end_frame)
            channels = None if channel_indices is None or isinstance(channel_indices, slice) else channel_indices
            traces = recording.get_traces(start, stop, channels)
            return traces[:, channel_indices] if isinstance(channel_indices, slice) else traces

    class View(BaseRecording):
        def __init__(self) -> None:
            super().__init__(sampling_frequency=recording.sampling_rate, channel_ids=np.arange(recording.n_channels),
                             dtype="float32")
            self.add_recording_segment(Segment())
            self.set_dummy_probe_from_locations(np.asarray(recording.channel_positions, dtype=np.float64))
            self.set_channel_gains(np.ones(recording.n_channels))
            self.set_channel_offsets(np.zeros(recording.n_channels))
            self._serializability.update(memory=True, json=False, pickle=False)

    return View()


def open_with_spikeinterface(path: str | Path, stream: str | None = None) -> SpikeInterfaceRecording:
    """A recording SpikeInterface can read (NWB, Intan, Blackrock, ...), by its suffix."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"recording file not found: {path}")
    reader_name, stream_keyword = READERS[path.suffix.lower()]
    extractors = _spikeinterface().extractors
    reader = getattr(extractors, reader_name)
    source = path.parent if reader_name == "read_neuralynx" else path
    if stream is None and stream_keyword == "stream_name":
        stream = _neural_stream(reader_name, source, extractors)
    kwargs = {stream_keyword: stream} if stream is not None else {}
    try:
        si_recording = reader(source, **kwargs)
    except (ValueError, AssertionError, KeyError, OSError) as error:
        raise RecordingError(
            f"SpikeInterface's {reader_name} could not open {path}: {error}. "
            f"If it names several streams or electrical series, choose one with stream=NAME (CLI --stream NAME)"
        ) from error
    recording = SpikeInterfaceRecording(si_recording, path=path)
    recording.format_name = f"{path.suffix.lower().lstrip('.').upper()} via SpikeInterface {reader_name}"
    return recording


def _neural_stream(reader_name: str, source: Path, extractors) -> str | None:
    """The stream to read when the file has several: the only one, or the one named for neural data."""
    try:
        names, _ids = extractors.get_neo_streams(reader_name.removeprefix("read_"), source)
    except Exception:  # noqa: BLE001 - listing streams is a courtesy; the reader itself reports real problems
        return None
    if len(names) <= 1:
        return None
    neural = [name for name in names if any(word in name.lower() for word in NEURAL_STREAM_WORDS)]
    if len(neural) == 1:
        return neural[0]
    raise RecordingError(
        f"{source} holds {len(names)} streams: {', '.join(map(repr, names))}. "
        f"Choose one with stream=NAME (CLI --stream NAME)"
    )


def _spikeinterface():
    try:
        import spikeinterface.core  # noqa: F401
        import spikeinterface.extractors  # noqa: F401
    except ImportError as error:
        raise RecordingError(f"this needs SpikeInterface, which is not installed: {INSTALL_HINT}") from error
    import spikeinterface

    return spikeinterface
