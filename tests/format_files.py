"""Small recordings in the formats labs record, written by hand for the tests (not by the readers under test)."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

# -- SpikeGLX: four AP channels in the acquisition, then four LF, then the sync word (id 8).
RATE = 30_000.0
AP_GAINS = [500, 1000, 500, 2000]
GEOMETRY = [(0, 43, 0), (0, 11, 0), (0, 59, 20), (0, 27, 20)]  # (shank, x µm, z µm) per acquired channel
RANGE_MAX, MAX_INT = 0.6, 512


def write_spikeglx(folder, samples, saved_ids, name="run_g0_t0.imec0.ap", geometry=True, extra=None, file_size=None):
    """samples: (n, len(saved_ids)) int16. Returns the .bin path."""
    folder.mkdir(parents=True, exist_ok=True)
    bin_path = folder / f"{name}.bin"
    samples.astype(np.int16).tofile(bin_path)
    imro = "(0,4)" + "".join(f"({c} 0 0 {g} 250 1)" for c, g in enumerate(AP_GAINS))
    lines = {
        "imSampRate": f"{RATE:g}",
        "nSavedChans": str(len(saved_ids)),
        "snsSaveChanSubset": ",".join(map(str, saved_ids)),
        "snsApLfSy": "4,0,1",
        "imAiRangeMax": str(RANGE_MAX),
        "imAiRangeMin": str(-RANGE_MAX),
        "imMaxInt": str(MAX_INT),
        "imDatPrb_pn": "NP1000",
        "typeThis": "imec",
        "fileSizeBytes": str(file_size if file_size is not None else bin_path.stat().st_size),
        "~imroTbl": imro,
        "~snsChanMap": "(4,4,1)" + "".join(f"(AP{c};{c}:{c})" for c in range(4)) + "(SY0;8:8)",
    }
    if geometry:
        lines["~snsGeomMap"] = "(NP1000,1,0,70)" + "".join(f"({s}:{x}:{z}:1)" for s, x, z in GEOMETRY)
    lines.update(extra or {})
    (folder / f"{name}.meta").write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return bin_path


def ramp(n_samples, n_columns):
    # (n, c) distinct values, so a wrong column or offset shows.
    return (np.arange(n_samples * n_columns).reshape(n_samples, n_columns) % 2000 - 1000).astype(np.int16)



# -- Open Ephys binary

BIT_VOLTS = 0.195  # µV per bit of an Intan headstage channel


def write_openephys(folder, streams):
    """streams: list of (stream_name, rate, samples (n, c) int16, channel units list or None)."""
    recording_folder = folder / "Record Node 101" / "experiment1" / "recording1"
    continuous = []
    for name, rate, samples, units in streams:
        n_channels = samples.shape[1]
        units = units or ["uV"] * n_channels
        channels = [
            {"channel_name": ("ADC" if unit == "V" else "CH") + str(i + 1),
             "bit_volts": BIT_VOLTS if unit == "uV" else 0.00015, "units": unit}
            for i, unit in enumerate(units)
        ]
        folder_name = f"Acquisition_Board-100.{name}/"
        continuous.append({"folder_name": folder_name, "sample_rate": rate, "stream_name": name,
                           "num_channels": n_channels, "channels": channels})
        data_folder = recording_folder / "continuous" / folder_name
        data_folder.mkdir(parents=True)
        samples.astype(np.int16).tofile(data_folder / "continuous.dat")
    recording_folder.mkdir(parents=True, exist_ok=True)
    (recording_folder / "structure.oebin").write_text(json.dumps({"GUI version": "0.6.7", "continuous": continuous}))
    return recording_folder


def samples_of(n, c, seed=0):
    return np.random.default_rng(seed).integers(-3000, 3000, size=(n, c)).astype(np.int16)



# -- NWB

def write_nwb(path, samples, rate, volts_per_bit, positions):
    """One ElectricalSeries of int16 samples with its electrodes' positions (rel_x, rel_y)."""
    pynwb = pytest.importorskip("pynwb")
    from pynwb.ecephys import ElectricalSeries

    nwb = pynwb.NWBFile(session_description="Sparsort test", identifier="sparsort-test",
                        session_start_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    device = nwb.create_device(name="probe")
    group = nwb.create_electrode_group(name="shank0", description="test shank", location="CA1", device=device)
    nwb.add_electrode_column(name="rel_x", description="x in µm")
    nwb.add_electrode_column(name="rel_y", description="y in µm")
    for x, y in positions:
        nwb.add_electrode(group=group, location="CA1", rel_x=float(x), rel_y=float(y))
    electrodes = nwb.create_electrode_table_region(list(range(len(positions))), "all electrodes")
    nwb.add_acquisition(ElectricalSeries(name="ElectricalSeries", data=samples, electrodes=electrodes, rate=rate,
                                         conversion=volts_per_bit))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path
