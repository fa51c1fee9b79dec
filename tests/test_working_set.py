"""The working-set encoder solves the encoder's lasso on the codes that can be non-zero, and finds the same spikes."""

import time

import numpy as np
from scipy.ndimage import maximum_filter1d
import pytest
import torch

from engine.model import working_set
from engine.pipeline.inference import infer_spikes, uses_working_set
from engine.model.crsae import CRsAE
from engine.io.recording import NumpyRecording
from engine.evaluation.scoring import compare_to_ground_truth
from engine.evaluation.simulator import simulate
from engine.pipeline.run import SortPipeline
from engine.pipeline.training import ConfigError, TrainingConfig
from engine.model.sparse_gram import coordinate_steps, sparse_gram
from engine.model.working_set import ROUGH_SETTLED_FRACTION, VIOLATION_MARGIN, WorkingSetEncoder, gram_tensor

# A margin this small makes the working set solve the lasso itself (float32 noise on the gradient is ~1e-6).
EXACT_MARGIN = 1e-4


def biphasic(n_taps=24, width=2.0):
    taps = np.arange(n_taps, dtype=np.float64)
    return -(taps - n_taps / 3) * np.exp(-0.5 * ((taps - n_taps / 3) / width) ** 2)


def objective(model, signal, codes):
    with torch.no_grad():
        residual = torch.from_numpy(signal) - model.decode(torch.from_numpy(codes))
    return 0.5 * float((residual**2).sum()) + float((model.lambdas.numpy()[None, :, None] * codes).sum())


def test_gram_tensor_is_the_encoders_operator_on_an_impulse():
    rng = np.random.default_rng(0)
    model = CRsAE(rng.standard_normal((3, 2, 9)), 1.0)
    gram = gram_tensor(model)
    codes = torch.zeros(1, 3, 40)
    codes[0, 1, 20] = 1.0
    with torch.no_grad():
        response = model.analysis(model.synthesis(codes))[0].numpy()  # (3, 40)
    # G[k, j, d + L - 1] = <atom (k, t), atom (j, t + d)>: an impulse of filter 1 at 20 seen from every (j, 20 + d).
    np.testing.assert_allclose(gram[1, :, :], response[:, 20 - 8 : 20 + 9], atol=1e-5)



def test_gram_tensor_is_exactly_symmetric_where_filters_do_not_meet():
    """G[k, j, d] = G[j, k, −d] bit for bit, zeros included: filters with silent taps at both ends on
    partly shared channels leave the transform's rounding (±1e-18) at the lags where they do not meet,
    which made a working set's Gram matrix non-zero in one direction only."""
    rng = np.random.default_rng(0)
    filters = np.zeros((6, 8, 30), dtype=np.float32)
    for k in range(6):
        filters[k, k : k + 3, 5:25] = rng.standard_normal((3, 20))
    gram = gram_tensor(CRsAE(torch.from_numpy(filters), 1.0))
    mirrored = gram.transpose(1, 0, 2)[:, :, ::-1]
    np.testing.assert_array_equal(gram, mirrored)
    assert np.all(gram[0, 1, :9] == 0) and np.all(gram[0, 1, -9:] == 0)  # taps 5-24 of each: no overlap past ±19
    assert gram[0, 1, 29] != 0 and np.all(gram[0, 4] == 0)  # channels 1-2 shared; none with filter 4


def test_sparse_gram_equals_the_dense_gram_between_the_chosen_codes():
    rng = np.random.default_rng(1)
    model = CRsAE(rng.standard_normal((2, 1, 6)), 1.0)
    n_codes = 30
    dense = np.zeros((2 * n_codes, 2 * n_codes))  # row f * n_codes + t
    with torch.no_grad():
        for k in range(2):
            for t in range(n_codes):
                impulse = torch.zeros(1, 2, n_codes)
                impulse[0, k, t] = 1.0
                dense[k * n_codes + t] = model.analysis(model.synthesis(impulse))[0].numpy().ravel()
    filters = rng.integers(0, 2, 25)
    times = rng.choice(n_codes, 25)
    unique = np.unique(filters * n_codes + times)
    filters, times = unique // n_codes, unique % n_codes  # in (filter, time) order: not time order
    matrix = sparse_gram(gram_tensor(model), filters, times).toarray()
    np.testing.assert_allclose(matrix, dense[np.ix_(unique, unique)], atol=1e-5)


def test_sparse_gram_stores_no_entry_between_filters_on_far_apart_channels():
    # Filters 0 and 1 share channel 1; filter 2 lives on channel 3 alone and meets only itself.
    rng = np.random.default_rng(4)
    filters = np.zeros((3, 4, 6), dtype=np.float32)
    filters[0, :2] = rng.standard_normal((2, 6))
    filters[1, 1:3] = rng.standard_normal((2, 6))
    filters[2, 3] = rng.standard_normal(6)
    gram = gram_tensor(CRsAE(torch.from_numpy(filters), 1.0))
    codes = np.array([0, 1, 2, 0, 2, 1])
    times = np.array([3, 4, 4, 9, 12, 30])  # time order; the last is more than a filter length from all
    matrix = sparse_gram(gram, codes, times)
    expected = np.zeros((6, 6), dtype=np.float32)
    for i in range(6):
        for j in range(6):
            lag = times[j] - times[i]
            if abs(lag) < 6:
                expected[i, j] = gram[codes[i], codes[j], lag + 5]
    np.testing.assert_array_equal(matrix.toarray(), expected)
    assert matrix.nnz == np.count_nonzero(expected)  # zeros are not stored: no work for far-apart pairs
    assert matrix[2, 0] == 0 and matrix[1, 2] == 0


@pytest.fixture(scope="module")
def simulated():
    traces, truth = simulate(duration_s=6.0, n_units=3, sampling_rate=10_000.0, seed=5)
    recording = NumpyRecording(traces, 10_000.0)
    trainer = SortPipeline(recording, TrainingConfig(batch_size=4, window_ms=100.0, n_epochs=0.1, n_filters=6))
    trainer.prepare()
    return recording, truth, trainer


def test_working_set_codes_match_the_dense_encoder_on_a_simulated_recording(simulated):
    _, _, trainer = simulated
    model = trainer.model
    chunks = [trainer.recording.get_traces(start, start + 10_000).T / trainer.noise_levels[:, None]
              for start in (0, 20_000)]
    signal = np.stack(chunks).astype(np.float32)  # two chunks solved as one problem
    lipschitz = model.lipschitz()
    encoder = WorkingSetEncoder(model, lipschitz)
    sparse_codes = encoder.encode(signal)
    with torch.no_grad():
        dense_codes = model.encode(torch.from_numpy(signal), lipschitz=lipschitz).numpy()
        converged = model.encode(torch.from_numpy(signal), lipschitz=lipschitz, n_iterations=2000).numpy()
    assert encoder.sparse_chunks == 2 and encoder.dense_chunks == 0
    assert sparse_codes.shape == dense_codes.shape
    # The same lasso: objective no worse than the dense encoder's T steps reach.
    for row in range(2):
        assert objective(model, signal[row : row + 1], sparse_codes[row : row + 1]) <= \
            objective(model, signal[row : row + 1], dense_codes[row : row + 1]) * (1 + 1e-4)
    # The working set runs FISTA to convergence, so it lands on the lasso's solution (dense FISTA run
    # for 3000 steps) more closely than the dense encoder's T steps. Compared before debiasing: the
    # 6 look-alike filters make the solution nearly degenerate, and debiasing a support that differs
    # by one 0.03 code (allowed below) turns it into a 2.7 one, where the lasso itself agrees.
    lasso = CRsAE(model.filters.detach(), model.lambdas.detach(), model.n_iterations, n_debias_iterations=0)
    sparse_lasso = WorkingSetEncoder(lasso, lipschitz, violation_margin=EXACT_MARGIN).encode(signal)
    with torch.no_grad():
        dense_lasso = lasso.encode(torch.from_numpy(signal), lipschitz=lipschitz).numpy()
        converged = lasso.encode(torch.from_numpy(signal), lipschitz=lipschitz, n_iterations=3000).numpy()
    support_sparse, support_dense, support_converged = sparse_lasso > 0, dense_lasso > 0, converged > 0
    assert (support_sparse ^ support_converged).sum() <= min((support_dense ^ support_converged).sum(),
                                                            0.01 * support_converged.sum())
    # Measured: 0.5 % of the largest code apart, the dense encoder's T steps 2.4 %.
    assert np.abs(sparse_lasso - converged).max() < 0.02 * converged.max()
    assert np.abs(sparse_lasso - converged).max() < np.abs(dense_lasso - converged).max()
    assert objective(lasso, signal, sparse_lasso) <= objective(lasso, signal, converged) * (1 + 1e-5)
    # After debiasing, both explain the signal alike.
    with torch.no_grad():
        sparse_signal, dense_signal = (model.decode(torch.from_numpy(codes)).numpy() for codes in (sparse_codes, dense_codes))
    assert np.linalg.norm(sparse_signal - dense_signal) < 0.05 * np.linalg.norm(dense_signal)


def test_the_default_margin_leaves_out_only_codes_far_under_a_spike(simulated):
    """VIOLATION_MARGIN: W stops growing when no code outside it would enter above margin × λ. The
    solution is the lasso's up to codes that small; every code a spike could come from is there."""
    _, _, trainer = simulated
    model = trainer.model
    lasso = CRsAE(model.filters.detach(), model.lambdas.detach(), model.n_iterations, n_debias_iterations=0)
    signal = np.stack([trainer.recording.get_traces(start, start + 10_000).T / trainer.noise_levels[:, None]
                       for start in (0, 20_000)]).astype(np.float32)
    lipschitz = model.lipschitz()
    codes = WorkingSetEncoder(lasso, lipschitz).encode(signal)
    with torch.no_grad():
        converged = lasso.encode(torch.from_numpy(signal), lipschitz=lipschitz, n_iterations=3000).numpy()
        gradient = lasso.analysis(torch.from_numpy(signal) - lasso.decode(torch.from_numpy(codes))).numpy()
    lambdas = model.lambdas.numpy()[None, :, None]
    # ε-optimal: nothing outside the support wants in by more than the margin (and float32 noise).
    outside = np.where(codes == 0, gradient / lambdas, -np.inf)
    assert outside.max() <= 1 + VIOLATION_MARGIN + 1e-3
    # Every code of the lasso's solution of a spike's size (λ or more) is found, and the objective barely moves.
    big = converged >= lambdas
    assert big.sum() > 10 and np.all(codes[big] > 0)
    assert objective(lasso, signal, codes) <= objective(lasso, signal, converged) * 1.001


def test_the_solves_between_checks_stop_loosely_and_the_last_one_converges(simulated, monkeypatch):
    """CHECK_CHANGE: while W grows its solves stop early; once it stops, all of W is solved to
    CONVERGED_CHANGE, so the codes are those of solving to convergence every time, up to that tolerance."""
    _, _, trainer = simulated
    model = trainer.model
    lasso = CRsAE(model.filters.detach(), model.lambdas.detach(), model.n_iterations, n_debias_iterations=0)
    signal = np.stack([trainer.recording.get_traces(start, start + 10_000).T / trainer.noise_levels[:, None]
                       for start in (0, 20_000)]).astype(np.float32)
    tolerances = []
    solve = WorkingSetEncoder._fista
    monkeypatch.setattr(WorkingSetEncoder, "_fista",
                        lambda self, *args: tolerances.append(args[4] if len(args) > 4 else working_set.CONVERGED_CHANGE)
                        or solve(self, *args))
    loose = WorkingSetEncoder(lasso, violation_margin=EXACT_MARGIN).encode(signal)
    assert tolerances[0] == working_set.CHECK_CHANGE > working_set.CONVERGED_CHANGE
    assert tolerances[-1] == working_set.CONVERGED_CHANGE and tolerances.count(working_set.CONVERGED_CHANGE) == 1
    monkeypatch.setattr(working_set, "CHECK_CHANGE", working_set.CONVERGED_CHANGE)
    converged = WorkingSetEncoder(lasso, violation_margin=EXACT_MARGIN).encode(signal)
    assert objective(lasso, signal, loose) <= objective(lasso, signal, converged) * (1 + 1e-5)
    with torch.no_grad():
        loose_signal, converged_signal = (lasso.decode(torch.from_numpy(codes)).numpy() for codes in (loose, converged))
    assert np.linalg.norm(loose_signal - converged_signal) < 0.01 * np.linalg.norm(converged_signal)


def test_rough_coding_stops_its_checks_sooner_and_stays_near_the_solution(simulated, monkeypatch):
    """settled_fraction (pruning's and training's passes): fewer optimality checks, nearly the same codes."""
    _, _, trainer = simulated
    model = trainer.model
    signal = np.stack([trainer.recording.get_traces(start, start + 10_000).T / trainer.noise_levels[:, None]
                       for start in (0, 20_000)]).astype(np.float32)
    passes = []
    solve = WorkingSetEncoder._fista
    monkeypatch.setattr(WorkingSetEncoder, "_fista", lambda self, *args: passes.append(1) or solve(self, *args))
    found = {}
    for fraction in (0.0, ROUGH_SETTLED_FRACTION):
        passes.clear()
        codes = WorkingSetEncoder(model, settled_fraction=fraction, violation_margin=EXACT_MARGIN).encode(signal)
        found[fraction] = (len(passes), codes)
    # Measured: 2 FISTA passes instead of 4, the objective 0.006 % lower, the signals 1.8 % apart.
    (exact_passes, exact), (rough_passes, rough) = found[0.0], found[ROUGH_SETTLED_FRACTION]
    assert rough_passes < exact_passes
    assert objective(model, signal, rough) <= objective(model, signal, exact) * 1.01
    # They explain the signal alike (look-alike filters may share a spike's code differently).
    with torch.no_grad():
        rough_signal, exact_signal = (model.decode(torch.from_numpy(codes)).numpy() for codes in (rough, exact))
    assert np.linalg.norm(rough_signal - exact_signal) < 0.05 * np.linalg.norm(exact_signal)


def test_a_code_the_screening_misses_is_found_by_the_optimality_check():
    """Two spikes of one neuron at the lag where its shape anti-correlates: the second
    spike's correlation is pulled under λ by the first, yet the lasso keeps it."""
    shape = biphasic()
    model = CRsAE(shape[None, None, :], 4.0, n_iterations=100, n_debias_iterations=0)
    gram = gram_tensor(model)[0, 0]
    lag = int(np.argmin(gram[len(shape) - 1 :]))  # most negative autocorrelation at a positive lag
    rho = -gram[len(shape) - 1 + lag]
    assert rho > 0.3
    # Both active, the lasso's codes are [first, second] − λ/(1 − ρ): the second survives when it exceeds λ/(1 − ρ).
    first, second = 30.0, 4.0 / (1 - rho) + 3.0
    filters = model.filters.detach().numpy()[0, 0].astype(np.float64)
    signal = np.zeros((1, 1, 200))
    signal[0, 0, 60 : 60 + len(shape)] += first * filters
    signal[0, 0, 60 + lag : 60 + lag + len(shape)] += second * filters
    correlation = model.analysis(torch.from_numpy(signal).float())[0, 0].detach().numpy()
    assert correlation[60 + lag] < 4.0  # screening at λ leaves it out
    encoder = WorkingSetEncoder(model, screen=1.0)
    codes = encoder.encode(signal.astype(np.float32))[0, 0]
    assert codes[60 + lag] > 1.0
    with torch.no_grad():
        converged = model.encode(torch.from_numpy(signal).float(), n_iterations=3000)[0, 0].numpy()
    np.testing.assert_allclose(codes[[60, 60 + lag]], converged[[60, 60 + lag]], rtol=0.02)


def test_dense_chunks_go_to_the_dense_encoder(simulated, monkeypatch):
    _, _, trainer = simulated
    monkeypatch.setattr(working_set, "MAX_ENTRIES_PER_CODE", 0.0)
    signal = (trainer.recording.get_traces(0, 5_000).T / trainer.noise_levels[:, None]).astype(np.float32)[None]
    encoder = WorkingSetEncoder(trainer.model)
    codes = encoder.encode(signal)
    assert encoder.dense_chunks == 1 and encoder.sparse_chunks == 0
    with torch.no_grad():
        expected = trainer.model.encode(torch.from_numpy(signal)).numpy()
    np.testing.assert_allclose(codes, expected, atol=1e-4 * expected.max())  # float32 sums, another order


def test_both_solvers_sort_the_same_spikes(simulated):
    recording, truth, trainer = simulated
    found = {}
    for solver in ("dense", "working-set"):
        found[solver] = infer_spikes(trainer.model, trainer.recording, trainer.noise_levels, trainer.dead_time,
                                     trainer.lambda_, solver=solver)
    dense, sparse = found["dense"], found["working-set"]
    agreement = compare_to_ground_truth(dense.times, dense.filters, sparse.times, sparse.filters,
                                        recording.sampling_rate)
    assert len(dense) > 300
    assert agreement.accuracy.min() > 0.97


def test_solver_choice_follows_the_device_and_refuses_unknown_names():
    assert uses_working_set("auto", torch.device("cpu"))
    assert not uses_working_set("auto", torch.device("cuda"))
    assert not uses_working_set("dense", torch.device("cpu"))
    assert uses_working_set("working-set", torch.device("cuda"))
    with pytest.raises(ValueError, match="unknown solver 'sparse'"):
        uses_working_set("sparse", torch.device("cpu"))
    with pytest.raises(ConfigError, match="solver must be one of auto, dense, working-set"):
        TrainingConfig(solver="fast").validate()


def test_filters_on_far_apart_channels_do_not_interact():
    """A local dictionary: the Gram between filters with disjoint channels is exactly zero and not stored."""
    rng = np.random.default_rng(3)
    filters = rng.standard_normal((2, 4, 9)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32)
    model = CRsAE(filters, 1.0, channel_mask=mask)
    assert np.all(model.filters.detach().numpy()[0, 2:] == 0) and np.all(model.filters.detach().numpy()[1, :2] == 0)
    gram = gram_tensor(model)
    assert np.all(gram[0, 1] == 0) and np.any(gram[0, 0] != 0)
    times = np.array([10, 12, 14])
    matrix = sparse_gram(gram, np.array([0, 1, 0]), times)
    dense = matrix.toarray()
    assert dense[0, 1] == 0 and dense[1, 2] == 0 and dense[0, 2] != 0
    assert matrix.nnz == 5  # three diagonal entries and the 0-0 pair both ways


def test_a_spike_starts_with_one_code_not_one_per_overlapping_filter():
    """The screen keeps a spike's best code and drops the shadows it casts on look-alike filters,
    but keeps a second spike the first cannot explain, however close."""
    shape = biphasic()
    look_alike = np.roll(shape, 1) + 0.3 * biphasic(width=3.0)  # overlaps the first filter's shape closely
    taps = np.arange(len(shape))
    other = np.sin(taps / 0.8) * np.exp(-0.5 * ((taps - 12) / 5.0) ** 2)  # a different shape
    model = CRsAE(np.stack([shape, look_alike, other])[:, None, :], 4.0, n_debias_iterations=0)
    similarity = gram_tensor(model).max(axis=2)
    assert similarity[0, 1] > 0.9 and similarity[0, 2] < 0.3
    filters = model.filters.detach().numpy()[:, 0].astype(np.float64)
    signal = np.zeros((1, 1, 300), dtype=np.float32)
    signal[0, 0, 100 : 100 + len(shape)] += 50.0 * filters[0]
    encoder = WorkingSetEncoder(model)
    with torch.no_grad():
        correlation = model.analysis(torch.from_numpy(signal)).numpy()
    candidates = encoder._peaks_above(correlation, encoder.screen * encoder.lambdas[None, :, None])
    assert candidates[0, 1].any()  # the look-alike correlates above its threshold: a shadow
    kept = encoder._distinct(candidates, correlation)
    assert np.flatnonzero(kept[0, 0]).tolist() == [100] and not kept[0, 1].any()
    # A spike of the third filter 8 samples later is no shadow of the first: it stays.
    signal[0, 0, 108 : 108 + len(shape)] += 30.0 * filters[2]
    with torch.no_grad():
        correlation = model.analysis(torch.from_numpy(signal)).numpy()
    candidates = encoder._peaks_above(correlation, encoder.screen * encoder.lambdas[None, :, None])
    kept = encoder._distinct(candidates, correlation)
    assert kept[0, 0, 100] and kept[0, 2, 108]
    # And the solution is still the lasso's.
    codes = encoder.encode(signal)[0]
    with torch.no_grad():
        converged = model.encode(torch.from_numpy(signal), n_iterations=3000)[0].numpy()
    np.testing.assert_allclose(codes[[0, 2], [100, 108]], converged[[0, 2], [100, 108]], rtol=0.02)


def test_pairs_in_runs_lists_every_pair_of_each_run():
    from engine.model.pairs import pairs_in_runs

    first, last = np.array([0, 2, 5, 3]), np.array([2, 2, 7, 1])  # an empty and a reversed run give nothing
    rows, columns = pairs_in_runs(first, last, offset=10)
    assert list(zip(rows.tolist(), columns.tolist())) == [(10, 0), (10, 1), (12, 5), (12, 6)]


def test_coordinate_steps_bound_the_working_sets_curvature():
    """Each code's step is 1 / its Gram row's absolute sum: diag(r) − HᵀH must be positive semi-definite,
    i.e. the scaled Gram D½ G D½ has no eigenvalue above 1, or FISTA with those steps could diverge."""
    rng = np.random.default_rng(3)
    model = CRsAE(np.stack([biphasic(), biphasic(width=3.0), -biphasic()])[:, None, :] + 0.1 * rng.standard_normal((3, 1, 24)),
                  1.0)
    filters = rng.integers(0, 3, 60)
    times = np.sort(rng.choice(400, 60, replace=False))
    gram = sparse_gram(gram_tensor(model), filters, times)
    steps = coordinate_steps(gram)
    scaled = np.sqrt(steps)[:, None] * gram.toarray() * np.sqrt(steps)[None, :]
    assert np.linalg.eigvalsh(scaled).max() <= 1 + 1e-5
    # Far longer than the dense encoder's 1/L wherever codes are few: that is the point.
    assert np.median(steps) > 2.0 / model.lipschitz()


def test_parallel_batches_find_the_same_spikes_as_one_at_a_time(simulated):
    _, _, trainer = simulated
    args = (trainer.model, trainer.recording, trainer.noise_levels, trainer.dead_time, trainer.lambda_)
    fractions = []
    one = infer_spikes(*args, chunk_size=5_000, batch_chunks=2, parallel=1)
    both = infer_spikes(*args, chunk_size=5_000, batch_chunks=2, parallel=2, progress=fractions.append)
    assert len(one) > 100
    np.testing.assert_array_equal(one.times, both.times)
    np.testing.assert_array_equal(one.filters, both.filters)
    np.testing.assert_allclose(one.amplitudes, both.amplitudes, rtol=1e-4)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)  # 6 batches, reported in order done


def test_parallel_batches_stop_when_asked(simulated):
    _, _, trainer = simulated
    args = (trainer.model, trainer.recording, trainer.noise_levels, trainer.dead_time, trainer.lambda_)
    everything = infer_spikes(*args, chunk_size=2_000, batch_chunks=1, parallel=2)
    finished = []
    partial = infer_spikes(*args, chunk_size=2_000, batch_chunks=1, parallel=2,
                           progress=finished.append, should_stop=lambda: len(finished) >= 2)
    assert 0 < len(partial) < len(everything)
    assert len(finished) < 30  # 30 batches of one chunk: the rest never started


class _OneReaderAtATime(NumpyRecording):
    """A reader that is not safe to call from two threads: it records whether it ever was."""

    concurrent_reads = False

    def __init__(self, *args, **kwargs):
        self.inside = 0
        self.most_inside = 0
        super().__init__(*args, **kwargs)

    def _read_block(self, start, stop, channel_index):
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            time.sleep(0.002)  # long enough for another thread to come in if it could
            return super()._read_block(start, stop, channel_index)
        finally:
            self.inside -= 1


def test_readers_that_keep_state_are_read_one_thread_at_a_time(simulated):
    recording, _, trainer = simulated
    from engine.pipeline.preprocessing import PreprocessedRecording

    raw = _OneReaderAtATime(recording.get_traces(), recording.sampling_rate)
    target = PreprocessedRecording(raw)
    spikes = infer_spikes(trainer.model, target, trainer.noise_levels, trainer.dead_time, trainer.lambda_,
                          chunk_size=2_000, batch_chunks=1, parallel=2)
    assert len(spikes) > 100 and raw.most_inside == 1


def test_peaks_are_found_where_they_stand_as_a_running_maximum_finds_them():
    """_peaks_above compares each coordinate above the bar with its own window only; it must
    pick exactly what a running maximum over the whole batch picks, W's coordinates not counting."""
    rng = np.random.default_rng(3)
    model = CRsAE(rng.standard_normal((3, 2, 16)).astype(np.float32), 1.0)
    encoder = WorkingSetEncoder(model)
    values = rng.standard_normal((2, 3, 400)).astype(np.float32)
    values[:, :, 50:60] = 3.0  # a plateau: ties are peaks
    thresholds = np.array([0.5, 1.0, 1.5], dtype=np.float32)[None, :, None]
    excluded = rng.random(values.shape) < 0.2
    radius = max(encoder.n_taps // 4, 1)
    for skip in (None, excluded):
        outside = values if skip is None else np.where(skip, -np.inf, values)
        running = maximum_filter1d(outside, 2 * radius + 1, axis=2, mode="constant", cval=-np.inf)
        expected = (outside > thresholds) & (outside >= running)
        np.testing.assert_array_equal(encoder._peaks_above(values, thresholds, excluded=skip), expected)
        # The checks list the peaks as they find them (no mask): the same peaks, in W's order.
        listed = encoder._peak_coordinates(values, thresholds, excluded=skip)
        np.testing.assert_array_equal(np.stack(listed), np.stack(encoder._coordinates(expected)))


def test_runs_screened_by_their_largest_value_lose_no_peak_at_their_edges():
    """A gradient is mostly under its bars, so the peak search skips runs of samples whose largest value
    does not clear the bar (local_peaks.SCREENED_RUN). Bumps on a run's first and last sample, a bump
    whose bigger neighbour lies in the next run, excluded coordinates and flagged blocks: the peaks must
    be those a running maximum over the whole batch gives."""
    from engine.model import local_peaks

    rng = np.random.default_rng(11)
    run, radius = local_peaks.SCREENED_RUN, 5
    values = (0.3 * rng.standard_normal((2, 3, 20 * run))).astype(np.float32)  # noise, under every bar
    for edge in (run - 1, run, 2 * run - 1, 3 * run, 5 * run + 2, 20 * run - 1):  # on runs' first and last samples
        values[:, :, edge] = 2.0 + 0.01 * edge
    values[:, :, 7 * run - 2] = 2.0
    values[:, :, 7 * run + 1] = 2.5  # the bigger neighbour, across the run's edge, within the radius
    values[0, 1, 9 * run - 3 : 9 * run + 3] = 1.8  # a plateau over an edge: ties are peaks
    values[1, 2, 11 * run + 1] = 3.0  # excluded: its smaller neighbour becomes a peak
    values[1, 2, 11 * run] = 2.2
    excluded = np.zeros(values.shape, dtype=bool)
    excluded[1, 2, 11 * run + 1] = True
    thresholds = np.array([1.0, 1.5, 1.9], dtype=np.float32)
    outside = np.where(excluded, -np.inf, values)
    running = maximum_filter1d(outside, 2 * radius + 1, axis=2, mode="constant", cval=-np.inf)
    expected = (outside > thresholds[None, :, None]) & (outside >= running)
    assert 10 < expected.sum() < 60
    np.testing.assert_array_equal(local_peaks.peak_indices(values, thresholds, radius, excluded),
                                  np.flatnonzero(expected))
    # Flagged blocks only (a check's second look): the peaks of those blocks, the same ones.
    blocks = local_peaks.ChangedBlocks(values.shape, radius)
    blocks.flags[::2] = True
    in_flagged = blocks.holds(np.flatnonzero(expected))
    np.testing.assert_array_equal(local_peaks.peak_indices_in(values, thresholds, radius, excluded, blocks),
                                  np.flatnonzero(expected)[in_flagged])


def test_shadows_are_the_candidates_a_bigger_neighbour_explains_below_their_threshold():
    """The compiled screen walks each candidate's neighbours and stops at the first that explains it
    away; it must mark the candidates the rule marks when every pair is written out, ties included."""
    from engine.model.local_peaks import shadows

    rng = np.random.default_rng(6)
    gram = rng.uniform(-0.2, 1.0, (3, 3, 2 * 16 - 1)).astype(np.float32)
    lambdas = np.array([1.0, 1.5, 0.8], dtype=np.float32)
    # 300 candidates at random, then two alone with equal scores (the earlier one wins the tie).
    times = np.concatenate([np.sort(rng.integers(0, 2_000, 300)), [3_000, 3_002]])
    filters = np.concatenate([rng.integers(0, 3, 300), [2, 2]])
    values = np.concatenate([rng.uniform(0.8, 6.0, 300), [3.0, 3.0]]).astype(np.float32)
    gram[2, 2, 15 - 2 : 15 + 3] = 1.0
    n = len(times)
    radius = 8
    expected = np.zeros(n, dtype=bool)
    score = values / lambdas[filters]
    for i in range(n):
        for j in range(n):
            if abs(int(times[j]) - int(times[i])) > radius:
                continue
            bigger = score[j] > score[i] or (score[j] == score[i] and j < i)
            shadow = gram[filters[i], filters[j], times[j] - times[i] + 15] * values[j]
            if bigger and values[i] - shadow < lambdas[filters[i]]:
                expected[i] = True
    found = shadows(gram, filters, times, values, lambdas, radius)
    np.testing.assert_array_equal(found, expected)
    assert 0 < expected.sum() < n and not expected[-2] and expected[-1]


def test_codes_near_a_moved_one_are_those_a_dilation_of_its_filter_reaches():
    """_near pairs W's coordinates with the moved ones by binary search; it must mark the same
    codes as dilating each moved filter's coordinates in time over the filters it reaches."""
    rng = np.random.default_rng(4)
    filters = np.zeros((4, 8, 12), dtype=np.float32)
    for k, channel in enumerate((0, 1, 5, 6)):  # 0-1 and 2-3 share a channel; the pairs do not
        filters[k, channel : channel + 2] = rng.standard_normal((2, 12))
    encoder = WorkingSetEncoder(CRsAE(filters, 1.0))
    shape = (3, 4, 300)
    in_set = rng.random(shape) < 0.05
    moved_mask = in_set & (rng.random(shape) < 0.1)
    # At the chunks' edges, with codes just across: a moved code reaches no further than its chunk.
    moved_mask[2, :2, :40] = moved_mask[1, 2:, 260:] = False
    moved_mask[1, 0, 299] = moved_mask[2, 2, 0] = True
    in_set[2, 0, 5] = in_set[1, 3, 295] = True
    in_set |= moved_mask
    reach = 2 * (encoder.n_taps - 1)
    near = np.zeros(shape, dtype=bool)
    for source in range(4):
        dilated = maximum_filter1d(moved_mask[:, source, :], 2 * reach + 1, axis=1, mode="constant")
        near[:, encoder.nearby[source], :] |= dilated[:, None, :]
    members = encoder._coordinates(in_set)
    found = encoder._near(encoder._coordinates(moved_mask), members, reach)
    chunks, kinds, times = members
    np.testing.assert_array_equal(found, near[chunks, kinds, times - chunks * encoder._stride(in_set)])
    assert not near[2, 0, 5] and not near[1, 3, 295]
    assert found.any() and not found.all()


def test_the_compiled_gram_product_is_the_models_own_operator():
    """HᵀHx from the Gram rows (engine/model/gram_rows.py) over whole chunks, with local filters
    (some pairs never interact) and codes at both ends of a chunk, equals the model's synthesis
    then analysis."""
    rng = np.random.default_rng(6)
    filters = rng.standard_normal((4, 6, 11)).astype(np.float32)
    mask = np.zeros((4, 6), dtype=np.float32)
    for k, first_channel in enumerate((0, 1, 3, 4)):
        mask[k, first_channel : first_channel + 2] = 1.0  # 0-1 share a channel, 2-3 too, the pairs do not
    model = CRsAE(filters, 1.0, channel_mask=mask)
    encoder = WorkingSetEncoder(model)
    assert len(encoder.partners[0]) == 2  # filter 0 meets only itself and filter 1
    codes = np.zeros((3, 4, 120), dtype=np.float32)
    chosen = rng.random(codes.shape) < 0.03
    chosen[0, 1, 0] = chosen[2, 3, 119] = True
    codes[chosen] = rng.uniform(0.5, 5.0, int(chosen.sum()))
    with torch.no_grad():
        expected = model.analysis(model.synthesis(torch.from_numpy(codes))).numpy()
    # W holds the non-zeros and some zeros (codes FISTA left at 0): the product reads the non-zeros from W,
    # added in the order a pass over the whole batch lists them, so it is that pass's to the last bit.
    members = encoder._coordinates(chosen | (rng.random(codes.shape) < 0.02))
    product = encoder._gram_product(codes, members)
    np.testing.assert_allclose(product, expected, atol=1e-4)
    chunks, kinds, times = np.nonzero(codes)
    np.testing.assert_array_equal(
        product, encoder.gram_rows.product(chunks, kinds, times, codes[chunks, kinds, times], codes.shape))


def test_the_codes_local_maxima_are_those_a_maximum_filter_finds_ties_and_edges_included():
    from scipy.ndimage import maximum_filter1d

    from engine.model.local_peaks import local_maxima

    rng = np.random.default_rng(5)
    for trial in range(12):
        codes = np.zeros((int(rng.integers(1, 9)), int(rng.integers(1, 400))), dtype=np.float32)
        nonzero = rng.random(codes.shape) < rng.choice([0.01, 0.2, 0.9])
        # Whole values make ties (both maxima count); a code at either end has only zeros beyond it.
        codes[nonzero] = rng.integers(1, 3, int(nonzero.sum())) if trial % 2 else rng.random(int(nonzero.sum()))
        codes[:, 0] = 2.0
        radius = int(rng.integers(0, 12))
        biggest = maximum_filter1d(codes, size=2 * radius + 1, axis=1, mode="constant")
        rows, indices = np.nonzero((codes > 0) & (codes >= biggest))
        padded = np.pad(codes, ((0, 0), (1, 1)))
        found_rows, found_indices, around = local_maxima(codes, radius)
        np.testing.assert_array_equal(found_rows, rows)
        np.testing.assert_array_equal(found_indices, indices)
        np.testing.assert_array_equal(around, np.stack([padded[rows, indices + lag] for lag in range(3)], axis=1))


@pytest.mark.parametrize("margin", [VIOLATION_MARGIN, EXACT_MARGIN])
def test_the_checks_look_again_only_where_values_moved_and_find_what_a_whole_look_finds(simulated, monkeypatch, margin):
    """After the first check, peaks are looked for only in the blocks a moved code or a new member of W
    reaches (local_peaks.ChangedBlocks), the last look's shadows kept elsewhere: the codes are those of a
    look at the whole batch at every check, to the bit, and the looks cover less than the batch."""
    from engine.model import local_peaks

    _, _, trainer = simulated
    chunks = [trainer.recording.get_traces(start, start + 10_000).T / trainer.noise_levels[:, None]
              for start in (0, 20_000, 40_000)]
    signal = np.stack(chunks).astype(np.float32)
    looked = []
    restricted_look = working_set.peak_indices_in

    def spied(values, thresholds, radius, excluded, blocks):
        looked.append(float(blocks.flags.mean()))
        return restricted_look(values, thresholds, radius, excluded, blocks)

    monkeypatch.setattr(working_set, "peak_indices_in", spied)
    restricted = WorkingSetEncoder(trainer.model, violation_margin=margin).encode(signal)
    assert looked and min(looked) < 1.0  # some checks looked at part of the batch only
    # Every check looks at the whole batch: no block left out, no shadow carried over.
    monkeypatch.setattr(working_set, "peak_indices_in",
                        lambda values, thresholds, radius, excluded, blocks: local_peaks.peak_indices(
                            values, thresholds, radius, excluded))
    monkeypatch.setattr(local_peaks.ChangedBlocks, "holds", lambda self, flat: np.ones(len(flat), dtype=bool))
    whole = WorkingSetEncoder(trainer.model, violation_margin=margin).encode(signal)
    np.testing.assert_array_equal(restricted, whole)


def test_on_a_probe_the_checks_look_again_only_on_the_moved_codes_partners_and_find_the_same_codes(monkeypatch):
    """A local dictionary on 12 channels (filters on 3 channels each: a moved code changes its partners' rows
    only): the restricted looks give the codes a look at the whole batch at every check gives, to the bit."""
    from engine.model import local_peaks

    rng = np.random.default_rng(11)
    n_channels, n_filters, n_taps = 12, 8, 21
    shape = biphasic(n_taps, 2.0)
    filters = np.zeros((n_filters, n_channels, n_taps), dtype=np.float32)
    mask = np.zeros((n_filters, n_channels), dtype=np.float32)
    for k in range(n_filters):
        first = min(k * 3 // 2, n_channels - 3)
        mask[k, first : first + 3] = 1.0
        filters[k, first : first + 3] = rng.uniform(0.5, 1.5, (3, 1)) * np.roll(shape, k % 3)[None]
    model = CRsAE(filters, 3.0, channel_mask=mask)
    codes = np.zeros((2, n_filters, 3000 - n_taps + 1), dtype=np.float32)
    spikes = rng.random(codes.shape) < 0.004  # overlapping spikes on neighbouring filters now and then
    codes[spikes] = rng.uniform(5.0, 40.0, int(spikes.sum()))
    with torch.no_grad():
        signal = model.decode(torch.from_numpy(codes)).numpy() + rng.standard_normal((2, n_channels, 3000)).astype(np.float32)
    looked = []
    restricted_look = working_set.peak_indices_in
    monkeypatch.setattr(working_set, "peak_indices_in", lambda values, thresholds, radius, excluded, blocks: (
        looked.append(float(blocks.flags.mean())), restricted_look(values, thresholds, radius, excluded, blocks))[1])
    restricted = WorkingSetEncoder(model, violation_margin=EXACT_MARGIN).encode(signal)
    assert looked and max(looked) < 1.0  # every later look skipped part of the batch
    monkeypatch.setattr(working_set, "peak_indices_in",
                        lambda values, thresholds, radius, excluded, blocks: local_peaks.peak_indices(
                            values, thresholds, radius, excluded))
    monkeypatch.setattr(local_peaks.ChangedBlocks, "holds", lambda self, flat: np.ones(len(flat), dtype=bool))
    np.testing.assert_array_equal(restricted, WorkingSetEncoder(model, violation_margin=EXACT_MARGIN).encode(signal))
