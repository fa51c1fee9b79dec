"""Bad input is named before training, with the file and the fix (issue 12 items 8, 9, 11, 12, 17)."""

import json
import shutil

import numpy as np
import pytest

import engine.pipeline.run as pipeline_run
from engine.pipeline.training import TrainingConfig
from engine.cli import main
from engine.evaluation.simulator import GroundTruth
from engine.io.phy import PhyFolderError, export_phy, load_phy
from engine.io.plausibility import channel_count_warnings
from engine.io.recording import open_recording
from engine.pipeline.sorting import Sorting


class StopBeforeTraining(Exception):
    pass


@pytest.fixture
def no_training(monkeypatch):
    def forbidden(*args, **kwargs):
        raise StopBeforeTraining

    monkeypatch.setattr(pipeline_run, "SortPipeline", forbidden)


def test_n_channels_disagreeing_with_the_sidecar_names_both(tiny_recording, tmp_path, capsys, no_training):
    assert main(["sort", str(tiny_recording), "--out", str(tmp_path / "o"), "--n-channels", "4"]) == 2
    message = capsys.readouterr().err
    assert "n_channels 4 was given (--n-channels)" in message and f"{tiny_recording.stem}.json" in message
    assert "says 1" in message and "channel_positions" not in message


def test_one_channel_read_as_two_is_warned_about(tiny_recording, tmp_path, capsys, no_training):
    bare = tmp_path / "bare.bin"  # the same samples, without the sidecar that knows the count
    shutil.copy(tiny_recording, bare)
    dtype = json.loads(tiny_recording.with_suffix(".json").read_text())["dtype"]
    with pytest.raises(StopBeforeTraining):
        main(["sort", str(bare), "--out", str(tmp_path / "o"), "--fs", "10000", "--n-channels", "2", "--dtype", dtype])
    message = capsys.readouterr().err
    assert "warning: 2 channels looks wrong for this file" in message and "--n-channels" in message


def test_a_real_probe_is_not_warned_about(tiny_probe_recording):
    assert channel_count_warnings(open_recording(tiny_probe_recording)) == []


def test_a_duplicated_channel_is_warned_about(tiny_probe_recording, tmp_path):
    traces = open_recording(tiny_probe_recording).get_traces()
    traces[:, 2] = traces[:, 1]
    np.save(tmp_path / "dup.npy", traces)
    (tmp_path / "dup.json").write_text('{"sampling_rate": 10000}')
    warnings = channel_count_warnings(open_recording(tmp_path / "dup.npy"))
    assert any("channels 1 and 2 are near-identical" in w for w in warnings)


def test_a_derived_filter_length_out_of_range_fails_before_training(tiny_recording, tmp_path, capsys, no_training):
    assert main(["sort", str(tiny_recording), "--out", str(tmp_path / "o"), "--fs", "1e7"]) == 2
    message = capsys.readouterr().err
    assert "4 ms at 1e+07 Hz, would be 40000 samples" in message and "--fs" in message and "--n-taps" in message
    assert TrainingConfig(n_taps=None).taps_for(30_000) == 120  # the usual case is unchanged


def test_a_flat_recording_fails_before_training(tmp_path, capsys, no_training):
    np.zeros((20_000, 2), dtype=np.int16).tofile(tmp_path / "flat.bin")
    assert main(["sort", str(tmp_path / "flat.bin"), "--out", str(tmp_path / "o"),
                 "--fs", "10000", "--n-channels", "2", "--dtype", "int16"]) == 2
    assert "is flat: all" in capsys.readouterr().err


class NothingFound:
    """A SortPipeline whose sort finds no spike (what pure noise gives)."""

    def __init__(self, recording, config, on_stage=None):
        from engine.pipeline.preprocessing import PreprocessedRecording

        self.recording, self.config = PreprocessedRecording(recording), config
        self.device_name, self.lambda_, self.window = "CPU", 3.7, 400
        self.initial_pruning = self.final_pruning = type("P", (), {"describe": lambda self: "kept 1"})()
        self.trainer = type("T", (), {"n_steps": 1, "batch_size": 1, "step": 0, "settled_at": None})()

    def recording_notes(self):
        return []

    def prepare(self):
        pass

    def train(self, callback):
        pass

    def sort(self, progress, infer=None):
        return Sorting(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((1, 40, 1), np.float32), 10_000.0)


def test_no_spikes_found_says_why_and_writes_no_folder(tiny_recording, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline_run, "SortPipeline", NothingFound)
    assert main(["sort", str(tiny_recording), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert "no spikes found" in message and "detection threshold" in message and "--lambda-scale" in message
    assert not (tmp_path / "o").exists()


# ---- phy folders that cannot be read as they are ---------------------------------------------------


@pytest.fixture
def phy_folder(tmp_path):
    sorting = Sorting(np.arange(10) * 50, np.arange(10) % 2, np.ones(10), np.ones((2, 8, 1), np.float32), 10_000.0)
    return export_phy(sorting, tmp_path / "sorted")


def test_a_binary_cluster_group_names_the_file_and_the_fix(phy_folder):
    (phy_folder / "cluster_group.tsv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PhyFolderError, match="cluster_group.tsv is not a text file .*0xff.*Restore it from a backup"):
        load_phy(phy_folder)


def test_a_cluster_group_without_header_is_refused_not_emptied(phy_folder):
    (phy_folder / "cluster_group.tsv").write_text("0\tgood\n1\tnoise\n")
    with pytest.raises(PhyFolderError, match="cluster_group.tsv has no header line .*Add the line 'cluster_id<TAB>group'"):
        load_phy(phy_folder)
    assert (phy_folder / "cluster_group.tsv").read_text() == "0\tgood\n1\tnoise\n"


def test_a_cluster_group_with_other_columns_is_refused_not_emptied(phy_folder):
    (phy_folder / "cluster_group.tsv").write_text("id\tlabel\n0\tgood\n")
    with pytest.raises(PhyFolderError, match="cluster_group.tsv has no cluster_id and group columns .*Rename its columns"):
        load_phy(phy_folder)


def test_negative_cluster_ids_name_the_file_and_the_fix(phy_folder):
    clusters = np.arange(10, dtype=np.int32) % 2
    clusters[3] = -1
    np.save(phy_folder / "spike_clusters.npy", clusters)
    with pytest.raises(PhyFolderError, match="spike_clusters.npy gives 1 spikes a negative cluster id .*e.g. 2"):
        load_phy(phy_folder)


def test_evaluate_accepts_a_session_folder_the_app_saved(tiny_recording, tmp_path, capsys):
    truth_folder = tiny_recording.parent / "ground_truth"
    session = tmp_path / "session"
    export_phy(GroundTruth.load(truth_folder).to_sorting(), session / "sorting")
    (session / "settings.json").write_text("{}")
    assert main(["evaluate", str(session), "--truth", str(truth_folder)]) == 0
    assert "mean accuracy" in capsys.readouterr().out
