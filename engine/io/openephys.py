"""Open Ephys binary recordings: a folder with `structure.oebin` and `continuous/<stream>/continuous.dat`.

structure.oebin is JSON; its "continuous" list describes each stream: the
folder under continuous/, "sample_rate", "num_channels", and per channel
"bit_volts" with its "units" (µV for electrodes, V for ADC inputs).
continuous.dat is int16 frames of num_channels interleaved channels.

A record node may hold several streams (a Neuropixels probe's AP and LFP bands,
a second probe, the NI-DAQ): the AP band is chosen by default, and when that
is ambiguous the error lists the streams to choose from (`stream=`, CLI `--stream`).
Electrode channels (in µV) are sorted; ADC and AUX inputs are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.io.recording import BinaryRecording, RecordingError

STRUCTURE_FILE = "structure.oebin"
DATA_FILE = "continuous.dat"
SAMPLE_DTYPE = np.dtype("int16")
# Open Ephys's names for inputs that are not electrodes.
NON_ELECTRODE_PREFIXES = ("ADC", "AUX")
_TO_MICROVOLTS = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6}
# How deep below a chosen folder (Record Node/experiment/recording) to look for structure.oebin.
SEARCH_DEPTH = 4


@dataclass
class OpenEphysStream:
    name: str  # stream_name, or the folder name in older files
    folder: Path  # continuous/<folder_name>
    sampling_rate: float
    n_channels: int
    channel_names: list[str]
    gains_to_uv: np.ndarray  # (n_channels,) float64 µV per bit; NaN where the units are unknown
    is_electrode: np.ndarray  # (n_channels,) bool


def is_openephys_path(path: Path) -> bool:
    if path.name == STRUCTURE_FILE:
        return True
    if path.is_dir():
        return bool(find_structure_files(path))
    return path.name == DATA_FILE and _structure_above(path) is not None


def find_structure_files(folder: Path) -> list[Path]:
    """structure.oebin files in `folder` or up to SEARCH_DEPTH levels below it."""
    found = []
    for depth in range(SEARCH_DEPTH + 1):
        found += sorted(folder.glob("/".join(["*"] * depth + [STRUCTURE_FILE])))
    return found


def read_streams(structure_path: Path) -> list[OpenEphysStream]:
    """Every continuous stream structure.oebin describes (their data is not opened)."""
    try:
        structure = json.loads(structure_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordingError(f"{structure_path} is not readable JSON ({error}): restore the file Open Ephys wrote") from error
    entries = structure.get("continuous") if isinstance(structure, dict) else None
    if not entries:
        raise RecordingError(f"{structure_path} lists no continuous streams: this recording holds no traces to sort")
    return [_stream(entry, structure_path) for entry in entries]


def open_openephys(path: str | Path, stream: str | None = None) -> BinaryRecording:
    """The electrode channels of one stream, in µV, memory-mapped."""
    structure_path, stream = structure_and_stream(Path(path), stream)
    chosen = choose_stream(read_streams(structure_path), stream, structure_path)
    data_path = chosen.folder / DATA_FILE
    if not data_path.is_file():
        raise RecordingError(
            f"{structure_path} names stream {chosen.name!r} in folder {chosen.folder.relative_to(structure_path.parent)}, "
            f"but {data_path} does not exist: copy the whole recording folder (continuous/ with its "
            f"continuous.dat files), or choose another stream"
        )
    columns = np.flatnonzero(chosen.is_electrode)
    if columns.size == 0:
        columns = np.arange(chosen.n_channels)
    gains = chosen.gains_to_uv[columns]
    if np.isnan(gains).any():
        bad = chosen.channel_names[int(columns[np.isnan(gains)][0])]
        raise RecordingError(
            f"{structure_path}: channel {bad!r} of stream {chosen.name!r} has units Sparsort does not know "
            f"(µV, mV or V expected): fix its \"units\" in structure.oebin"
        )
    recording = BinaryRecording(data_path, sampling_rate=chosen.sampling_rate, n_channels=chosen.n_channels,
                                dtype=SAMPLE_DTYPE, gain_to_uv=gains, channels=columns)
    recording.format_name = f"Open Ephys {chosen.name}"
    left = chosen.n_channels - len(columns)
    if left:
        recording.notes.append(f"{left} of {chosen.n_channels} channels left out (ADC/AUX inputs)")
    return recording


def choose_stream(streams: list[OpenEphysStream], wanted: str | None, structure_path: Path) -> OpenEphysStream:
    """`wanted` by name; else the only stream, the only AP band, or the only fastest stream."""
    if wanted is not None:
        matches = [s for s in streams if wanted in (s.name, s.folder.name)]
        if not matches:
            raise RecordingError(
                f"{structure_path} has no stream {wanted!r}; it has: {describe_streams(streams)}. "
                f"Pass one of these names (--stream NAME)"
            )
        return matches[0]
    if len(streams) == 1:
        return streams[0]
    ap_bands = [s for s in streams if s.name.upper().endswith("-AP")]
    if len(ap_bands) == 1:
        return ap_bands[0]
    candidates = ap_bands or streams
    fastest = max(s.sampling_rate for s in candidates)
    at_fastest = [s for s in candidates if s.sampling_rate == fastest]
    if len(at_fastest) == 1:
        return at_fastest[0]
    raise RecordingError(
        f"{structure_path} holds {len(streams)} streams and more than one could be the one to sort: "
        f"{describe_streams(streams)}. Choose one with stream=NAME (CLI --stream NAME)"
    )


def describe_streams(streams: list[OpenEphysStream]) -> str:
    return "; ".join(f"{s.name!r} ({s.sampling_rate:g} Hz, {s.n_channels} channels)" for s in streams)


def structure_and_stream(path: Path, stream: str | None) -> tuple[Path, str | None]:
    """(structure.oebin, stream) for a path to it, its folder (or one above), or a stream's continuous.dat."""
    if path.name == STRUCTURE_FILE:
        if not path.is_file():
            raise RecordingError(f"Open Ephys structure file not found: {path}")
        return path, stream
    if path.name == DATA_FILE:
        structure = _structure_above(path)
        if structure is None:
            raise RecordingError(
                f"{path} has no {STRUCTURE_FILE} two folders up: open the Open Ephys recording folder "
                f"(the one with {STRUCTURE_FILE}), or open the .dat as a raw binary with --fs, --n-channels, --dtype"
            )
        return structure, stream or path.parent.name
    found = find_structure_files(path)
    if len(found) == 1:
        return found[0], stream
    if not found:
        raise RecordingError(f"{path} holds no {STRUCTURE_FILE} (looked {SEARCH_DEPTH} folders deep)")
    listed = ", ".join(str(f.parent.relative_to(path)) for f in found)
    raise RecordingError(
        f"{path} holds {len(found)} Open Ephys recordings ({listed}): open one of these folders"
    )


def _structure_above(data_path: Path) -> Path | None:
    candidate = data_path.parent.parent.parent / STRUCTURE_FILE  # recording/continuous/<stream>/continuous.dat
    return candidate if candidate.is_file() else None


def _stream(entry: dict, structure_path: Path) -> OpenEphysStream:
    try:
        folder_name = str(entry["folder_name"]).strip("/")
        sampling_rate = float(entry["sample_rate"])
        n_channels = int(entry["num_channels"])
        channels = entry.get("channels") or []
    except (KeyError, TypeError, ValueError) as error:
        raise RecordingError(
            f"{structure_path}: a continuous stream lacks folder_name, sample_rate or num_channels ({error!r}): "
            f"restore the file Open Ephys wrote"
        ) from error
    name = str(entry.get("stream_name") or folder_name)
    if len(channels) != n_channels:
        raise RecordingError(
            f"{structure_path}: stream {name!r} says num_channels={n_channels} but describes {len(channels)} "
            f"channels: restore the file Open Ephys wrote"
        )
    names = [str(c.get("channel_name", f"CH{i + 1}")) for i, c in enumerate(channels)]
    gains = np.array([float(c.get("bit_volts", 1.0)) * _TO_MICROVOLTS.get(str(c.get("units", "uV")).strip().lower(),
                                                                            np.nan) for c in channels])
    is_electrode = np.array([
        str(c.get("units", "uV")).strip().lower() in ("uv", "µv", "μv") and not n.upper().startswith(NON_ELECTRODE_PREFIXES)
        for c, n in zip(channels, names)
    ], dtype=bool)
    return OpenEphysStream(name, structure_path.parent / "continuous" / folder_name, sampling_rate, n_channels,
                           names, gains, is_electrode)
