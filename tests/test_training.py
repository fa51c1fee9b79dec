"""Training and sorting on small simulated recordings."""

import threading

import numpy as np
import pytest
import torch

from engine.io.recording import NumpyRecording, RecordingError
from engine.evaluation.scoring import compare_to_ground_truth, dictionary_error
from engine.evaluation.simulator import simulate
from engine.io.checkpoints import load_checkpoint, save_checkpoint
from engine.pipeline.run import SortPipeline
from engine.pipeline.training import ConfigError, TrainingConfig

FAST = dict(n_iterations=100, batch_size=4, window_ms=100.0, n_epochs=0.5, n_filters=6)


@pytest.fixture(scope="module")
def small_recording():
    traces, truth = simulate(duration_s=12.0, n_units=3, sampling_rate=10_000.0, seed=3)
    return NumpyRecording(traces, 10_000.0), truth


@pytest.fixture(scope="module")
def trained(small_recording):
    """One short training shared by the tests that only read its result."""
    recording, _ = small_recording
    pipeline = SortPipeline(recording, TrainingConfig(**FAST))
    pipeline.prepare()
    snapshots = []
    pipeline.train(snapshots.append, snapshot_interval_s=0.0)
    return pipeline, snapshots


def restarted(pipeline, **overrides):
    """A new pipeline on the same dictionary, skipping clustering and pruning."""
    config = TrainingConfig(**{**FAST, **overrides, "n_taps": pipeline.n_taps})
    restart = SortPipeline(pipeline.recording, config)
    restart.prepare(initial_dictionary=pipeline.model.filters.detach().cpu().numpy())
    return restart


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n_filters", 0, "n_filters = 0 is out of range"),
        ("n_iterations", 2.5, "n_iterations must be a whole number"),
        ("learning_rate", -1.0, "learning_rate = -1.0 is out of range"),
        ("lambda_scale", float("nan"), "lambda_scale must be a finite number"),
        ("batch_size", 0, "batch_size = 0 is out of range"),
        ("device", "tpu", "unknown device"),
    ],
)
def test_impossible_parameters_are_refused_with_their_name(field, value, message):
    config = TrainingConfig(**{field: value})
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_config_round_trips_and_rejects_unknown_keys():
    config = TrainingConfig(n_filters=5, learning_rate=0.003)
    assert TrainingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown training parameters: bogus"):
        TrainingConfig.from_dict({"bogus": 1})


def test_recording_shorter_than_one_filter_is_refused():
    with pytest.raises(RecordingError, match="shorter than one filter"):
        SortPipeline(NumpyRecording(np.zeros((10, 1), np.float32) + 1.0, 10_000.0), TrainingConfig(**FAST))


def test_training_finds_the_units_and_snapshots_arrive(small_recording, trained):
    _, truth = small_recording
    trainer, snapshots = trained
    # The pruning kept about as many filters as there are neurons.
    assert 2 <= trainer.model.n_filters <= 4
    assert trainer.trainer.step == trainer.trainer.n_steps == len(snapshots)
    assert snapshots[-1].filters.shape == (trainer.model.n_filters, trainer.n_taps, 1)
    assert all(np.isfinite(s.loss) for s in snapshots)
    errors = dictionary_error(truth.bandpassed_waveforms(), trainer.filters()).errors
    # Random filters score 0.6-0.9; 12 s of data and a few steps reach ~0.1-0.2.
    assert np.all(errors < 0.25), errors

    sorting = trainer.sort()
    comparison = compare_to_ground_truth(truth.spike_times, truth.spike_units, sorting.spike_times, sorting.spike_units, 10_000.0)
    # 12 s and a few steps: every neuron is found (matched), and the largest
    # is sorted well; the full-size accuracy targets live in benchmarks/.
    assert np.all(comparison.matched_unit >= 0), comparison.accuracy
    assert comparison.accuracy.min() > 0.5 and comparison.n_well_detected >= 1, comparison.accuracy
    assert np.all(np.diff(sorting.spike_times) >= 0)
    assert sorting.templates.shape[0] == sorting.n_units


def test_pause_resume_and_stop_from_another_thread(trained):
    """Paused from the snapshot callback (the training thread), no further step runs until resumed.

    Deterministic: the pause is set before the loop looks at it again, so no
    sleep or timing is involved."""
    trainer = restarted(trained[0], n_epochs=50.0).trainer
    paused = threading.Event()
    steps_seen = []

    def on_snapshot(snapshot):
        steps_seen.append(snapshot.step)
        if snapshot.step == 2:
            trainer.pause()
            paused.set()

    thread = threading.Thread(target=trainer.run, args=(on_snapshot, 0.0))
    thread.start()
    assert paused.wait(60)
    assert trainer.is_paused
    assert trainer.step == 2 and steps_seen == [1, 2]
    trainer.resume()
    trainer.stop()
    thread.join(60)
    assert not thread.is_alive()
    assert 2 <= trainer.step < trainer.n_steps


def test_checkpoint_restores_filters_and_history(small_recording, trained, tmp_path):
    recording, _ = small_recording
    trainer = trained[0]
    path = tmp_path / "model.pt"
    save_checkpoint(trainer, path)
    restored = load_checkpoint(path, recording)
    np.testing.assert_allclose(restored.filters(), trainer.filters(), atol=1e-6)
    assert restored.trainer.step == trainer.trainer.step
    assert restored.trainer.loss_history == trainer.trainer.loss_history


def test_a_least_squares_checkpoint_makes_no_optimizer_and_a_gradient_one_keeps_adams_moments(
        small_recording, trained, tmp_path):
    recording, _ = small_recording
    pipeline = trained[0]
    save_checkpoint(pipeline, tmp_path / "least_squares.pt")
    # Making Adam only to save its empty state imported torch._dynamo (1.9 s at the end of every sort).
    assert pipeline.trainer._optimizer is None
    assert load_checkpoint(tmp_path / "least_squares.pt", recording).trainer._optimizer is None

    gradient = restarted(pipeline, dictionary_update="gradient", n_epochs=0.2)
    gradient.train()
    moments = gradient.trainer.optimizer.state_dict()["state"]
    assert moments  # Adam stepped
    save_checkpoint(gradient, tmp_path / "gradient.pt")
    restored = load_checkpoint(tmp_path / "gradient.pt", recording).trainer.optimizer.state_dict()["state"]
    for key, value in moments.items():
        torch.testing.assert_close(restored[key]["exp_avg"], value["exp_avg"])


def test_checkpoint_keeps_each_filters_own_lambda(small_recording, trained, tmp_path):
    """A faint neuron's filter has a lower λ (its spikes' bar): reopened from a checkpoint, it must keep
    it, or the resort loses the neuron's spikes under the sort's full λ."""
    pipeline = trained[0]
    lambdas = np.full(pipeline.model.n_filters, pipeline.lambda_, dtype=np.float32)
    lambdas[-1] *= 0.8
    restart = SortPipeline(pipeline.recording, TrainingConfig(**{**FAST, "n_taps": pipeline.n_taps}))
    restart.prepare(initial_dictionary=pipeline.model.filters.detach().cpu().numpy(), initial_lambdas=lambdas)
    save_checkpoint(restart, tmp_path / "model.pt")
    restored = load_checkpoint(tmp_path / "model.pt", small_recording[0])
    np.testing.assert_allclose(restored._lambdas(), lambdas, rtol=1e-6)
    with pytest.raises(ValueError, match="lambdas for a dictionary of"):
        SortPipeline(pipeline.recording, TrainingConfig(**{**FAST, "n_taps": pipeline.n_taps})).prepare(
            initial_dictionary=pipeline.model.filters.detach().cpu().numpy(), initial_lambdas=lambdas[:-1])


def test_checkpoint_refuses_a_recording_with_other_channels(trained, tmp_path):
    trainer = trained[0]
    save_checkpoint(trainer, tmp_path / "model.pt")
    other = NumpyRecording(np.random.default_rng(0).standard_normal((50_000, 2)).astype(np.float32), 10_000.0)
    with pytest.raises(RecordingError, match="channels"):
        load_checkpoint(tmp_path / "model.pt", other)


def test_reconstruct_gives_codes_aligned_to_the_window(trained):
    trainer = trained[0]
    window = trainer.reconstruct(1000, 3000)
    assert window.traces.shape == window.reconstruction.shape == (2000, 1)
    assert window.codes.shape == (trainer.model.n_filters, 2000)
    # The reconstruction explains a good part of the signal's energy.
    residual = np.sum((window.traces - window.reconstruction) ** 2)
    assert residual < np.sum(window.traces ** 2)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_trains_and_sorts_like_the_cpu(small_recording, trained):
    """Same start, same batches: the GPU's filters and spikes agree with the CPU's.

    Both sort with the dense encoder, so the devices run the same computation
    (the CPU would pick the working set by default; tests/test_working_set.py
    compares the two solvers)."""
    recording, truth = small_recording
    trainer, _ = trained
    start = trainer.initial_filters
    results = {}
    for device in ("cpu", "cuda"):
        config = TrainingConfig(**{**FAST, "n_taps": trainer.n_taps, "device": device, "solver": "dense"})
        run = SortPipeline(trainer.recording, config)
        run.prepare(initial_dictionary=start)
        assert run.device.type == device
        run.train()
        results[device] = (run.filters(), run.sort())
    (cpu_filters, cpu_sort), (gpu_filters, gpu_sort) = results["cpu"], results["cuda"]
    # float32 sums in another order: shapes agree to well under the 0.1 dictionary-error scale.
    assert np.abs(cpu_filters - gpu_filters).max() < 0.02
    agreement = compare_to_ground_truth(cpu_sort.spike_times, cpu_sort.spike_units, gpu_sort.spike_times,
                                        gpu_sort.spike_units, recording.sampling_rate)
    assert agreement.accuracy.min() > 0.98


def test_checkpoint_from_a_gpu_opens_on_a_machine_without_one(small_recording, trained, tmp_path):
    """A session trained on a lab's GPU must reopen on a laptop: the device is a preference."""
    import torch

    recording, _ = small_recording
    trainer = trained[0]
    path = tmp_path / "model.pt"
    save_checkpoint(trainer, path)
    state = torch.load(path, weights_only=False)
    state["config"]["device"] = "cuda:7"  # a device no test machine has
    torch.save(state, path)
    restored = load_checkpoint(path, recording)
    assert restored.device.type in {"cpu", "cuda", "mps"}
    np.testing.assert_allclose(restored.filters(), trainer.filters(), atol=1e-6)


def test_a_filter_with_two_amplitude_groups_becomes_two_units_of_one_shape(trained):
    from engine.pipeline.inference import SpikeEvents
    from engine.pipeline.templates import assemble_sorting

    trainer, _ = trained
    n_filters = trainer.model.n_filters
    rng = np.random.default_rng(0)
    filters = np.repeat(np.arange(n_filters), 200).astype(np.int32)
    amplitudes = (10.0 * np.exp(0.1 * rng.standard_normal(len(filters)))).astype(np.float32)
    amplitudes[:100] *= 3.0  # filter 0's first 100 spikes come from a bigger neuron
    times = np.sort(rng.choice(trainer.recording.n_samples, len(filters), replace=False)).astype(np.int64)
    sorting = assemble_sorting(SpikeEvents(times, filters, amplitudes), trainer.filters(), trainer.noise_levels,
                               trainer.sampling_rate, None, trainer.lambda_, ("", ""), dead_time=trainer.dead_time)
    assert sorting.n_units == n_filters + 1
    assert sorting.filter_index.tolist() == list(range(n_filters)) + [0]
    assert "filter 0" in sorting.provenance.amplitude_splits
    assert set(sorting.spike_units[:100]) == {n_filters}
    big, small = sorting.templates[n_filters], sorting.templates[0]
    # One shape at two sizes, about three times apart.
    ratio = np.abs(big).max() / np.abs(small).max()
    assert 2.5 < ratio < 3.5
    np.testing.assert_allclose(big / ratio, small, atol=1e-3 * np.abs(big).max())


def test_a_steps_codes_do_not_depend_on_how_many_cores_code_its_parts(trained, monkeypatch):
    """A batch is coded in a part per free core, in lockstep: one core, two or three, the codes and kept
    spikes of the whole batch coded at once, even where the checks stop early (the rough stop looks at
    the whole batch; parts stopping on their own counts code otherwise)."""
    import torch

    import engine.pipeline.training as training
    from engine.model.crsae import CRsAE
    from engine.model.working_set import WorkingSetEncoder

    pipeline, _ = trained
    trainer = pipeline.trainer
    model = trainer.model
    monkeypatch.setattr(trainer, "spike_reading", pipeline._spike_reading())
    rough = 0.05  # a check adding under 5 % of W stops them: at different checks in different parts
    monkeypatch.setattr(training, "ROUGH_SETTLED_FRACTION", rough)
    on_their_own = WorkingSetEncoder(CRsAE(model.filters.detach(), model.lambdas, model.n_iterations,
                                           n_debias_iterations=0, channel_mask=model.channel_mask),
                                     settled_fraction=rough)
    halves_differ = 0
    for seed in (1, 2, 3):
        batch = pipeline.pool.sample_batch(np.random.default_rng(seed), 6, trainer.device)
        results = {}
        for cores in (1, 2, 3):
            monkeypatch.setattr(training, "adapt_threads", lambda cores=cores: cores)
            results[cores] = trainer._lasso_codes(batch)
        for cores in (2, 3):
            for whole, parts in zip(results[1], results[cores]):
                assert torch.equal(whole, parts)
        codes, kept = results[1]
        assert 0 < int((kept > 0).sum()) <= int((codes > 0).sum())  # kept spikes are a part of the codes
        # Halves each deciding on their own when to stop: other codes (what the lockstep prevents).
        alone = np.concatenate([on_their_own.encode(half.numpy()) for half in torch.tensor_split(batch, 2)])
        halves_differ += not np.array_equal(alone, codes.numpy())
    assert halves_differ >= 1
