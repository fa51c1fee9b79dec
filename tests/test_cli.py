"""`sparsort simulate | sort | evaluate` end to end, as a user runs them."""

import json

import numpy as np
import pytest

from engine.cli import main

FAST_FLAGS = ["--n-iterations", "100", "--batch-size", "4", "--window-ms", "100", "--epochs", "0.3", "--quiet"]


@pytest.fixture(scope="module")
def sorted_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["simulate", "--out", str(root / "sim"), "--duration", "10", "--seed", "5"]) == 0
    out = root / "sorted"
    assert main(["sort", str(root / "sim" / "recording.bin"), "--out", str(out), *FAST_FLAGS]) == 0
    return root, out


def test_sort_writes_a_phy_folder_that_phy_opens(sorted_folder):
    phylib_model = pytest.importorskip("phylib.io.model")
    _, out = sorted_folder
    for name in ["params.py", "spike_times.npy", "spike_templates.npy", "spike_clusters.npy", "amplitudes.npy",
                 "templates.npy", "channel_map.npy", "channel_positions.npy", "similar_templates.npy",
                 "whitening_mat.npy", "cluster_group.tsv", "crsae_checkpoint.pt", "sparsort.json"]:
        assert (out / name).exists(), name
    spike_times = np.load(out / "spike_times.npy")
    assert spike_times.dtype == np.int64 and np.all(np.diff(spike_times) >= 0)
    model = phylib_model.load_model(out / "params.py")
    assert model.n_spikes == len(spike_times)
    assert model.sample_rate == 10_000.0
    summary = json.loads((out / "sparsort.json").read_text())
    assert summary["n_spikes"] == len(spike_times)


def test_evaluate_prints_a_report_against_ground_truth(sorted_folder, capsys):
    root, out = sorted_folder
    assert main(["evaluate", str(out), "--truth", str(root / "sim" / "ground_truth")]) == 0
    report = capsys.readouterr().out
    assert "accuracy" in report and "mean accuracy" in report and "dict. error" in report


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    truncated = tmp_path / "broken.bin"
    truncated.write_bytes(b"\x00" * 1001)
    assert main(["sort", str(truncated), "--out", str(tmp_path / "o"), "--fs", "30000", "--n-channels", "4", "--dtype", "int16"]) == 2
    message = capsys.readouterr().err
    assert "sparsort: error:" in message and "1001" in message
    assert not (tmp_path / "o").exists()


def test_impossible_model_parameters_are_refused(tmp_path, capsys):
    assert main(["sort", "--demo", "--out", str(tmp_path / "o"), "--n-iterations", "0"]) == 2
    assert "n_iterations = 0 is out of range" in capsys.readouterr().err


def test_sort_needs_exactly_one_source(tmp_path, capsys):
    assert main(["sort", "--out", str(tmp_path / "o")]) == 2
    assert "RECORDING path or --demo" in capsys.readouterr().err


def test_evaluate_accepts_a_session_folder_the_app_saved(sorted_folder, tmp_path, capsys):
    import shutil

    root, out = sorted_folder
    session = tmp_path / "session"
    shutil.copytree(out, session / "sorting")
    (session / "settings.json").write_text("{}")
    assert main(["evaluate", str(session), "--truth", str(root / "sim" / "ground_truth")]) == 0
    assert "mean accuracy" in capsys.readouterr().out


def test_init_flag_reaches_the_training_config(sorted_folder, capsys):
    from pathlib import Path

    from engine.cli import _build_parser, _open

    root, _ = sorted_folder
    recording = root / "sim" / "recording.bin"
    args = _build_parser().parse_args(["sort", str(recording), "--out", "o", "--init", "random"])
    assert _open(Path(recording), args)[1].init == "random"
    args = _build_parser().parse_args(["sort", str(recording), "--out", "o"])
    assert _open(Path(recording), args)[1].init == "data"
    with pytest.raises(SystemExit):
        _build_parser().parse_args(["sort", str(recording), "--out", "o", "--init", "kmeans"])
    assert "invalid choice: 'kmeans'" in capsys.readouterr().err


def test_the_stage_table_says_how_many_cores_each_stage_kept_busy():
    import time

    from engine.pipeline.stages import StageLog

    log = StageLog()
    with log.stage("waiting"):
        time.sleep(0.2)
    with log.stage("working"):
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            pass
    waiting, working = log.costs
    # Relative, not a fixed bar: on a shared machine the busy loop may get under half a core (0.499 beside
    # a two-thread sort on two cores), while the sleeping stage keeps next to none.
    assert waiting.cores_busy < 0.2 and working.cores_busy > waiting.cores_busy + 0.2
    header, *rows, total = log.table().splitlines()
    assert "cores busy" in header and rows[1].split()[2] == f"{working.cores_busy:.2f}"
