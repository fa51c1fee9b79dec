import numpy as np
import pytest

from engine.io import phy as phy_io
from engine.io.phy import (
    PhyFolderError,
    centred_templates,
    export_phy,
    load_phy,
    template_similarity,
    write_cluster_groups,
    write_cluster_info,
    write_spike_clusters,
)
from engine.io.recording import BinaryRecording, NumpyRecording
from engine.pipeline.sorting import Sorting

RATE = 30000.0
N_CHANNELS = 4
N_SAMPLES = 30000  # one second


@pytest.fixture
def sorting():
    rng = np.random.default_rng(0)
    templates = np.zeros((3, 21, N_CHANNELS), dtype=np.float32)  # (units, taps, channels) µV
    for unit, peak in enumerate([5, 10, 15]):  # peaks at different taps, to test centring
        templates[unit, :, unit] = -np.exp(-0.5 * ((np.arange(21) - peak) / 2.0) ** 2) * (50 + 20 * unit)
    spike_times = np.sort(rng.choice(np.arange(100, N_SAMPLES - 100), 300, replace=False))
    return Sorting(
        spike_times=spike_times,
        spike_units=rng.integers(0, 3, 300),
        amplitudes=rng.uniform(40, 80, 300),
        templates=templates,
        sampling_rate=RATE,
    )


@pytest.fixture
def traces():
    return np.random.default_rng(1).normal(0, 20, (N_SAMPLES, N_CHANNELS)).astype(np.float32)  # µV


def test_phy_opens_our_export(tmp_path, sorting, traces):
    from phylib.io.model import load_model

    folder = export_phy(sorting, tmp_path / "phy", NumpyRecording(traces, RATE), cluster_groups={1: "good"})
    model = load_model(folder / "params.py")
    try:
        assert model.n_spikes == sorting.n_spikes
        np.testing.assert_array_equal(model.cluster_ids, [0, 1, 2])
        np.testing.assert_array_equal(model.spike_clusters, sorting.spike_units)
        assert model.sample_rate == RATE
        assert model.sparse_templates.data.shape == (3, 21 + 10, N_CHANNELS)
        assert model.similar_templates.shape == (3, 3)
        assert model.traces.shape == (N_SAMPLES, N_CHANNELS)
        assert model.metadata["group"][1] == "good"
        assert model.metadata["group"][0] == "unsorted"
    finally:
        model.close()


def test_templates_are_centred_on_their_peaks(sorting):
    centred = centred_templates(sorting.templates, sorting.template_peak_taps)
    # Peaks at taps 5, 10, 15 of 21: the widest reach is 15 taps before and 15 after.
    assert centred.shape == (3, 31, N_CHANNELS)
    for unit in range(3):
        assert np.abs(centred[unit, :, unit]).argmax() == 15


def test_similarity_ignores_shifts():
    rng = np.random.default_rng(4)
    shape = rng.normal(size=(12, 3))
    templates = np.zeros((3, 20, 3), dtype=np.float32)
    templates[0, 2:14] = shape
    templates[1, 7:19] = 3 * shape  # same shape, later and larger
    templates[2, :, :] = rng.normal(size=(20, 3))
    similarity = template_similarity(templates, block_size=2)
    np.testing.assert_allclose(np.diag(similarity), 1.0, rtol=1e-5)
    assert similarity[0, 1] == pytest.approx(1.0, rel=1e-5) and similarity[1, 0] == pytest.approx(1.0, rel=1e-5)
    assert similarity[0, 2] < 0.9


def test_round_trip_through_load_phy(tmp_path, sorting, traces):
    folder = export_phy(sorting, tmp_path / "phy", NumpyRecording(traces, RATE), cluster_groups={2: "noise"})
    loaded = load_phy(folder)
    assert loaded.missing_data_reason is None
    # recording.dat is int16: exact to half a quantisation step.
    gain = loaded.params["gain_to_uv"]
    np.testing.assert_allclose(loaded.recording.get_traces(0, 1000), traces[:1000], atol=gain / 2 + 1e-4)

    result = loaded.to_sorting()
    np.testing.assert_array_equal(result.spike_times, sorting.spike_times)
    np.testing.assert_array_equal(result.spike_units, sorting.spike_units)
    np.testing.assert_allclose(result.amplitudes, sorting.amplitudes)
    np.testing.assert_allclose(result.templates, centred_templates(sorting.templates, sorting.template_peak_taps))
    assert result.templates_source == "templates.npy"
    assert result.unit_groups == {0: "unsorted", 1: "unsorted", 2: "noise"}


def test_binary_recording_is_referenced_not_copied(tmp_path, sorting, traces):
    data_file = tmp_path / "session" / "raw.bin"
    data_file.parent.mkdir()
    (np.round(traces / 0.5).astype(np.int16)).tofile(data_file)
    recording = BinaryRecording(data_file, RATE, N_CHANNELS, "int16", gain_to_uv=0.5)
    folder = export_phy(sorting, tmp_path / "session" / "phy", recording)
    assert not (folder / "recording.dat").exists()
    assert phy_io.read_params(folder / "params.py")["dat_path"] == "../raw.bin"
    loaded = load_phy(folder)
    np.testing.assert_allclose(loaded.recording.get_traces(0, 100), recording.get_traces(0, 100))


def test_reexport_keeps_data_that_lived_in_the_old_folder(tmp_path, sorting, traces):
    folder = export_phy(sorting, tmp_path / "phy", NumpyRecording(traces, RATE))
    loaded = load_phy(folder)
    expected = loaded.recording.get_traces(0, 500)
    # Re-export the loaded folder onto itself, pointing at its own recording.dat.
    export_phy(loaded.to_sorting(), folder, loaded.recording)
    np.testing.assert_array_equal(load_phy(folder).recording.get_traces(0, 500), expected)


def test_without_recording_phy_still_opens(tmp_path, sorting):
    from phylib.io.model import load_model

    folder = export_phy(sorting, tmp_path / "phy", recording=None)
    model = load_model(folder / "params.py")
    try:
        assert model.traces is None
    finally:
        model.close()
    loaded = load_phy(folder)
    assert loaded.recording is None
    assert "names no raw data file" in loaded.missing_data_reason


def test_interrupted_export_leaves_previous_folder_intact(tmp_path, sorting, monkeypatch):
    folder = export_phy(sorting, tmp_path / "phy")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    # Spikes are written by now; templates never are.
    monkeypatch.setattr(phy_io, "_write_templates", crash)
    shuffled = Sorting(sorting.spike_times, sorting.spike_units[::-1], sorting.amplitudes, sorting.templates, RATE)
    with pytest.raises(KeyboardInterrupt):
        export_phy(shuffled, folder)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["phy"]  # no half folder beside it

    with pytest.raises(KeyboardInterrupt):
        export_phy(sorting, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_failed_swap_puts_the_old_folder_back(tmp_path, sorting, monkeypatch):
    folder = export_phy(sorting, tmp_path / "phy")
    before = (folder / "spike_clusters.npy").read_bytes()
    real_rename = phy_io.os.rename
    calls = []

    def rename_failing_second_time(source, target):
        calls.append(source)
        if len(calls) == 2:  # old moved aside; moving the new one in fails
            raise OSError("disk went away")
        real_rename(source, target)

    monkeypatch.setattr(phy_io.os, "rename", rename_failing_second_time)
    with pytest.raises(OSError, match="disk went away"):
        export_phy(sorting, folder)
    assert (folder / "spike_clusters.npy").read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["phy"]


def test_refuses_to_replace_a_folder_that_is_not_phy(tmp_path, sorting):
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "thesis.txt").write_text("precious")
    with pytest.raises(PhyFolderError, match="not a phy folder"):
        export_phy(sorting, tmp_path / "documents")
    assert (tmp_path / "documents" / "thesis.txt").read_text() == "precious"


def test_curation_files_are_read_back_by_phy_and_by_us(tmp_path, sorting):
    from phylib.io.model import load_model

    folder = export_phy(sorting, tmp_path / "phy")
    merged = np.where(sorting.spike_units == 2, 3, sorting.spike_units)  # phy gives a merge a new id
    write_spike_clusters(folder, merged)
    write_cluster_groups(folder, {0: "good", 1: "mua", 3: "good"})
    write_cluster_info(folder, [{"cluster_id": 3, "group": "good", "note": "merged\tby hand"}])

    model = load_model(folder / "params.py")
    try:
        np.testing.assert_array_equal(model.cluster_ids, [0, 1, 3])
        assert model.metadata["group"] == {0: "good", 1: "mua", 3: "good"}
    finally:
        model.close()
    info_lines = (folder / "cluster_info.tsv").read_text().splitlines()
    assert info_lines == ["cluster_id\tgroup\tnote", "3\tgood\tmerged by hand"]

    loaded = load_phy(folder)
    assert loaded.cluster_groups == {0: "good", 1: "mua", 3: "good"}
    result = loaded.to_sorting()
    np.testing.assert_array_equal(result.cluster_ids, [0, 1, 3])
    assert result.unit_groups == {0: "good", 1: "mua", 2: "good"}
    np.testing.assert_array_equal(result.spike_units, np.searchsorted([0, 1, 3], merged))

    with pytest.raises(PhyFolderError, match="spike clusters for 300 spikes"):
        write_spike_clusters(folder, merged[:-1])


def write_params(folder, **values):
    folder.mkdir(exist_ok=True)
    (folder / "params.py").write_text("".join(f"{name} = {value!r}\n" for name, value in values.items()))


def test_reads_a_kilosort_folder(tmp_path):
    folder = tmp_path / "ks"
    write_params(folder, dat_path="/nowhere/data.bin", n_channels_dat=3, offset=0, sample_rate=25000.0)
    with open(folder / "params.py", "a") as params:
        params.write("dtype = np.int16\n")  # old params.py files name the numpy type
    # Kilosort's layout: (n, 1) uint64 times, no spike_clusters, whitened templates.
    np.save(folder / "spike_times.npy", np.array([[10], [20], [30]], dtype=np.uint64))
    np.save(folder / "spike_templates.npy", np.array([[1], [0], [1]], dtype=np.uint32))
    np.save(folder / "amplitudes.npy", np.array([[5.0], [6.0], [7.0]]))
    whitened = np.zeros((2, 5, 2), dtype=np.float32)
    whitened[0, 2, 0] = 1.0
    whitened[1, 2, 1] = 1.0
    np.save(folder / "templates.npy", whitened)
    np.save(folder / "whitening_mat_inv.npy", np.diag([2.0, 3.0]))
    np.save(folder / "channel_map.npy", np.array([[0], [2]], dtype=np.int32))  # channel 1 was dropped
    (folder / "cluster_KSLabel.tsv").write_text("cluster_id\tKSLabel\n0\tgood\n1\tmua\n")

    loaded = load_phy(folder)
    assert loaded.params["dtype"] == "int16"
    np.testing.assert_array_equal(loaded.spike_times, [10, 20, 30])
    np.testing.assert_array_equal(loaded.spike_clusters, [1, 0, 1])
    assert loaded.cluster_groups == {0: "good", 1: "mua"}
    assert loaded.recording is None and "not found" in loaded.missing_data_reason
    np.testing.assert_allclose(loaded.channel_positions, [[0, 0], [0, 20]])  # linear default
    result = loaded.to_sorting()
    assert result.sampling_rate == 25000.0
    assert result.templates[0, 2, 0] == 2.0 and result.templates[1, 2, 1] == 3.0  # un-whitened


def without_params(folder, *names):
    """`folder`'s params.py without the lines that set `names` (what another tool's params.py lacks)."""
    params = folder / "params.py"
    lines = params.read_text(encoding="utf-8").splitlines(keepends=True)
    params.write_text("".join(line for line in lines if line.split("=")[0].strip() not in names), encoding="utf-8")
    return folder


def test_amplitudes_are_microvolts_in_our_folders_and_a_template_scaling_in_another_tools(tmp_path, sorting):
    import shutil

    ours = export_phy(sorting, tmp_path / "ours")
    assert load_phy(ours).to_sorting().amplitude_unit == "µV"
    # Folders we wrote before params.py named the unit held µV too; their gain_to_uv says they are ours.
    older = without_params(shutil.copytree(ours, tmp_path / "older"), "amplitude_unit")
    assert load_phy(older).to_sorting().amplitude_unit == "µV"
    kilosort = without_params(shutil.copytree(ours, tmp_path / "kilosort"), "amplitude_unit", "gain_to_uv")
    foreign = load_phy(kilosort).to_sorting()
    assert foreign.amplitude_unit == "template scaling"
    # Another tool's sort that we save again (a session) keeps saying what its amplitudes are.
    assert load_phy(export_phy(foreign, tmp_path / "resaved")).to_sorting().amplitude_unit == "template scaling"
    (kilosort / "amplitudes.npy").unlink()
    assert load_phy(kilosort).to_sorting().amplitude_unit == "template peak"


def test_reads_a_spikeinterface_export_with_sparse_templates(tmp_path):
    folder = tmp_path / "si"
    (folder).mkdir()
    # SpikeInterface writes dat_path = r'None' when it had no file, and no trailing newline.
    (folder / "params.py").write_text(
        "dat_path = r'None'\nn_channels_dat = 3\ndtype = 'int16'\noffset = 0\n"
        "sample_rate = 30000.0\nhp_filtered = True"
    )
    np.save(folder / "spike_times.npy", np.array([[5], [9]], dtype=np.int64))
    np.save(folder / "spike_templates.npy", np.array([[0], [1]], dtype=np.int64))
    np.save(folder / "spike_clusters.npy", np.array([[0], [1]], dtype=np.int64))
    sparse = np.zeros((2, 4, 2))
    sparse[0, 1] = [1.0, 2.0]
    sparse[1, 1] = [3.0, 0.0]  # second column is padding
    np.save(folder / "templates.npy", sparse)
    np.save(folder / "template_ind.npy", np.array([[2, 0], [1, -1]]))
    np.save(folder / "channel_map.npy", np.arange(3, dtype=np.int32))
    np.save(folder / "channel_positions.npy", np.array([[0, 0], [0, 25], [0, 50]], dtype=np.float32))
    (folder / "cluster_info.tsv").write_text("cluster_id\tgroup\tch\n0\tgood\t2\n1\t\t1\n")

    loaded = load_phy(folder)
    assert loaded.missing_data_reason == "params.py names no raw data file"
    assert loaded.cluster_groups == {0: "good"}  # an empty cell is no label
    np.testing.assert_array_equal(loaded.templates[0, 1], [2.0, 0.0, 1.0])
    np.testing.assert_array_equal(loaded.templates[1, 1], [0.0, 3.0, 0.0])
    assert loaded.to_sorting().unit_groups == {0: "good", 1: "unsorted"}


def test_without_templates_mean_waveforms_come_from_raw_data(tmp_path):
    folder = tmp_path / "bare"
    write_params(folder, dat_path="data.bin", n_channels_dat=2, dtype="int16", offset=0, sample_rate=RATE)
    spike_times = np.arange(1000, 20000, 1000)
    shape = np.zeros((61, 2))  # ±1 ms at 30 kHz
    shape[28:33, 1] = [-10, -40, -100, -40, -10]  # a narrow spike: the window median stays 0
    data = np.zeros((N_SAMPLES, 2), dtype=np.int16)
    for spike_time in spike_times:
        data[spike_time - 30 : spike_time + 31] += shape.astype(np.int16)
    data.tofile(folder / "data.bin")
    np.save(folder / "spike_times.npy", spike_times)
    np.save(folder / "spike_templates.npy", np.zeros(len(spike_times), dtype=np.int32))

    result = load_phy(folder).to_sorting()
    assert result.templates_source == "raw data"
    np.testing.assert_allclose(result.templates[0], shape)
    assert result.template_peak_taps[0] == 30
    np.testing.assert_allclose(result.amplitudes, 100.0)  # no amplitudes.npy: the template peak


def test_missing_files_are_named(tmp_path):
    folder = tmp_path / "half"
    write_params(folder, sample_rate=RATE)
    np.save(folder / "spike_times.npy", np.arange(3))
    with pytest.raises(PhyFolderError, match="spike_templates.npy missing"):
        load_phy(folder)
    (folder / "params.py").write_text("import os\nsample_rate = float(os.environ['RATE'])\n")
    np.save(folder / "spike_templates.npy", np.zeros(3, dtype=np.int32))
    with pytest.raises(PhyFolderError, match="sample_rate is not a plain value"):
        load_phy(folder)


def test_spikeinterface_reads_our_export(tmp_path, sorting):
    extractors = pytest.importorskip("spikeinterface.extractors")
    folder = export_phy(sorting, tmp_path / "phy")
    theirs = extractors.read_phy(folder)
    assert theirs.get_sampling_frequency() == RATE
    np.testing.assert_array_equal(theirs.unit_ids, [0, 1, 2])
    np.testing.assert_array_equal(theirs.get_unit_spike_train(1), sorting.spike_times[sorting.spike_units == 1])
