"""SpikeGLX recordings: `NAME.imec0.ap.bin` (or `.lf.bin`, `.nidq.bin`) with `NAME.….meta` beside it.

The .meta is plain `key=value` text; the .bin is int16 frames of `nSavedChans`
interleaved channels. Everything the engine needs comes from the .meta:

- sampling rate: `imSampRate` (Neuropixels), `niSampRate` (NI-DAQ);
- which channels were saved: `snsSaveChanSubset`, in the acquisition's channel
  ids, where an imec stream counts AP channels, then LF, then the sync word
  (`~snsChanMap`'s header gives the counts). The sync word is no voltage and is
  left out of sorting, as are NI-DAQ's digital words;
- µV per bit: `imAiRangeMax / imMaxInt / gain` x 1e6, with each channel's gain
  from `~imroTbl` (Neuropixels 1.0 stores an AP and an LF gain per channel;
  2.0 probes have one fixed gain), or `niAiRangeMax / niMaxInt / niMNGain` for NI-DAQ;
- geometry: `~snsGeomMap` (shank:x:z:used per channel), or, in older files
  without it, the probe type and `~imroTbl`'s electrodes through probeinterface.

Layout and key names follow SpikeGLX's own metadata guide
(billkarsh.github.io/SpikeGLX, "Metadata") and its readSGLX.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.io.recording import BinaryRecording, RecordingError

META_SUFFIX = ".meta"
BIN_SUFFIX = ".bin"
SAMPLE_DTYPE = np.dtype("int16")
BYTES_PER_SAMPLE = SAMPLE_DTYPE.itemsize
# Defaults SpikeGLX's readSGLX.py uses when an older .meta lacks the key.
DEFAULT_IM_MAX_INT = 512
DEFAULT_NI_MAX_INT = 32768
# Neuropixels 2.0 (and later) probes have one fixed gain, not stored per channel.
FIXED_NP2_GAIN = 80.0
NP1_IMRO_FIELDS = 6  # (channel bank refid apgain lfgain apfilt)


@dataclass
class SpikeGlxStream:
    """What one .meta says about its .bin, before any sample is read."""

    bin_path: Path
    meta_path: Path
    name: str  # "imec0.ap", "imec0.lf", "nidq"
    sampling_rate: float
    n_saved_channels: int
    sorted_columns: np.ndarray  # (n_sorted,) int64 columns of the .bin that hold voltages to sort
    gains_to_uv: np.ndarray  # (n_sorted,) float64 µV per bit
    positions: np.ndarray | None  # (n_sorted, 2) µm, or None when the .meta gives no geometry
    positions_source: str
    left_out: str  # what was not sorted and why, e.g. "sync channel 384"
    probe: str  # part number or kind, for the person


def is_spikeglx_path(path: Path) -> bool:
    """A .meta, or a .bin named like SpikeGLX's streams (the .meta may be missing: that is an error to report)."""
    name = path.name.lower()
    if path.suffix.lower() == META_SUFFIX:
        return True
    if path.suffix.lower() != BIN_SUFFIX:
        return False
    return path.with_suffix(META_SUFFIX).exists() or name.endswith((".ap.bin", ".lf.bin", ".nidq.bin"))


def spikeglx_streams_in(folder: Path) -> list[Path]:
    """The .meta files in `folder` or one level below: a probe folder, or a run folder (nidq) with its probe folders."""
    return sorted(folder.glob("*" + META_SUFFIX)) + sorted(folder.glob("*/*" + META_SUFFIX))


def stream_name_of(meta_path: Path) -> str:
    """"imec0.ap" from run_g0_t0.imec0.ap.meta, "nidq" from run_g0_t0.nidq.meta."""
    parts = meta_path.name[: -len(META_SUFFIX)].split(".")
    if len(parts) >= 3 and parts[-1] in ("ap", "lf"):
        return ".".join(parts[-2:])
    return parts[-1] if len(parts) >= 2 else "imec0.ap"


def open_spikeglx(path: str | Path) -> BinaryRecording:
    """The sorted channels of a SpikeGLX .bin in µV, memory-mapped (sync and digital channels left out)."""
    stream = read_spikeglx_stream(path)
    recording = BinaryRecording(
        stream.bin_path,
        sampling_rate=stream.sampling_rate,
        n_channels=stream.n_saved_channels,
        dtype=SAMPLE_DTYPE,
        gain_to_uv=stream.gains_to_uv,
        channel_positions=stream.positions,
        channels=stream.sorted_columns,
    )
    recording.format_name = f"SpikeGLX {stream.name} ({stream.probe})"
    recording.positions_source = stream.positions_source
    recording.notes.append(stream.left_out)
    return recording


def read_spikeglx_stream(path: str | Path) -> SpikeGlxStream:
    """Parse and check the .meta of `path` (the .bin or the .meta); raise RecordingError naming the fix."""
    bin_path, meta_path = _pair_of(Path(path))
    meta = read_meta(meta_path)
    n_saved = _int_field(meta, "nSavedChans", meta_path)
    _check_file_size(bin_path, meta_path, meta, n_saved)
    channel_ids = saved_channel_ids(meta, n_saved, meta_path)
    name = stream_name_of(meta_path)
    if meta.get("typeThis", "imec" if "imSampRate" in meta else "nidq") == "nidq":
        return _nidq_stream(bin_path, meta_path, meta, n_saved, channel_ids, name)
    return _imec_stream(bin_path, meta_path, meta, n_saved, channel_ids, name)


def read_meta(meta_path: Path) -> dict[str, str]:
    """The .meta's `key=value` lines; `~` keys (tables) keep their tilde."""
    try:
        text = meta_path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise RecordingError(f"cannot read {meta_path}: {error}") from error
    meta = {}
    for line in text.splitlines():
        key, separator, value = line.partition("=")
        if separator:
            meta[key.strip()] = value.strip()
    return meta


def saved_channel_ids(meta: dict, n_saved: int, meta_path: Path) -> np.ndarray:
    """(n_saved,) int64 acquisition id of each column of the .bin, from `snsSaveChanSubset`."""
    subset = meta.get("snsSaveChanSubset", "all").strip()
    if subset == "all":
        return np.arange(n_saved, dtype=np.int64)
    ids = []
    try:
        for part in subset.split(","):
            first, _, last = part.partition(":")
            ids.extend(range(int(first), int(last or first) + 1))
    except ValueError as error:
        raise RecordingError(
            f"{meta_path}: snsSaveChanSubset={subset!r} is not a list like 0:383,768 ({error}): fix the .meta"
        ) from error
    if len(ids) != n_saved:
        raise RecordingError(
            f"{meta_path}: snsSaveChanSubset names {len(ids)} channels but nSavedChans={n_saved}: "
            f"the .meta is inconsistent; restore it from the recording"
        )
    return np.asarray(ids, dtype=np.int64)


# -- imec (Neuropixels) -------------------------------------------------------

def _imec_stream(bin_path, meta_path, meta, n_saved, channel_ids, name) -> SpikeGlxStream:
    sampling_rate = _float_field(meta, "imSampRate", meta_path)
    n_ap, n_lf = _imec_channel_counts(meta, meta_path)
    is_voltage = channel_ids < n_ap + n_lf  # (n_saved,) sync ids come after AP and LF
    columns = np.flatnonzero(is_voltage)
    if columns.size == 0:
        raise RecordingError(f"{meta_path}: the .bin holds only the sync channel (ids {channel_ids.tolist()}): nothing to sort")
    ids = channel_ids[columns]
    imro = _table_entries(meta.get("~imroTbl", ""))
    ap_gains, lf_gains = _imro_gains(meta, imro[1:], n_ap, meta_path)
    gains = np.where(ids < n_ap, ap_gains[np.minimum(ids, n_ap - 1)], lf_gains[np.clip(ids - n_ap, 0, n_ap - 1)])
    volts_per_bit = _float_field(meta, "imAiRangeMax", meta_path) / float(meta.get("imMaxInt", DEFAULT_IM_MAX_INT))
    probe = meta.get("imDatPrb_pn") or (f"type {imro[0].split(',')[0]}" if imro else "Neuropixels")
    positions, source = _imec_positions(meta, meta_path, ids, n_ap)
    sync = np.flatnonzero(~is_voltage)
    left_out = (f"sync channel{'s' if len(sync) > 1 else ''} {', '.join(map(str, sync))} of {n_saved} left out"
                if len(sync) else "no sync channel saved")
    return SpikeGlxStream(bin_path, meta_path, name, sampling_rate, n_saved, columns,
                          volts_per_bit / gains * 1e6, positions, source, left_out, probe)


def _imec_channel_counts(meta: dict, meta_path: Path) -> tuple[int, int]:
    """(AP, LF) channels in the acquisition's numbering; the sync word follows them."""
    chan_map = _table_entries(meta.get("~snsChanMap", ""))
    if chan_map:
        counts = [int(value) for value in chan_map[0].split(",")]
        if len(counts) == 3:
            return counts[0], counts[1]
    if "snsApLfSy" in meta:
        # Without the channel map, the stream's own counts: an .ap.bin numbers AP then sync.
        ap, lf, _sync = (int(value) for value in meta["snsApLfSy"].split(","))
        return ap, lf
    raise RecordingError(
        f"{meta_path} has neither ~snsChanMap nor snsApLfSy, so the sync channel cannot be told apart: "
        f"restore the .meta SpikeGLX wrote"
    )


def _imro_gains(meta: dict, entries: list[str], n_ap: int, meta_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(n_ap,) AP and (n_ap,) LF gains of each acquired channel."""
    fields = [entry.split() for entry in entries]
    if fields and all(len(f) == NP1_IMRO_FIELDS for f in fields):
        if len(fields) < n_ap:
            raise RecordingError(
                f"{meta_path}: ~imroTbl has {len(fields)} channel entries, ~snsChanMap {n_ap} AP channels: "
                f"the .meta is inconsistent; restore it from the recording"
            )
        ap = np.array([float(f[3]) for f in fields[:n_ap]])
        lf = np.array([float(f[4]) for f in fields[:n_ap]])
    else:
        ap = np.full(n_ap, float(meta.get("imChan0apGain", FIXED_NP2_GAIN)))
        lf = np.full(n_ap, float(meta.get("imChan0lfGain", FIXED_NP2_GAIN)))
    if np.any(ap <= 0) or np.any(lf <= 0):
        raise RecordingError(f"{meta_path}: ~imroTbl has a gain <= 0: restore the .meta SpikeGLX wrote")
    return ap, lf


def _imec_positions(meta: dict, meta_path: Path, ids: np.ndarray, n_ap: int) -> tuple[np.ndarray | None, str]:
    geometry = _table_entries(meta.get("~snsGeomMap", ""))
    if geometry:
        _part, n_shanks, shank_spacing, _width = geometry[0].split(",")
        entries = [[float(v) for v in entry.split(":")[:3]] for entry in geometry[1:]]
        table = np.asarray(entries).reshape(-1, 3)  # (n_entries, 3) shank, x µm within shank, z µm
        if len(table) == len(ids):
            rows = table  # one entry per saved neural channel, in file order
        elif len(table) == n_ap:
            rows = table[ids % n_ap]  # one entry per acquired channel: LF ids share the AP electrode
        else:
            raise RecordingError(
                f"{meta_path}: ~snsGeomMap has {len(table)} entries for {len(ids)} saved channels "
                f"({n_ap} acquired): the .meta is inconsistent; restore it, or pass a probe file (--probe)"
            )
        positions = np.column_stack([rows[:, 0] * float(shank_spacing) + rows[:, 1], rows[:, 2]])
        return positions, "~snsGeomMap"
    return _positions_from_probe_type(meta_path, len(ids))


def _positions_from_probe_type(meta_path: Path, n_sorted: int) -> tuple[np.ndarray | None, str]:
    # Older .meta files carry no geometry; probeinterface knows each part number's layout.
    try:
        from probeinterface import read_spikeglx

        probe = read_spikeglx(meta_path)
    except Exception as error:  # noqa: BLE001 - any failure only means "no geometry", said to the person
        return None, f"none in the .meta ({type(error).__name__}: {error}); default line, pass --probe FILE"
    positions = np.asarray(probe.contact_positions, dtype=np.float64)[:, :2]
    if len(positions) != n_sorted:
        return None, (f"none in the .meta (the probe type gives {len(positions)} contacts for {n_sorted} "
                      f"channels); default line, pass --probe FILE")
    return positions, f"probe type {probe.annotations.get('part_number') or 'in ~imroTbl'} (probeinterface)"


# -- NI-DAQ -------------------------------------------------------------------

def _nidq_stream(bin_path, meta_path, meta, n_saved, channel_ids, name) -> SpikeGlxStream:
    sampling_rate = _float_field(meta, "niSampRate", meta_path)
    counts = [int(value) for value in meta.get("snsMnMaXaDw", f"0,0,{n_saved},0").split(",")]
    mn, ma, xa, _dw = counts
    volts_per_bit = _float_field(meta, "niAiRangeMax", meta_path) / float(meta.get("niMaxInt", DEFAULT_NI_MAX_INT))
    # Neural inputs (multiplexed MN, MA) when there are any; else the analog XA inputs.
    neural = channel_ids < mn + ma
    chosen = neural if neural.any() else channel_ids < mn + ma + xa
    columns = np.flatnonzero(chosen)
    if columns.size == 0:
        raise RecordingError(f"{meta_path}: the .bin holds only digital words (snsMnMaXaDw={counts}): nothing to sort")
    ids = channel_ids[columns]
    gains = np.where(ids < mn, float(meta.get("niMNGain", 1.0)),
                     np.where(ids < mn + ma, float(meta.get("niMAGain", 1.0)), 1.0))
    left = n_saved - len(columns)
    left_out = (f"{left} of {n_saved} channels left out (digital{' and analog aux' if neural.any() and xa else ''})"
                if left else "no channel left out")
    return SpikeGlxStream(bin_path, meta_path, name, sampling_rate, n_saved, columns,
                          volts_per_bit / gains * 1e6, None, "none in a NI-DAQ .meta; default line, pass --probe FILE",
                          left_out, "NI-DAQ")


# -- checks -------------------------------------------------------------------

def _pair_of(path: Path) -> tuple[Path, Path]:
    """(bin, meta) for a path to either; both must exist."""
    if path.suffix.lower() == META_SUFFIX:
        meta_path, bin_path = path, path.with_suffix(BIN_SUFFIX)
        if not meta_path.is_file():
            raise RecordingError(f"SpikeGLX metadata file not found: {meta_path}")
        if not bin_path.is_file():
            raise RecordingError(
                f"{meta_path.name} has no {bin_path.name} beside it in {meta_path.parent}: SpikeGLX writes the "
                f"samples to the .bin; copy {bin_path.name} next to the .meta (same name)"
            )
        return bin_path, meta_path
    bin_path, meta_path = path, path.with_suffix(META_SUFFIX)
    if not bin_path.is_file():
        raise RecordingError(f"recording file not found: {bin_path}")
    if not meta_path.is_file():
        raise RecordingError(
            f"{bin_path.name} has no {meta_path.name} beside it in {bin_path.parent}: the .meta holds the sampling "
            f"rate, channel count and gains SpikeGLX wrote; copy it next to the .bin (same name), or open the .bin "
            f"as a raw binary by giving --fs, --n-channels and --dtype int16 (a .json sidecar)"
        )
    return bin_path, meta_path


def _check_file_size(bin_path: Path, meta_path: Path, meta: dict, n_saved: int) -> None:
    size = bin_path.stat().st_size
    frame = n_saved * BYTES_PER_SAMPLE
    expected = int(meta["fileSizeBytes"]) if "fileSizeBytes" in meta else None
    if expected is not None and size != expected:
        raise RecordingError(
            f"{bin_path.name} is {size:,} bytes ({size / frame:,.2f} frames of {n_saved} channels x 2 bytes), but "
            f"{meta_path.name} says fileSizeBytes={expected:,} ({expected // frame:,} frames, "
            f"{expected // frame / _rate_or_nan(meta):.3f} s): the .bin was cut short or belongs to another .meta. "
            f"Copy the .bin again; if it was trimmed on purpose, set fileSizeBytes={size} in the .meta"
        )
    if size % frame:
        raise RecordingError(
            f"{bin_path.name} is {size:,} bytes, not a whole number of frames of nSavedChans={n_saved} x 2 bytes "
            f"({size % frame} bytes left over): the .bin was cut short or the .meta belongs to another file; "
            f"copy the .bin again"
        )


def _rate_or_nan(meta: dict) -> float:
    for key in ("imSampRate", "niSampRate"):
        try:
            return float(meta[key])
        except (KeyError, ValueError):
            continue
    return float("nan")


def _table_entries(value: str) -> list[str]:
    """"(a)(b)(c)" -> ["a", "b", "c"]: SpikeGLX's `~` tables."""
    value = value.strip()
    if not value.startswith("("):
        return []
    return value[1:-1].split(")(") if value.endswith(")") else value[1:].split(")(")


def _int_field(meta: dict, key: str, meta_path: Path) -> int:
    value = _float_field(meta, key, meta_path)
    if not value.is_integer() or value <= 0:
        raise RecordingError(f"{meta_path}: {key}={meta[key]!r} is not a positive whole number: fix the .meta")
    return int(value)


def _float_field(meta: dict, key: str, meta_path: Path) -> float:
    if key not in meta:
        raise RecordingError(f"{meta_path} has no {key}=…: the .meta is incomplete; restore the one SpikeGLX wrote")
    try:
        return float(meta[key])
    except ValueError as error:
        raise RecordingError(f"{meta_path}: {key}={meta[key]!r} is not a number: fix the .meta") from error
