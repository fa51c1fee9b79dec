"""The CRsAE itself: exact adjoints, FISTA solving the lasso, tied weights."""

import numpy as np
import pytest
import torch

from engine.model.crsae import CRsAE, select_device, universal_threshold


def make_model(n_filters=3, n_channels=2, n_taps=12, lam=0.1, n_iterations=200, seed=0):
    rng = np.random.default_rng(seed)
    return CRsAE(rng.standard_normal((n_filters, n_channels, n_taps)), lam, n_iterations)


def test_filters_start_at_unit_norm():
    model = make_model()
    norms = model.filters.detach().flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_synthesis_is_the_exact_adjoint_of_analysis():
    model = make_model()
    torch.manual_seed(0)
    signal = torch.randn(2, model.n_channels, 100)
    codes = torch.randn(2, model.n_filters, 100 - model.n_taps + 1)
    with torch.no_grad():
        left = (model.analysis(signal) * codes).sum()
        right = (signal * model.synthesis(codes)).sum()
    assert float(left) == pytest.approx(float(right), rel=1e-5)


def test_lipschitz_is_found_once_per_dictionary_and_again_when_it_changes(monkeypatch):
    """Every pass over the pool asks for the bound; the same filters must not pay the power iteration
    twice, and any in-place change of the filters (a training step, a normalisation) must."""
    model = make_model()
    calls = []
    original = model._lipschitz_by_power_iteration
    monkeypatch.setattr(model, "_lipschitz_by_power_iteration", lambda n: calls.append(n) or original(n))
    first = model.lipschitz()
    assert model.lipschitz() == first and len(calls) == 1
    with torch.no_grad():
        model.filters.mul_(2.0)
    assert model.lipschitz() == pytest.approx(4.0 * first, rel=1e-6) and len(calls) == 2
    model.normalize_filters_()
    assert model.lipschitz() == pytest.approx(first, rel=1e-6) and len(calls) == 3
    model.lipschitz(n_power_iterations=5)
    assert len(calls) == 4


def test_lipschitz_bounds_the_operator_norm():
    model = make_model()
    bound = model.lipschitz()
    torch.manual_seed(1)
    with torch.no_grad():
        for _ in range(20):
            codes = torch.randn(1, model.n_filters, 300)
            ratio = model.synthesis(codes).pow(2).sum() / codes.pow(2).sum()
            assert float(ratio) <= bound


def test_encoder_recovers_sparse_codes_of_a_noiseless_signal():
    model = make_model(n_filters=2, n_channels=1, n_taps=16, lam=0.05, n_iterations=400)
    true_codes = torch.zeros(1, 2, 200)
    true_codes[0, 0, 30] = 3.0
    true_codes[0, 1, 120] = 2.0
    with torch.no_grad():
        signal = model.synthesis(true_codes)
        codes = model.encode(signal)
    assert codes.min() >= 0
    assert float(codes[0, 0, 30]) == pytest.approx(3.0, abs=0.05)
    assert float(codes[0, 1, 120]) == pytest.approx(2.0, abs=0.05)
    # Debiasing removes the λ shrinkage, and nothing else lights up.
    mask = torch.ones_like(codes, dtype=torch.bool)
    mask[0, 0, 30] = mask[0, 1, 120] = False
    assert float(codes[mask].abs().max()) < 0.05


def test_gradients_flow_to_the_tied_filters_through_the_encoder():
    model = make_model(n_iterations=10)
    signal = torch.randn(1, model.n_channels, 80)
    reconstruction, codes = model(signal)
    loss = (signal - reconstruction).pow(2).mean()
    loss.backward()
    assert model.filters.grad is not None and float(model.filters.grad.abs().sum()) > 0


def test_universal_threshold_grows_with_size():
    assert universal_threshold(1, 2000) == pytest.approx(np.sqrt(2 * np.log(2000)))
    assert universal_threshold(4, 2000) > universal_threshold(1, 2000)


def test_device_selection_refuses_what_is_not_there():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            select_device("cuda")


def test_fft_gram_operator_equals_the_direct_convolutions():
    model = make_model(n_filters=4, n_channels=3, n_taps=25)
    codes = torch.randn(2, 4, 333)
    with torch.no_grad():
        direct = model._gram_operator(333, method="direct")(codes)
        by_fft = model._gram_operator(333, method="fft")(codes)
    assert torch.allclose(direct, by_fft, atol=1e-4 * float(direct.abs().max()))


def test_inference_by_fft_gives_the_same_codes():
    model = make_model(n_filters=3, n_channels=4, n_taps=60, lam=0.5, n_iterations=60)
    signal = torch.randn(2, 4, 1000)
    with torch.no_grad():
        codes_auto = model.encode(signal)  # long filters, many channels: the FFT route
        original = model._gram_operator
        model._gram_operator = lambda n, method="auto": original(n, method="direct")
        codes_direct = model.encode(signal)
    assert torch.allclose(codes_auto, codes_direct, atol=1e-3)


def test_fft_route_gives_the_same_filter_gradients():
    model = make_model(n_filters=3, n_channels=4, n_taps=60, lam=0.5, n_iterations=15)
    signal = torch.randn(2, 4, 600)
    gradients = {}
    original = CRsAE._gram_operator
    for method in ("direct", "fft"):
        model.zero_grad()
        model._gram_operator = lambda n, _method=method: original(model, n, method=_method)
        reconstruction, _ = model(signal)
        (signal - reconstruction).pow(2).mean().backward()
        gradients[method] = model.filters.grad.clone()
    assert torch.allclose(gradients["direct"], gradients["fft"], atol=1e-4 * float(gradients["direct"].abs().max()))


def test_a_truncated_gradient_leaves_the_codes_unchanged():
    """Only the last steps are kept for back-propagation; the forward pass is the same FISTA."""
    import torch

    from engine.model.crsae import CRsAE

    rng = np.random.default_rng(0)
    model = CRsAE(rng.standard_normal((3, 2, 20)).astype(np.float32), 0.5, n_iterations=40)
    signal = torch.from_numpy(rng.standard_normal((2, 2, 300)).astype(np.float32))
    lipschitz = model.lipschitz()
    full = model.encode(signal, lipschitz=lipschitz)
    truncated = model.encode(signal, lipschitz=lipschitz, gradient_iterations=5)
    torch.testing.assert_close(truncated, full, rtol=1e-5, atol=1e-6)
    truncated.sum().backward()
    assert model.filters.grad is not None and torch.isfinite(model.filters.grad).all()
    assert model.filters.grad.abs().sum() > 0


def test_the_step_budget_lowers_the_batch_and_refuses_what_cannot_fit():
    from engine.pipeline.training import ConfigError, TrainingConfig, batch_size_within_budget, step_memory_mb

    config = TrainingConfig(batch_size=32, max_step_mb=100.0, gradient_iterations=20, dictionary_update="gradient")
    one = step_memory_mb(8, 4, 6000, 20 + 20, 1)
    assert batch_size_within_budget(config, 8, 4, 6000) == int(100.0 // one) < 32
    with pytest.raises(ConfigError, match="max_step_mb"):
        batch_size_within_budget(TrainingConfig(max_step_mb=1.0), 64, 384, 6000)


def _probe_model(n_filters=80, n_channels=64, n_taps=12):
    """Filters on the neighbourhoods of a 64-channel linear probe (20 µm pitch, 60 µm radius)."""
    from engine.io.geometry import channel_neighbourhoods

    positions = np.stack([np.zeros(n_channels), 20.0 * np.arange(n_channels)], axis=1)
    neighbourhoods = channel_neighbourhoods(positions, 60.0)
    main = np.sort(np.random.default_rng(3).integers(0, n_channels, n_filters))
    torch.manual_seed(3)
    return CRsAE(torch.randn(n_filters, n_channels, n_taps), 2.0, channel_mask=neighbourhoods[main])


def test_local_convolutions_are_the_dense_ones_on_a_probe():
    import torch.nn.functional as F

    model = _probe_model()
    assert model._channel_blocks(torch.device("cpu")) is not None  # the local route is taken
    signal = torch.randn(2, model.n_channels, 300)
    codes = torch.randn(2, model.n_filters, 300 - model.n_taps + 1)
    dense_filters = model.filters.detach()
    with torch.no_grad():
        torch.testing.assert_close(model.analysis(signal), F.conv1d(signal, dense_filters), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.synthesis(codes), F.conv_transpose1d(codes, dense_filters),
                                   rtol=1e-4, atol=1e-4)
    # Gradients reach the filters as through the dense convolutions.
    local_loss = model.synthesis(model.analysis(signal)).pow(2).sum()
    (local_gradient,) = torch.autograd.grad(local_loss, model.filters)
    filters = dense_filters.clone().requires_grad_(True)
    dense_loss = F.conv_transpose1d(F.conv1d(signal, filters), filters).pow(2).sum()
    (dense_gradient,) = torch.autograd.grad(dense_loss, filters)
    mask = model.channel_mask[:, :, None]
    torch.testing.assert_close(local_gradient * mask, dense_gradient * mask, rtol=1e-3, atol=1e-3 * float(dense_gradient.abs().max()))


def test_lipschitz_bounds_the_operator_norm_of_local_filters():
    model = _probe_model()
    bound = model.lipschitz()
    torch.manual_seed(2)
    with torch.no_grad():
        codes = torch.randn(1, model.n_filters, 200)
        for _ in range(60):  # power iteration in time: approaches the true norm from below
            codes = model.analysis(model.synthesis(codes))
            codes = codes / codes.norm()
        norm = float((model.analysis(model.synthesis(codes)) * codes).sum())
    assert norm <= bound <= 1.3 * norm


def test_restarted_fista_reaches_the_lasso_solution_in_fewer_steps():
    """The working set's solves: momentum restarted, stopped at a tolerance; the same minimum."""
    from engine.model.crsae import fista

    rng = np.random.default_rng(0)
    columns = rng.standard_normal((60, 40))
    columns[:, 1::2] = columns[:, ::2] + 0.3 * rng.standard_normal((60, 20))  # look-alike pairs: ill-conditioned
    gram = torch.from_numpy((columns.T @ columns).astype(np.float32))
    correlation = torch.from_numpy((columns.T @ rng.standard_normal(60) * 3).astype(np.float32))
    step = 1.0 / float(torch.linalg.eigvalsh(gram).max())
    shrink = torch.full((40,), 0.5 * step)
    solution = fista(correlation, lambda x: gram @ x, shrink, step, 20_000)
    steps = {}
    for restart in (False, True):
        calls = []
        codes = fista(correlation, lambda x: calls.append(1) or gram @ x, shrink, step, 20_000,
                      tolerance=1e-6, restart=restart)
        steps[restart] = len(calls)
        np.testing.assert_allclose(codes.numpy(), solution.numpy(), atol=1e-3 * float(solution.max()))
    assert steps[True] < 0.5 * steps[False], steps


@pytest.mark.parametrize("shape", [(3, 8, 5, 90, 2000), (1, 4, 3, 40, 1024), (2, 40, 7, 60, 5000), (1, 4, 3, 90, 1100)])
def test_correlation_by_fft_is_conv1ds(shape):
    """Overlap-save correlation gives conv1d's "valid" correlation, segment edges included."""
    from engine.model.crsae import correlate_by_fft

    batch, n_channels, n_filters, n_taps, n = shape
    generator = torch.Generator().manual_seed(n)
    signal = torch.randn(batch, n_channels, n, generator=generator)
    filters = torch.randn(n_filters, n_channels, n_taps, generator=generator)
    direct = torch.nn.functional.conv1d(signal, filters)
    by_fft = correlate_by_fft(signal, filters)
    assert by_fft.shape == direct.shape
    assert float((by_fft - direct).abs().max()) < 1e-5 * float(direct.abs().max())


def test_training_gradients_go_through_the_direct_correlation(monkeypatch):
    """The FFT route is for coding without gradients; with them, conv1d (and its gradient) is used."""
    from engine.model import crsae

    used = []
    monkeypatch.setattr(crsae, "correlate_by_fft", lambda s, f: used.append(True) or torch.nn.functional.conv1d(s, f))
    model = CRsAE(torch.randn(12, 8, 90), 1.0)  # 12 × 8 × 90 >= FFT_MIN_WORK
    signal = torch.randn(2, 8, 3000)
    model.analysis(signal).sum().backward()
    assert not used and model.filters.grad is not None
    with torch.no_grad():
        model.analysis(signal)
    assert used


def test_synthesis_without_gradients_is_the_transposed_convolution():
    """Hx by FFT (no gradients, many channels × taps) is conv_transpose1d's, to float precision."""
    generator = torch.Generator().manual_seed(3)
    model = CRsAE(torch.randn(12, 8, 90, generator=generator), 1.0)  # 12 × 8 × 90 >= FFT_MIN_WORK
    codes = torch.relu(torch.randn(2, 12, 3000, generator=generator) - 2.0)
    expected = torch.nn.functional.conv_transpose1d(codes, model.filters.detach())
    with torch.no_grad():
        synthesised = model.synthesis(codes)
    assert synthesised.shape == expected.shape
    assert float((synthesised - expected).abs().max()) < 1e-5 * float(expected.abs().max())
