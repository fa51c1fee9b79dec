"""Probe files: where each recording channel sits, from probeinterface JSON or a .prb.

probeinterface (a small, pure-Python package) reads both formats; we turn its
probes into one (n_channels, 2) µm array in recording channel order, using
each contact's device channel index (the wiring) when the file gives one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.io.recording import Recording, RecordingError

PROBE_SUFFIXES = (".json", ".prb")
# Probes of one file drawn on top of each other (a .prb's tetrodes, each at the
# origin) are set this far apart side by side, so no channel of one is a neighbour of another's.
PROBE_SEPARATION_UM = 500.0


def read_probe_positions(path: str | Path, n_channels: int) -> np.ndarray:
    """(n_channels, 2) µm position of each recording channel, from a probe file.

    Raises RecordingError when the file cannot be read or wires a different
    number of channels than the recording has.
    """
    probes = _read_probes(Path(path))
    positions, device_channels = [], []
    x_offset = None
    for probe in probes:
        xy = np.asarray(probe.contact_positions, dtype=np.float64)[:, :2]  # (n_contacts, 2) µm
        if x_offset is not None and xy[:, 0].min() <= x_offset:
            xy = xy + [x_offset + PROBE_SEPARATION_UM - xy[:, 0].min(), 0.0]
        x_offset = xy[:, 0].max() if x_offset is None else max(x_offset, xy[:, 0].max())
        positions.append(xy)
        wiring = probe.device_channel_indices
        device_channels.append(np.full(len(xy), -2) if wiring is None else np.asarray(wiring, dtype=np.int64))
    positions = np.concatenate(positions)  # (n_contacts, 2) µm
    wiring = np.concatenate(device_channels)  # (n_contacts,) -1 unwired, -2 no wiring given
    if np.all(wiring == -2):
        wiring = np.arange(len(positions))  # no wiring: contacts are listed in channel order
    wired = wiring >= 0
    _check_channel_count(Path(path), wiring[wired], n_channels)
    ordered = np.empty((n_channels, 2), dtype=np.float64)
    ordered[wiring[wired]] = positions[wired]
    return ordered


def apply_probe(recording: Recording, path: str | Path) -> Recording:
    """Give `recording` the channel positions of a probe file (in place) and return it."""
    positions = read_probe_positions(path, recording.n_channels)
    recording.set_channel_positions(positions, f"probe file {Path(path).name}")
    return recording


def _read_probes(path: Path) -> list:
    if not path.is_file():
        raise RecordingError(f"probe file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in PROBE_SUFFIXES:
        raise RecordingError(
            f"{path.name}: a probe file is probeinterface JSON (.json) or a .prb, not {suffix or 'a file without suffix'}"
        )
    from probeinterface import read_prb, read_probeinterface

    try:
        group = read_prb(path) if suffix == ".prb" else read_probeinterface(path)
    except Exception as error:  # noqa: BLE001 - probeinterface raises many kinds; the person needs the file named
        raise RecordingError(
            f"{path} is not a readable {'.prb' if suffix == '.prb' else 'probeinterface JSON'} probe file "
            f"({type(error).__name__}: {error}); write it with probeinterface (write_probeinterface or write_prb)"
        ) from error
    if not group.probes:
        raise RecordingError(f"{path} describes no probe")
    return list(group.probes)


def _check_channel_count(path: Path, wired: np.ndarray, n_channels: int) -> None:
    if len(wired) != n_channels:
        raise RecordingError(
            f"probe file {path.name} places {len(wired)} channels, but the recording has {n_channels}: "
            f"use the probe file that describes this recording (one contact per recorded channel, "
            f"sync and auxiliary channels excluded)"
        )
    if len(np.unique(wired)) != len(wired) or wired.min() < 0 or wired.max() >= n_channels:
        raise RecordingError(
            f"probe file {path.name} wires its contacts to channels {sorted(set(wired.tolist()))[:8]}…, "
            f"not to each of the recording's channels 0 to {n_channels - 1} once: fix device_channel_indices"
        )
