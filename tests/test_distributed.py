"""The chunk-parallel stage of the sort on a Dask cluster: same spikes, survives a dead worker, names a failed chunk."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main, read_sort_list
from engine.evaluation.scoring import compare_to_ground_truth
from engine.model.crsae import CRsAE
from engine.evaluation.simulator import write_simulation
from engine.io.recording import NumpyRecording, RecordingError, open_recording
from engine.pipeline import distributed as distributed_module
from engine.pipeline.distributed import ChunkFailedError, DaskInference, DaskMissingError, RecordingSource, run_batch
from engine.pipeline.inference import ChunkSpikeFinder, SpikeSettings, chunk_batches, default_chunk_size
from engine.pipeline.preprocessing import PreprocessedRecording
from engine.pipeline.run import SortPipeline
from engine.pipeline.training import TrainingConfig

# 20 s at 10 kHz in 1 s chunks, 8 per batch: three tasks, the second one [80000, 160000).
DURATION_S = 20.0
SECOND_BATCH = (80_000, 160_000)
# Small and quick: the test is about where the chunks run, not how well they sort.
FAST = dict(n_filters=6, n_iterations=20, batch_size=8, window_ms=100, n_epochs=0.1)


def exit_once(job, batch_cores, marker_dir: str):
    """Kill the worker process the first time any worker runs the second batch."""
    marker = Path(marker_dir) / "killed"
    if batch_cores[0][0] == SECOND_BATCH[0] and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return run_batch(job, batch_cores)


def fail_second_batch(job, batch_cores, attempts_file: str):
    if batch_cores[0][0] == SECOND_BATCH[0]:
        with open(attempts_file, "a") as attempts:
            attempts.write(f"{os.getpid()}\n")
        raise OSError("read error on the shared disk")
    return run_batch(job, batch_cores)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    paths = write_simulation(tmp_path_factory.mktemp("distributed"), duration_s=DURATION_S, n_units=3,
                             sampling_rate=10_000.0, n_channels=2, firing_rates=20.0, seed=3)
    pipeline = SortPipeline(open_recording(paths.recording), TrainingConfig(**FAST))
    pipeline.prepare()
    pipeline.train()
    single = pipeline.sort()
    return pipeline, single


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        yield client


def assert_same_spikes(single, other):
    assert other.n_spikes == single.n_spikes
    agreement = compare_to_ground_truth(single.spike_times, single.spike_units, other.spike_times, other.spike_units,
                                        single.sampling_rate, tolerance_ms=0.4)
    assert agreement.accuracy.min() >= 0.999


@pytest.mark.slow
def test_the_distributed_sort_finds_the_same_spikes_as_one_process(simulated, client):
    trainer, single = simulated
    tasks = []
    sorting = trainer.sort(infer=DaskInference(client, on_task=lambda done, total: tasks.append((done, total))))
    assert tasks == [(1, 3), (2, 3), (3, 3)]
    assert single.n_units >= 2 and single.n_spikes > 500
    assert_same_spikes(single, sorting)
    # Same batches, same per-batch function: equal up to float rounding, which torch's thread
    # count (1 in a worker, every core in this process) may change.
    np.testing.assert_allclose(np.sort(sorting.code_amplitudes), np.sort(single.code_amplitudes),
                               rtol=1e-4)


@pytest.mark.slow
def test_a_worker_killed_mid_sort_is_replaced_and_the_sort_completes(simulated, client, tmp_path):
    trainer, single = simulated
    killer = functools.partial(exit_once, marker_dir=str(tmp_path))
    sorting = trainer.sort(infer=DaskInference(client, batch_function=killer))
    killed_pid = int((tmp_path / "killed").read_text())
    assert killed_pid not in client.run(os.getpid).values()  # that process is gone; the nanny started another
    assert_same_spikes(single, sorting)


@pytest.mark.slow
def test_a_chunk_failing_on_every_attempt_stops_the_sort_naming_its_range(simulated, client, tmp_path):
    trainer, _ = simulated
    attempts = tmp_path / "attempts.txt"
    infer = DaskInference(client, retries=1, batch_function=functools.partial(fail_second_batch,
                                                                              attempts_file=str(attempts)))
    with pytest.raises(ChunkFailedError, match=r"samples 80000-160000 \(8.00-16.00 s\) failed on 2 attempts "
                                               r"\(OSError: read error on the shared disk\)"):
        infer(trainer.model, trainer.recording, trainer.noise_levels, trainer.dead_time, trainer.lambda_)
    assert len(attempts.read_text().split()) == 2


@pytest.mark.slow
def test_a_worker_rebuilds_the_model_bit_for_bit(simulated):
    """What a worker builds from SpikeSettings finds exactly what the live model finds."""
    trainer, _ = simulated
    settings = SpikeSettings.of(trainer.model, trainer.noise_levels, trainer.dead_time, trainer.lambda_)
    batch = chunk_batches(trainer.recording.n_samples, default_chunk_size(trainer.recording, trainer.n_taps), 8)[1]
    live = ChunkSpikeFinder(settings, trainer.model).batch_spikes(trainer.recording, batch)
    rebuilt = ChunkSpikeFinder(settings).batch_spikes(RecordingSource.of(trainer.recording).open(), batch)
    for a, b in zip(live, rebuilt):
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(a.amplitudes, b.amplitudes)


def test_a_worker_convolves_each_filter_on_its_own_channels():
    """A probe's filters live on a few channels: the model a worker rebuilds keeps that channel mask,
    so its convolutions stay local as the live model's do, with the same filters bit for bit."""
    rng = np.random.default_rng(2)
    mask = np.zeros((4, 16), np.float32)
    for k in range(4):
        mask[k, 4 * k : 4 * k + 5] = 1.0  # neighbourhoods of five channels, overlapping by one
    live = CRsAE(rng.standard_normal((4, 16, 12)).astype(np.float32), 1.0, channel_mask=mask)
    settings = SpikeSettings.of(live, np.ones(16, np.float32), 3, 1.0)
    rebuilt = settings.model()
    np.testing.assert_array_equal(rebuilt.channel_mask.numpy(), mask)
    np.testing.assert_array_equal(rebuilt.filters.detach().numpy(), live.filters.detach().numpy())


def test_a_recording_source_reopens_binaries_and_npy_files_as_the_client_sees_them(tiny_recording, tmp_path):
    binary = PreprocessedRecording(open_recording(tiny_recording))
    npy_path = tmp_path / "traces.npy"
    np.save(npy_path, (np.arange(6000, dtype=np.float32).reshape(-1, 2) % 37))
    npy = PreprocessedRecording(open_recording(npy_path, sampling_rate=10_000.0), common_reference=True)
    for recording in (binary, npy, binary.parent):
        reopened = RecordingSource.of(recording)._open_uncached()
        assert type(reopened) is type(recording)
        np.testing.assert_array_equal(reopened.get_traces(100, 900), recording.get_traces(100, 900))
    assert RecordingSource.of(npy).preprocessing == (300.0, npy.freq_max, True)


def test_an_in_memory_recording_cannot_be_sorted_on_a_cluster():
    in_memory = NumpyRecording(np.zeros((1000, 2), np.float32), 10_000.0)
    with pytest.raises(RecordingError, match="reads the recording from its file on every worker.*write_recording"):
        RecordingSource.of(PreprocessedRecording(in_memory))


def test_a_worker_that_sees_another_file_says_so(tiny_recording, tmp_path):
    source = RecordingSource.of(open_recording(tiny_recording))
    longer = RecordingSource(**{**source.__dict__, "n_samples": source.n_samples + 1})
    with pytest.raises(RecordingError, match="every worker must see the same file"):
        longer._open_uncached()
    elsewhere = RecordingSource(**{**source.__dict__, "path": str(tmp_path / "not_here.bin")})
    with pytest.raises(RecordingError, match="does not exist on worker .* same path as the client"):
        elsewhere._open_uncached()


def test_without_dask_a_cluster_request_names_the_pip_command(tiny_recording, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    with pytest.raises(DaskMissingError, match=r'pip install "sparsort\[dask\]"'):
        distributed_module.require_distributed()
    assert main(["sort", str(tiny_recording), "--out", str(tmp_path / "o"), "--workers", "2", "--quiet"]) == 2
    message = capsys.readouterr().err
    assert "needs Dask's distributed scheduler" in message and 'pip install "sparsort[dask]"' in message
    assert not (tmp_path / "o").exists()


def test_the_engine_imports_without_dask():
    code = ("import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None; "
            "import engine.cli, engine.pipeline.training, engine.pipeline.distributed")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_retries_without_a_cluster_is_refused(tiny_recording, tmp_path, capsys):
    assert main(["sort", str(tiny_recording), "--out", str(tmp_path / "o"), "--retries", "3", "--quiet"]) == 2
    assert "--retries applies to a Dask cluster" in capsys.readouterr().err


def test_a_sort_list_is_read_relative_to_itself_and_checked_before_any_sorting(tiny_recording, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# recordings of day 1\n\n{tiny_recording} 'sorted one'\n{tiny_recording}   two\n")
    assert read_sort_list(listing) == [(tiny_recording, tmp_path / "sorted one"), (tiny_recording, tmp_path / "two")]
    listing.write_text(f"{tiny_recording} same\n{tmp_path / 'missing.bin'} other\n{tiny_recording} same\nonly_one\n")
    with pytest.raises(ValueError) as error:
        read_sort_list(listing)
    message = str(error.value)
    assert "line 2: recording" in message and "missing.bin does not exist" in message
    assert "line 4: expected 'RECORDING OUT_DIR', got 1 field(s)" in message
    assert "same is the output folder of more than one line" in message


@pytest.mark.slow
def test_sort_many_sorts_each_recording_on_a_local_cluster(tiny_recording, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tiny_recording} first\n{tiny_recording} second\n")
    flags = ["--n-iterations", "15", "--batch-size", "4", "--window-ms", "100", "--epochs", "0.3"]
    assert main(["sort-many", str(listing), "--workers", "2", *flags]) == 0
    err = capsys.readouterr().err
    assert "local Dask cluster: 2 worker processes" in err and "[2/2]" in err and "1/1 tasks" in err
    first, second = (np.load(tmp_path / name / "spike_times.npy") for name in ("first", "second"))
    assert len(first) > 50
    np.testing.assert_array_equal(first, second)
    summary = (tmp_path / "second" / "sparsort.json").read_text()
    assert '"spikes_found_in": "Dask: 2 local workers"' in summary


def test_sort_help_says_how_to_start_a_cluster(capsys):
    with pytest.raises(SystemExit):
        main(["sort", "--help"])
    help_text = capsys.readouterr().out
    for needed in ("--scheduler ADDRESS", "--workers N", "dask scheduler", "dask worker tcp://HOST:8786",
                   "dask-jobqueue", "dask-kubernetes", 'pip install "sparsort[dask]"'):
        assert needed in help_text, needed
