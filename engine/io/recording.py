"""Extracellular recordings: open them, read chunks of them in µV, write them.

Every recording answers `get_traces(start, stop, channels)` with a
(n_samples, n_channels) float32 block in µV and never loads the whole file:
raw binaries and .npy files are memory-mapped, so a 2-hour, 384-channel file
opens as fast as the 2-minute demo.

Raw binaries carry no header, so their parameters come from, in order of
precedence: explicit arguments, a JSON sidecar `<stem>.json` beside the file,
or a Kilosort/phy `params.py` in the same folder. Formats that describe
themselves (SpikeGLX, Open Ephys, NWB, ...) have their own readers, which
produce the same BinaryRecording (or wrap SpikeInterface): engine/io/formats.py.
"""

from __future__ import annotations

import json
import math
import mmap
import numbers
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from engine.io.atomic import atomic_file, write_text_atomic
from engine.io.geometry import duplicate_positions_problem, linear_positions
from engine.io.params_py import read_params_py

SUPPORTED_DTYPES = ("int16", "uint16", "float32", "float64")
# Above this size a full scan for NaN/inf at open would make opening slow;
# get_traces still checks every block it reads.
NONFINITE_SCAN_MAX_BYTES = 1 << 30
_SCAN_CHUNK_BYTES = 64 << 20
DEFAULT_POSITIONS_SOURCE = "none given; a vertical line, 20 µm apart (pass --probe FILE)"
# Peak |value| of int16 data written with an automatic gain uses half the range,
# so later processing (or a re-save with another gain) has room before clipping.
_INT_HEADROOM = 0.5
# Kilosort/phy params.py names of what we read, and ours for them.
_PARAMS_PY_NAMES = {"sample_rate": "sampling_rate", "n_channels_dat": "n_channels",
                    "dtype": "dtype", "offset": "offset", "gain_to_uv": "gain_to_uv"}
_PARAMS_PY_KEYS = ("dat_path", *_PARAMS_PY_NAMES)
_SIDECAR_KEYS = ("sampling_rate", "n_channels", "dtype", "offset", "gain_to_uv", "channel_positions")
# How to tell the person where each required parameter comes from.
_PARAMETER_SOURCES = {
    "sampling_rate": ("sampling rate", "sampling_rate=", "--sampling-rate"),
    "n_channels": ("channel count", "n_channels=", "--n-channels"),
    "dtype": ("sample type", "dtype=", "--dtype"),
}
_OTHER_FLAGS = {"offset": "--offset", "gain_to_uv": "--gain-to-uv"}


# Reads of recordings whose readers are not `concurrent_reads`, one at a time in this process.
_SERIAL_READS = threading.Lock()


class RecordingError(ValueError):
    """A recording (or its parameters) cannot be used; the message says how to fix it."""


class Recording:
    """Base class: metadata plus checked, chunked reads in µV.

    Subclasses implement `_read_block(start, stop, channel_index)`.
    """

    # Whether `_read_block` may run in several threads at once (sorting reads batches of chunks in
    # parallel, engine/pipeline/inference.py). Readers of memory-mapped files are; a reader that
    # keeps state between reads (a cache, a file handle, another library's object) is not, and its
    # reads are taken one at a time.
    concurrent_reads = False

    def __init__(
        self,
        sampling_rate: float,
        n_channels: int,
        n_samples: int,
        channel_positions=None,
        path: str | os.PathLike | None = None,
        source_dtype=np.float32,
    ) -> None:
        self.sampling_rate = _checked_sampling_rate(sampling_rate)
        self.n_channels = _checked_n_channels(n_channels)
        self.n_samples = int(n_samples)
        if self.n_samples < 0:
            raise RecordingError(f"n_samples must be >= 0, got {self.n_samples}")
        self.path = Path(path) if path is not None else None
        self.source_dtype = np.dtype(source_dtype)
        self.channel_positions = _checked_positions(channel_positions, self.n_channels)
        # What the person should see before sorting: set by the reader that opened the file.
        self.format_name = "raw"
        self.positions_source = "given" if channel_positions is not None else DEFAULT_POSITIONS_SOURCE
        self.notes: list[str] = []  # e.g. "sync channel 384 of 385 left out"

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.sampling_rate

    def describe(self) -> str:
        """One line saying what was read: format, rate, channels, gain, where positions came from."""
        parts = [f"{self.format_name}: {self.sampling_rate:g} Hz, {self.n_channels} channels, {self.duration:.2f} s"]
        gains = getattr(self, "channel_gains_to_uv", None)
        if gains is None:
            gains = np.atleast_1d(getattr(self, "gain_to_uv", 1.0) or 1.0)
        low, high = float(np.min(gains)), float(np.max(gains))
        parts.append(f"{low:.4g} µV per unit" if low == high else f"{low:.4g} to {high:.4g} µV per unit")
        parts.append(f"positions: {self.positions_source}")
        return "; ".join(parts + list(self.notes))

    def set_channel_positions(self, positions, source: str) -> None:
        """Replace the geometry (e.g. from a probe file); `source` says where it came from."""
        self.channel_positions = _checked_positions(positions, self.n_channels)
        self.positions_source = source

    def get_traces(self, start: int = 0, stop: int | None = None, channels=None) -> np.ndarray:
        """(stop - start, n_selected_channels) float32 µV; `stop` is clipped to the end."""
        start, stop = self._checked_range(start, stop)
        channel_index = self._checked_channels(channels)
        if stop == start:
            n_selected = self.n_channels if channel_index is None else len(channel_index)
            return np.zeros((0, n_selected), dtype=np.float32)
        if self.concurrent_reads:
            traces = self._read_block(start, stop, channel_index)
        else:
            with _SERIAL_READS:
                traces = self._read_block(start, stop, channel_index)
        # Integer sources cannot hold NaN/inf; float sources can, and one NaN
        # would silently poison filtering and training downstream.
        if self.source_dtype.kind == "f":
            self._check_finite(traces, start, channel_index)
        return traces

    def iter_chunks(self, chunk_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield (start, stop, traces) covering the whole recording in order."""
        chunk_size = int(chunk_size)
        if chunk_size <= 0:
            raise RecordingError(f"chunk_size must be a positive number of samples, got {chunk_size}")
        for start in range(0, self.n_samples, chunk_size):
            stop = min(start + chunk_size, self.n_samples)
            yield start, stop, self.get_traces(start, stop)

    def _read_block(self, start: int, stop: int, channel_index: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _describe_source(self) -> str:
        return str(self.path) if self.path is not None else "in-memory traces"

    def __repr__(self) -> str:
        n_bytes = self.n_samples * self.n_channels * self.source_dtype.itemsize
        return (
            f"{type(self).__name__}({self._describe_source()!r}: {self.n_samples:,} samples x "
            f"{self.n_channels} channels, {self.sampling_rate:g} Hz, {self.duration:.2f} s, "
            f"{self.source_dtype.name}, {n_bytes / 1e6:.1f} MB)"
        )

    def _checked_range(self, start, stop) -> tuple[int, int]:
        start = _checked_sample_index(start, "start")
        stop = self.n_samples if stop is None else _checked_sample_index(stop, "stop")
        stop = min(stop, self.n_samples)
        if start > stop:
            if start > self.n_samples:
                raise RecordingError(
                    f"start {start} is past the end of the recording ({self.n_samples} samples, "
                    f"{self.duration:.3f} s): use a start below {self.n_samples}"
                )
            raise RecordingError(f"start {start} is after stop {stop}: pass start <= stop")
        return start, stop

    def _checked_channels(self, channels) -> np.ndarray | None:
        if channels is None:
            return None
        index = np.asarray(channels)
        if index.ndim == 0:
            index = index.reshape(1)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise RecordingError(
                f"channels must be a list of integer channel indices, got {channels!r}"
            )
        index = index.astype(np.int64)
        out_of_range = index[(index < 0) | (index >= self.n_channels)]
        if out_of_range.size:
            raise RecordingError(
                f"channel {int(out_of_range[0])} does not exist: this recording has "
                f"{self.n_channels} channels, numbered 0 to {self.n_channels - 1}"
            )
        return index

    def _check_finite(self, traces: np.ndarray, start: int, channel_index: np.ndarray | None) -> None:
        finite = np.isfinite(traces)
        if finite.all():
            return
        row, column = np.argwhere(~finite)[0]
        channel = int(column if channel_index is None else channel_index[column])
        raise RecordingError(
            f"{self._describe_source()}: sample {start + int(row)}, channel {channel} is "
            f"{traces[row, column]} (not a finite number). Replace non-finite values "
            f"(e.g. with numpy.nan_to_num) and save the recording again, or use only the part "
            f"before sample {start + int(row)}."
        )


class BinaryRecording(Recording):
    """A headerless binary file: time-major frames of interleaved channels.

    Sample (t, c) sits at byte `offset + (t * n_channels + c) * itemsize`.
    uint16 data is shifted by 32768 so zero volts reads as zero.
    `channels` picks the file columns this recording presents (a SpikeGLX
    file without its sync channel), and `gain_to_uv` may be one number or one
    per presented channel (SpikeGLX, Open Ephys).
    """

    concurrent_reads = True  # slices of a read-only memory map

    def __init__(
        self,
        path: str | os.PathLike,
        sampling_rate: float,
        n_channels: int,
        dtype,
        offset: int = 0,
        gain_to_uv=1.0,
        channel_positions=None,
        channels=None,
    ) -> None:
        path = Path(path)
        self.n_file_channels = _checked_n_channels(n_channels)
        self.file_channels = _checked_file_channels(channels, self.n_file_channels)  # (n_presented,) int64
        self.dtype = _checked_dtype(dtype)
        self.offset = _checked_offset(offset)
        self.channel_gains_to_uv = _checked_channel_gains(gain_to_uv, len(self.file_channels))  # (n_presented,)
        gains = self.channel_gains_to_uv
        # One number when every channel shares it (what phy's params.py can say), else None.
        self.gain_to_uv = float(gains[0]) if np.all(gains == gains[0]) else None
        # True when this recording presents every column of the file, in order: reads need no column pick.
        self.is_whole_file = bool(np.array_equal(self.file_channels, np.arange(self.n_file_channels)))
        n_samples = _frames_in_file(path, self.offset, self.n_file_channels, self.dtype)
        super().__init__(sampling_rate, len(self.file_channels), n_samples, channel_positions, path, self.dtype)
        self._samples = self._map_file()
        if self.dtype.kind == "f" and path.stat().st_size - self.offset <= NONFINITE_SCAN_MAX_BYTES:
            _scan_for_nonfinite(self)

    def _map_file(self) -> np.memmap:
        # (n_samples, n_channels) source dtype, read-only view of the file
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=(self.n_samples, self.n_file_channels))

    # A pickled memmap carries a copy of the whole file; worker processes
    # (e.g. a torch DataLoader) get the path and map the file themselves.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_samples"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._samples = self._map_file()

    def _read_block(self, start, stop, channel_index):
        block = self._samples[start:stop]
        selected = slice(None) if channel_index is None else channel_index
        if channel_index is not None or not self.is_whole_file:
            block = block[:, self.file_channels[selected]]
        gains = self.gain_to_uv if self.gain_to_uv is not None else self.channel_gains_to_uv[selected]
        microvolts = _to_microvolts(block, gains)
        release_rows(self._samples, start, stop)
        return microvolts


class NumpyRecording(Recording):
    """Traces already in an array (in memory, or a `np.load(..., mmap_mode='r')` memmap)."""

    concurrent_reads = True  # slices of an array or a read-only memory map

    def __init__(
        self,
        traces: np.ndarray,
        sampling_rate: float,
        channel_positions=None,
        path: str | os.PathLike | None = None,
        gain_to_uv: float = 1.0,
    ) -> None:
        if not isinstance(traces, np.ndarray):
            traces = np.asarray(traces)
        if traces.ndim != 2:
            raise RecordingError(
                f"traces must be 2-D (n_samples, n_channels), got shape {traces.shape}; "
                f"for one channel pass traces[:, None]"
            )
        if traces.shape[0] == 0 or traces.shape[1] == 0:
            raise RecordingError(f"traces are empty (shape {traces.shape}): nothing to sort")
        dtype = _checked_dtype(traces.dtype)
        self.gain_to_uv = _checked_gain(gain_to_uv)
        super().__init__(sampling_rate, traces.shape[1], traces.shape[0], channel_positions, path, dtype)
        self._samples = traces  # (n_samples, n_channels) source dtype
        if dtype.kind == "f" and traces.nbytes <= NONFINITE_SCAN_MAX_BYTES:
            _scan_for_nonfinite(self)

    def _read_block(self, start, stop, channel_index):
        block = self._samples[start:stop]
        if channel_index is not None:
            block = block[:, channel_index]
        microvolts = _to_microvolts(block, self.gain_to_uv)
        release_rows(self._samples, start, stop)
        return microvolts


def open_recording(
    path: str | os.PathLike,
    sampling_rate: float | None = None,
    n_channels: int | None = None,
    dtype=None,
    offset: int | None = None,
    gain_to_uv: float | None = None,
    channel_positions=None,
    stream: str | None = None,
    probe: str | os.PathLike | None = None,
) -> Recording:
    """Open a recording, memory-mapped or read in chunks, by what `path` is.

    SpikeGLX (.bin + .meta), Open Ephys (structure.oebin) and the formats
    SpikeInterface reads (.nwb, ...) describe themselves (see engine/io/formats.py);
    `stream` picks one when a folder or file holds several. Otherwise a .npy or
    raw binary, or a phy/Kilosort folder or its params.py (which names the data
    file): explicit arguments win over the sidecar `<stem>.json`, which wins
    over params.py. `probe`: a probeinterface JSON or .prb file whose geometry
    replaces any other.
    """
    from engine.io.formats import open_lab_recording

    explicit = {
        "sampling_rate": sampling_rate, "n_channels": n_channels, "dtype": dtype,
        "offset": offset, "gain_to_uv": gain_to_uv,
    }
    explicit = {key: value for key, value in explicit.items() if value is not None}
    recording = open_lab_recording(path, stream, raw_parameters_given=bool(explicit))
    if recording is None:
        if stream is not None:
            raise RecordingError(
                f"{path}: stream {stream!r} was given, but a raw binary or .npy has one stream; leave it out"
            )
        recording = _open_raw(Path(path), {**explicit, "channel_positions": channel_positions})
    else:
        _refuse_raw_parameters(recording, explicit)
        if channel_positions is not None:
            recording.set_channel_positions(channel_positions, "given")
    if probe is not None:
        from engine.io.probe_files import apply_probe

        apply_probe(recording, probe)
    return recording


def _refuse_raw_parameters(recording: Recording, explicit: dict) -> None:
    # Silently ignoring --fs on a SpikeGLX file would hide a mistake; obeying it would misread the file.
    if explicit:
        flags = ", ".join(_PARAMETER_SOURCES[key][2] if key in _PARAMETER_SOURCES else _OTHER_FLAGS[key]
                          for key in explicit)
        raise RecordingError(
            f"{recording.path} is a {recording.format_name} recording, which says its own sampling rate, channels, "
            f"sample type and gains: leave out {flags}"
        )


def _open_raw(path: Path, explicit: dict) -> Recording:
    explicit = {key: value for key, value in explicit.items() if value is not None}
    path = _resolve_data_path(path)
    if path.stat().st_size == 0:
        raise RecordingError(f"{path} is empty (0 bytes): no samples to read")
    sidecar = _read_sidecar(path)
    if path.suffix.lower() == ".npy":
        return _open_npy(path, {**sidecar, **explicit})
    params_py, params_note = _read_params_py_for(path)
    _check_channel_count_agrees(explicit, sidecar, sidecar_path(path).name)
    _check_channel_count_agrees(explicit, params_py, "params.py")
    merged = {**params_py, **sidecar, **explicit}
    missing = [key for key in _PARAMETER_SOURCES if key not in merged]
    if missing:
        raise RecordingError(_missing_parameters_message(path, missing, sidecar, params_note))
    return BinaryRecording(
        path,
        sampling_rate=merged["sampling_rate"],
        n_channels=merged["n_channels"],
        dtype=merged["dtype"],
        offset=merged.get("offset", 0),
        gain_to_uv=merged.get("gain_to_uv", 1.0),
        channel_positions=merged.get("channel_positions"),
    )


def write_recording(
    path: str | os.PathLike,
    traces: np.ndarray,
    sampling_rate: float,
    dtype="int16",
    gain_to_uv: float | None = None,
    channel_positions=None,
) -> Path:
    """Write traces (n_samples, n_channels) in µV as a raw binary plus its `<stem>.json` sidecar.

    For integer dtypes and `gain_to_uv=None`, the gain is chosen so the largest
    |value| uses half the integer range. Both files are written atomically, the
    sidecar last, so a sidecar always describes a complete binary.
    """
    traces = np.asarray(traces)
    if traces.ndim != 2 or 0 in traces.shape:
        raise RecordingError(
            f"traces must be a non-empty 2-D array (n_samples, n_channels), got shape {traces.shape}"
        )
    dtype = _checked_dtype(dtype)
    gain = _choose_gain(traces, dtype) if gain_to_uv is None else gain_to_uv
    return write_recording_blocks(path, [traces], sampling_rate, traces.shape[1], dtype, gain, channel_positions)


def write_recording_blocks(
    path: str | os.PathLike,
    blocks: Iterable[np.ndarray],
    sampling_rate: float,
    n_channels: int,
    dtype="float32",
    gain_to_uv: float | None = None,
    channel_positions=None,
) -> Path:
    """Write a recording given as consecutive blocks (each (n_samples, n_channels), in µV) as a raw
    binary plus its sidecar, one block in memory at a time: a recording longer than memory can be
    written. Atomic like write_recording. An integer dtype needs `gain_to_uv` (a gain chosen from the
    data would need every block first)."""
    path = Path(path)
    if path.suffix.lower() in (".json", ".npy", ".py"):
        raise RecordingError(
            f"write_recording writes a raw binary, not {path.suffix}: name it e.g. "
            f"{path.with_suffix('.bin').name}"
        )
    sampling_rate = _checked_sampling_rate(sampling_rate)
    positions = _checked_positions(channel_positions, n_channels)
    dtype = _checked_dtype(dtype)
    if gain_to_uv is None:
        if dtype.kind != "f":
            raise RecordingError(
                f"writing {dtype.name} block by block needs gain_to_uv (µV per stored unit): pass one, "
                f"e.g. 0.195 for Intan or Neuropixels-like data, or write float32"
            )
        gain_to_uv = 1.0
    gain = _checked_gain(gain_to_uv)
    written = 0
    with atomic_file(path) as handle:
        for block in blocks:
            block = np.asarray(block)
            if block.ndim != 2 or block.shape[1] != n_channels:
                raise RecordingError(
                    f"block at sample {written} has shape {block.shape}; every block must be "
                    f"(n_samples, {n_channels})"
                )
            if not np.isfinite(block).all():
                row, column = np.argwhere(~np.isfinite(block))[0]
                raise RecordingError(
                    f"traces are not finite at sample {written + row}, channel {column}: "
                    f"replace NaN/inf (e.g. numpy.nan_to_num) before writing"
                )
            handle.write(_from_microvolts(block, gain, dtype).tobytes())
            written += len(block)
        if written == 0:
            raise RecordingError("no samples to write: the recording must hold at least one block of samples")
    sidecar = {
        "sampling_rate": sampling_rate,
        "n_channels": n_channels,
        "dtype": dtype.name,
        "offset": 0,
        "gain_to_uv": gain,
        "channel_positions": positions.tolist(),
    }
    write_text_atomic(sidecar_path(path), json.dumps(sidecar, indent=2) + "\n")
    return path


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the JSON parameters of a binary live: `<stem>.json` beside it."""
    return Path(path).with_suffix(".json")


def check_min_duration(recording: Recording, n_samples_needed: int, what: str) -> None:
    """Raise if the recording is shorter than `what` (e.g. "one filter") needs."""
    if recording.n_samples >= n_samples_needed:
        return
    seconds_needed = n_samples_needed / recording.sampling_rate
    raise RecordingError(
        f"recording has {recording.n_samples} samples ({recording.duration:.4g} s at "
        f"{recording.sampling_rate:g} Hz), shorter than {what} ({n_samples_needed} samples, "
        f"{seconds_needed:.4g} s): open a recording at least {seconds_needed:.4g} s long, "
        f"or lower the setting that makes {what} {n_samples_needed} samples long"
    )


# -- parameter checks ---------------------------------------------------------

def _checked_sampling_rate(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RecordingError(f"sampling rate must be a number in Hz, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise RecordingError(
            f"sampling rate must be a positive number of Hz, got {value:g}; "
            f"typical values are 10000 to 40000"
        )
    return value


def _check_channel_count_agrees(explicit: dict, described: dict, source: str) -> None:
    # The other keys of that source (channel_positions, a channel map) are for its count,
    # so overriding the count alone would fail later on a key the person never set.
    if "n_channels" in explicit and "n_channels" in described and explicit["n_channels"] != described["n_channels"]:
        raise RecordingError(
            f"n_channels {explicit['n_channels']} was given (--n-channels), but {source} beside the file says "
            f"{described['n_channels']}: leave --n-channels out to use {source}'s, or correct {source}"
        )


def _checked_n_channels(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RecordingError(f"channel count must be a whole number, got {value!r}")
    if not float(value).is_integer():
        raise RecordingError(f"channel count must be a whole number, got {value!r}")
    value = int(value)
    if value <= 0:
        raise RecordingError(f"channel count must be at least 1, got {value}")
    return value


def _checked_dtype(value) -> np.dtype:
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in SUPPORTED_DTYPES:
        raise RecordingError(
            f"unsupported sample type {value!r}: supported are {', '.join(SUPPORTED_DTYPES)}"
        )
    return dtype


def _checked_offset(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise RecordingError(f"offset must be a whole, non-negative number of bytes, got {value!r}")
    return int(value)


def _checked_gain(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RecordingError(f"gain_to_uv must be a number (µV per stored unit), got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value == 0:
        raise RecordingError(
            f"gain_to_uv must be a finite, non-zero number of µV per stored unit, got {value:g}"
        )
    return value


def _checked_channel_gains(value, n_channels: int) -> np.ndarray:
    """(n_channels,) float64 µV per stored unit, from one number or one per channel."""
    if np.ndim(value) == 0:
        return np.full(n_channels, _checked_gain(value))
    gains = np.asarray(value, dtype=np.float64)
    if gains.shape != (n_channels,):
        raise RecordingError(
            f"gain_to_uv must be one number or one per channel ({n_channels}), got shape {gains.shape}"
        )
    for gain in gains:
        _checked_gain(float(gain))
    return gains


def _checked_file_channels(channels, n_file_channels: int) -> np.ndarray:
    """(n_presented,) int64 file columns; all of them, in order, when `channels` is None."""
    if channels is None:
        return np.arange(n_file_channels, dtype=np.int64)
    columns = np.asarray(channels)
    if columns.ndim != 1 or columns.size == 0 or columns.dtype.kind not in "iu":
        raise RecordingError(f"channels must be a non-empty list of file column indices, got {channels!r}")
    columns = columns.astype(np.int64)
    if columns.min() < 0 or columns.max() >= n_file_channels:
        raise RecordingError(
            f"channels name column {int(columns.max())}, but the file interleaves {n_file_channels} "
            f"(columns 0 to {n_file_channels - 1})"
        )
    return columns


def _checked_positions(positions, n_channels: int) -> np.ndarray:
    if positions is None:
        return linear_positions(n_channels)
    positions = np.asarray(positions, dtype=np.float64)  # (n_channels, 2) µm
    if positions.shape != (n_channels, 2):
        raise RecordingError(
            f"channel_positions must have shape ({n_channels}, 2) (x, y in µm per channel), "
            f"got shape {positions.shape}"
        )
    if not np.isfinite(positions).all():
        raise RecordingError("channel_positions contain NaN or inf: give every channel an x and y in µm")
    problem = duplicate_positions_problem(positions)
    if problem:
        raise RecordingError(problem)
    return positions


def _checked_sample_index(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise RecordingError(f"{name} must be a whole sample index, got {value!r}")
    if value < 0:
        raise RecordingError(f"{name} must be >= 0, got {value}")
    return int(value)


# -- reading ------------------------------------------------------------------

def _frames_in_file(path: Path, offset: int, n_channels: int, dtype: np.dtype) -> int:
    if not path.is_file():
        raise RecordingError(f"recording file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise RecordingError(f"{path} is empty (0 bytes): no samples to read")
    if offset >= size:
        raise RecordingError(
            f"offset {offset} bytes leaves no data in {path} ({size} bytes): "
            f"check the header size (offset)"
        )
    data_bytes = size - offset
    frame_bytes = n_channels * dtype.itemsize
    leftover = data_bytes % frame_bytes
    if leftover == 0:
        return data_bytes // frame_bytes
    message = (
        f"{path}: {data_bytes} bytes of data ({size} bytes minus offset {offset}) is not a whole "
        f"number of frames of {n_channels} channels x {dtype.itemsize} bytes ({dtype.name}) = "
        f"{frame_bytes} bytes; {leftover} bytes left over."
    )
    if data_bytes % dtype.itemsize:
        hint = f" It is not even a whole number of {dtype.name} samples: check dtype and offset."
    else:
        counts = _dividing_channel_counts(data_bytes // dtype.itemsize, n_channels)
        hint = (
            f" Channel counts that divide evenly: {', '.join(map(str, counts))}."
            " Check n_channels, dtype and offset (header size)."
        )
    raise RecordingError(message + hint)


def _dividing_channel_counts(n_values: int, requested: int, limit: int = 1024, shown: int = 10) -> list[int]:
    counts = [k for k in range(1, min(limit, n_values) + 1) if n_values % k == 0]
    nearest = sorted(counts, key=lambda k: abs(k - requested))[:shown]
    return sorted(nearest)


def release_rows(samples: np.ndarray, start: int, stop: int) -> None:
    """Drop rows [start, stop) of a read-only file map from this process's resident memory, once copied out.

    A sort reads each sample once or twice; the pages it read stay in the system's file cache, but mapped
    into the process they counted in its resident set until it held the whole file: a sort of a
    5-minute 32-channel recording grew by 1.1 GB while finding spikes, and a 2-hour Neuropixels file
    would show as hundreds of GB. Read again, a dropped page comes back from the file cache. Nothing
    to do for arrays in memory, for maps that are not time-major, or where the system has no madvise
    (Windows)."""
    mapping = getattr(samples, "_mmap", None)
    advise = getattr(mapping, "madvise", None)
    if advise is None or not samples.flags.c_contiguous or stop <= start:
        return
    # np.memmap maps the file from `offset` rounded down to the allocation granularity.
    array_start = int(getattr(samples, "offset", 0)) % mmap.ALLOCATIONGRANULARITY
    row_bytes = samples.strides[0]
    first = array_start + start * row_bytes
    first -= first % mmap.PAGESIZE  # madvise takes whole pages: a shared page goes too, and comes back if read
    last = array_start + stop * row_bytes
    try:
        advise(mmap.MADV_DONTNEED, first, last - first)
    except (OSError, ValueError):  # a closed map, or a range the system refuses: only memory is at stake
        pass


def _to_microvolts(block: np.ndarray, gain_to_uv) -> np.ndarray:
    """`gain_to_uv`: one number, or (c,) one per column of `block`."""
    microvolts = np.array(block, dtype=np.float32)  # (n, c) float32, a copy we may edit
    if block.dtype == np.uint16:
        microvolts -= 32768.0
    if np.ndim(gain_to_uv) or gain_to_uv != 1.0:
        microvolts *= np.asarray(gain_to_uv, dtype=np.float32)
    return microvolts


def _scan_for_nonfinite(recording: Recording) -> None:
    frame_bytes = recording.n_channels * recording.source_dtype.itemsize
    chunk = max(1, _SCAN_CHUNK_BYTES // frame_bytes)
    for start in range(0, recording.n_samples, chunk):
        recording.get_traces(start, start + chunk)


def _resolve_data_path(path: Path) -> Path:
    if path.is_dir():
        if not (path / "params.py").is_file():
            raise RecordingError(
                f"{path} is a folder without params.py: open the recording file itself"
            )
        path = path / "params.py"
    if not path.exists():
        raise RecordingError(f"recording file not found: {path}")
    if path.name == "params.py":
        values = _parse_params_py(path)
        names = _dat_paths(values)
        if not names:
            raise RecordingError(
                f"{path} names no raw data file (dat_path is missing or empty): open the recording file itself"
            )
        named = path.parent / names[0]  # an absolute dat_path stays as it is
        # A moved phy folder keeps a stale absolute dat_path; the file beside
        # params.py with that name is the data then.
        for data_path in (named, path.parent / named.name):
            if data_path.is_file():
                return data_path
        raise RecordingError(
            f"{path} names dat_path {names[0]!r}, but neither {named} nor {path.parent / named.name} exists: "
            f"fix dat_path or open the recording file itself"
        )
    if path.suffix.lower() == ".json":
        raise RecordingError(
            f"{path} is a parameter sidecar, not a recording: open the binary file beside it"
        )
    return path


def _open_npy(path: Path, params: dict) -> NumpyRecording:
    try:
        traces = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise RecordingError(f"{path} is not a readable .npy array ({error})") from error
    if traces.ndim != 2:
        raise RecordingError(
            f"{path} holds an array of shape {traces.shape}; a recording must be "
            f"(n_samples, n_channels): save it as traces[:, None] for one channel"
        )
    if "n_channels" in params and _checked_n_channels(params["n_channels"]) != traces.shape[1]:
        raise RecordingError(
            f"{path} has {traces.shape[1]} channels (shape {traces.shape}), but n_channels "
            f"{params['n_channels']} was given; a .npy file knows its own channel count, leave it out"
        )
    if "dtype" in params and _checked_dtype(params["dtype"]) != traces.dtype:
        raise RecordingError(
            f"{path} holds {traces.dtype.name} samples, but dtype {params['dtype']!r} was given; "
            f"a .npy file knows its own dtype, leave it out"
        )
    if params.get("offset", 0) != 0:
        raise RecordingError(
            f"offset {params['offset']} does not apply to .npy files (numpy reads their header); leave it out"
        )
    if "sampling_rate" not in params:
        raise RecordingError(
            f"{path}: missing sampling rate. Pass sampling_rate=... (CLI --sampling-rate), or write "
            f"{sidecar_path(path).name} beside it with {{\"sampling_rate\": <Hz>}}"
        )
    return NumpyRecording(
        traces,
        params["sampling_rate"],
        channel_positions=params.get("channel_positions"),
        path=path,
        gain_to_uv=params.get("gain_to_uv", 1.0),
    )


def _read_sidecar(path: Path) -> dict:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    try:
        values = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecordingError(f"sidecar {sidecar} is not valid JSON ({error}): fix or delete it") from error
    if not isinstance(values, dict):
        raise RecordingError(
            f"sidecar {sidecar} must hold a JSON object like {{\"sampling_rate\": 30000, ...}}"
        )
    return values


def _read_params_py_for(path: Path) -> tuple[dict, str]:
    """Parameters from a params.py beside `path`, if it describes this file.

    Returns (parameters, note): the note explains a params.py that was skipped.
    """
    params_file = path.parent / "params.py"
    if not params_file.is_file():
        return {}, ""
    values = _parse_params_py(params_file)
    names = [Path(name).name for name in _dat_paths(values)]
    # phy folders get moved between machines, so dat_path may be a stale
    # absolute path; the file name is what identifies the data file.
    if names and path.name not in names:
        return {}, f" ({params_file} describes {', '.join(names)}, not {path.name}, so it was not used.)"
    params = {ours: values[theirs] for theirs, ours in _PARAMS_PY_NAMES.items() if theirs in values}
    if "n_channels" in params:
        positions = _positions_from_phy_folder(params_file.parent, params["n_channels"])
        if positions is not None:
            params["channel_positions"] = positions
    return params, ""


def _parse_params_py(params_file: Path) -> dict:
    """The values we use from params.py (engine/io/params_py.py parses it without executing it)."""
    return read_params_py(params_file, RecordingError, keys=_PARAMS_PY_KEYS)


def _dat_paths(values: dict) -> list[str]:
    """The data files params.py names; an empty dat_path is phy's "no raw data"."""
    dat_path = values.get("dat_path") or []
    names = dat_path if isinstance(dat_path, (list, tuple)) else [dat_path]
    return [str(name) for name in names if str(name)]


def _positions_from_phy_folder(folder: Path, n_channels) -> np.ndarray | None:
    positions_file = folder / "channel_positions.npy"
    if not positions_file.is_file():
        return None
    n_channels = _checked_n_channels(n_channels)
    positions = np.load(positions_file, allow_pickle=False).astype(np.float64)  # (n_mapped, 2) µm
    map_file = folder / "channel_map.npy"
    channel_map = (np.load(map_file, allow_pickle=False).ravel().astype(np.int64)
                   if map_file.is_file() else np.arange(len(positions)))
    if positions.ndim != 2 or positions.shape[1] != 2 or len(channel_map) != len(positions):
        raise RecordingError(
            f"{positions_file} has shape {positions.shape} and channel_map.npy {len(channel_map)} "
            f"entries: expected (n_mapped, 2) positions, one per mapped channel"
        )
    if channel_map.size and (channel_map.min() < 0 or channel_map.max() >= n_channels):
        raise RecordingError(
            f"{map_file} names channel {int(channel_map.max())}, but the file has {n_channels} channels"
        )
    # Kilosort maps only the recorded electrodes; channels it leaves out (sync,
    # reference) keep the default layout so every channel has a position.
    full = linear_positions(n_channels)
    full[channel_map] = positions
    return full


def _missing_parameters_message(path: Path, missing: list[str], sidecar: dict, params_note: str) -> str:
    names = ", ".join(_PARAMETER_SOURCES[key][0] for key in missing)
    arguments = ", ".join(_PARAMETER_SOURCES[key][1] + "..." for key in missing)
    flags = ", ".join(_PARAMETER_SOURCES[key][2] for key in missing)
    keys = ", ".join(f'"{key}"' for key in missing)
    message = (
        f"{path}: missing {names}. Pass {arguments} (CLI {flags}), or write "
        f"{sidecar_path(path).name} beside it with the keys {keys}"
        f" (optional: \"offset\", \"gain_to_uv\", \"channel_positions\")."
    )
    unknown = sorted(set(sidecar) - set(_SIDECAR_KEYS))
    if unknown:
        message += f" The sidecar has keys this reader does not know: {', '.join(unknown)}."
    return message + params_note


# -- writing ------------------------------------------------------------------

def _choose_gain(traces: np.ndarray, dtype: np.dtype) -> float:
    if dtype.kind == "f":
        return 1.0
    # Non-finite samples are reported by the writer, with where they are.
    peak = float(np.max(np.abs(traces), initial=0.0, where=np.isfinite(traces)))
    if peak == 0.0:
        return 1.0
    return peak / (_INT_HEADROOM * np.iinfo(np.int16).max)


def _from_microvolts(traces: np.ndarray, gain: float, dtype: np.dtype) -> np.ndarray:
    scaled = traces / gain  # (n_samples, n_channels) float, in stored units
    if dtype.kind == "f":
        return scaled.astype(dtype)
    # Both int16 and uint16 hold 65536 levels centred on zero volts.
    limit = np.iinfo(np.int16)
    peak = float(np.max(np.abs(scaled)))
    if peak > limit.max:
        smallest_fitting_gain = gain * peak / limit.max
        raise RecordingError(
            f"with gain_to_uv {gain:g} the traces reach {peak:.0f} stored units, beyond the "
            f"{dtype.name} range (±{limit.max}): use gain_to_uv >= {smallest_fitting_gain:.4g}, "
            f"or leave it out to choose one automatically"
        )
    stored = np.rint(scaled)
    if dtype == np.uint16:
        stored += 32768
    return stored.astype(dtype)
