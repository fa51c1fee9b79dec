"""Which reader opens a path: what labs record, told apart by the files themselves.

    NAME.ap.bin + NAME.ap.meta, or their folder  -> SpikeGLX (engine/io/spikeglx.py)
    structure.oebin, or a folder holding one     -> Open Ephys binary (engine/io/openephys.py)
    .nwb, .rhd, .rhs, .ns5, .plx, ...            -> SpikeInterface, if installed (engine/io/spikeinterface_adapter.py)
    anything else                                -> raw binary / .npy / phy params.py (engine/io/recording.py)
"""

from __future__ import annotations

from pathlib import Path

from engine.io import openephys, spikeglx, spikeinterface_adapter
from engine.io.recording import Recording, RecordingError

SPIKEGLX, OPEN_EPHYS, SPIKEINTERFACE = "SpikeGLX", "Open Ephys", "SpikeInterface"


def recording_format(path: str | Path, raw_parameters_given: bool = False) -> str | None:
    """SPIKEGLX, OPEN_EPHYS, SPIKEINTERFACE, or None for a raw binary, .npy or phy folder.

    A SpikeGLX-named .bin without its .meta is still read as a raw binary when
    its parameters are given (`raw_parameters_given`) or a `<stem>.json` sidecar says them.
    """
    path = Path(path)
    meta_missing = path.suffix.lower() == spikeglx.BIN_SUFFIX and not path.with_suffix(spikeglx.META_SUFFIX).exists()
    if meta_missing and (raw_parameters_given or path.with_suffix(".json").is_file()):
        return None
    if path.is_dir() and (path / "params.py").is_file():
        return None
    if spikeinterface_adapter.is_spikeinterface_path(path):
        return SPIKEINTERFACE
    if path.is_dir():
        if spikeglx.spikeglx_streams_in(path):
            return SPIKEGLX
        return OPEN_EPHYS if openephys.is_openephys_path(path) else None
    if spikeglx.is_spikeglx_path(path):
        return SPIKEGLX
    if openephys.is_openephys_path(path):
        return OPEN_EPHYS
    return None


def open_lab_recording(path: str | Path, stream: str | None = None, raw_parameters_given: bool = False) -> Recording | None:
    """The recording at `path` if it is in a format that describes itself, else None."""
    path = Path(path)
    kind = recording_format(path, raw_parameters_given)
    if kind == SPIKEGLX:
        return spikeglx.open_spikeglx(_spikeglx_file(path, stream))
    if kind == OPEN_EPHYS:
        return openephys.open_openephys(path, stream)
    if kind == SPIKEINTERFACE:
        return spikeinterface_adapter.open_with_spikeinterface(path, stream)
    return None


def _spikeglx_file(path: Path, stream: str | None) -> Path:
    """The .meta to open: `path` itself, or the stream chosen in a SpikeGLX folder (the only AP band by default)."""
    if not path.is_dir():
        if stream is not None and spikeglx.stream_name_of(path.with_suffix(spikeglx.META_SUFFIX)) != stream:
            raise RecordingError(
                f"{path.name} is stream {spikeglx.stream_name_of(path.with_suffix(spikeglx.META_SUFFIX))!r}, "
                f"not {stream!r}: open the file of that stream, or leave the stream out"
            )
        return path
    metas = spikeglx.spikeglx_streams_in(path)
    names = _named_streams(metas)
    if stream is not None:
        if stream not in names:
            raise RecordingError(
                f"{path} has no SpikeGLX stream {stream!r}; it has {', '.join(map(repr, names))}: "
                f"pass one of these (--stream NAME)"
            )
        return names[stream]
    ap_bands = [meta for name, meta in names.items() if name.endswith(".ap")]
    if len(metas) == 1:
        return metas[0]
    if len(ap_bands) == 1:
        return ap_bands[0]
    raise RecordingError(
        f"{path} holds {len(metas)} SpikeGLX streams ({', '.join(map(repr, names))}): "
        f"choose one with stream=NAME (CLI --stream NAME), or open its .bin"
    )


def stream_choices(path: str | Path) -> list[tuple[str, str]]:
    """(name, what it holds) of each stream, when `path` holds several and none is the default; else [].

    What the app asks the person to choose from. Other problems (an unreadable
    file) are left for opening to report.
    """
    path = Path(path)
    kind = recording_format(path)
    if kind == SPIKEGLX and path.is_dir():
        named = _named_streams(spikeglx.spikeglx_streams_in(path))
        if len(named) <= 1 or sum(name.endswith(".ap") for name in named) == 1:
            return []
        return [(name, _describe_meta(meta)) for name, meta in named.items()]
    if kind == OPEN_EPHYS:
        try:
            structure, stream = openephys.structure_and_stream(path, None)
            streams = openephys.read_streams(structure)
        except RecordingError:
            return []
        if stream is not None:
            return []
        try:
            openephys.choose_stream(streams, None, structure)
            return []
        except RecordingError:
            return [(s.name, f"{s.sampling_rate:g} Hz, {s.n_channels} channels") for s in streams]
    return []


def _describe_meta(meta_path: Path) -> str:
    meta = spikeglx.read_meta(meta_path)
    rate = meta.get("imSampRate") or meta.get("niSampRate") or "?"
    return f"{float(rate):g} Hz, {meta.get('nSavedChans', '?')} saved channels" if rate != "?" else "unknown rate"


def _named_streams(metas: list[Path]) -> dict[str, Path]:
    """{"imec0.ap": meta, ...}; the file names instead when two files share a stream (several gates or triggers)."""
    names = [spikeglx.stream_name_of(meta) for meta in metas]
    if len(set(names)) < len(names):
        names = [meta.name[: -len(spikeglx.META_SUFFIX)] for meta in metas]
    return dict(zip(names, metas))
