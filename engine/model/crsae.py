"""The CRsAE: a convolutional sparse auto-encoder whose encoder is unrolled FISTA.

The recording y (channels × samples, noise-normalised) is modelled as
y ≈ H x = Σ_k h_k * x_k with non-negative sparse codes x_k. The encoder runs
T steps of FISTA on 0.5‖y − Hx‖² + Σ_k λ_k‖x_k‖₁ with the *same* filters the
decoder uses (tied weights), so learning the decoder learns the encoder too.

Layout: filters are stored as a conv1d weight (n_filters, n_channels, n_taps).
Hᵀ is `conv1d` (correlation, "valid") and H is `conv_transpose1d`: exact
adjoints of each other, which FISTA needs to converge. A code at index t
places filter k on samples [t, t + n_taps).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.model.power_iteration import largest_eigenvalues


N_DEBIAS_ITERATIONS = 20


class CRsAE(nn.Module):
    def __init__(
        self,
        filters: np.ndarray | torch.Tensor,
        lambdas: np.ndarray | torch.Tensor | float,
        n_iterations: int = 100,
        n_debias_iterations: int = N_DEBIAS_ITERATIONS,
        channel_mask: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """channel_mask: (n_filters, n_channels) 0/1, the channels each filter may use (its
        neighbourhood on a probe); the filters are kept zero elsewhere. None: every channel."""
        super().__init__()
        weight = torch.as_tensor(np.asarray(filters), dtype=torch.float32)
        if weight.ndim != 3:
            raise ValueError(f"filters must be (n_filters, n_channels, n_taps), got shape {tuple(weight.shape)}")
        self.filters = nn.Parameter(weight.clone())  # (n_filters, n_channels, n_taps)
        lambdas = torch.as_tensor(np.broadcast_to(np.asarray(lambdas, dtype=np.float32), (weight.shape[0],)).copy())
        self.register_buffer("lambdas", lambdas)  # (n_filters,) threshold in noise-σ units
        mask = torch.ones(weight.shape[:2]) if channel_mask is None else torch.as_tensor(
            np.asarray(channel_mask, dtype=np.float32))
        if tuple(mask.shape) != tuple(weight.shape[:2]):
            raise ValueError(f"channel_mask must be (n_filters, n_channels) = {tuple(weight.shape[:2])}, "
                             f"got {tuple(mask.shape)}")
        self.register_buffer("channel_mask", mask.to(torch.float32))  # (n_filters, n_channels)
        self.n_iterations = int(n_iterations)
        self.n_debias_iterations = int(n_debias_iterations)
        self.normalize_filters_()

    @property
    def n_filters(self) -> int:
        return self.filters.shape[0]

    @property
    def n_channels(self) -> int:
        return self.filters.shape[1]

    @property
    def n_taps(self) -> int:
        return self.filters.shape[2]

    def analysis(self, signal: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
        """Hᵀ y: (batch, n_channels, n) -> (batch, n_filters, n - n_taps + 1)."""
        filters = self.filters if filters is None else filters
        blocks = self._channel_blocks(filters.device)
        if blocks is None:
            return correlate(signal, filters)
        # One convolution per block of neighbouring filters, over the channels they
        # use; the rows come back in block order and one gather restores filter order.
        parts = [correlate(signal.index_select(1, channels), filters[members][:, channels])
                 for members, channels in blocks.parts]
        return torch.cat(parts, dim=1).index_select(1, blocks.inverse_order)

    def synthesis(self, codes: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
        """H x: (batch, n_filters, m) -> (batch, n_channels, m + n_taps - 1).

        The transposed convolution, written as a plain one with the filters
        flipped in time and channels swapped with filters: the same sums, and
        3-4× faster on the CPU than conv_transpose1d (32 channels, 23 filters,
        5 × 1.2 s chunks: 0.64 s against 2.9 s), whose gradient path is slow too;
        and without gradients, where filters × channels × taps is large, by FFT (`correlate`).
        """
        filters = self.filters if filters is None else filters
        padded = F.pad(codes, (self.n_taps - 1, self.n_taps - 1))
        blocks = self._channel_blocks(filters.device)
        if blocks is None:
            return correlate(padded, filters.transpose(0, 1).flip(-1))
        signal = codes.new_zeros(codes.shape[0], self.n_channels, codes.shape[-1] + self.n_taps - 1)
        for members, channels in blocks.parts:
            part = correlate(padded.index_select(1, members), filters[members][:, channels].transpose(0, 1).flip(-1))
            signal = signal.index_add(1, channels, part)
        return signal

    def _channel_blocks(self, device: torch.device) -> "ChannelBlocks | None":
        """The convolution plan for filters that live on neighbourhoods (None: dense is as cheap)."""
        key = (self.channel_mask._version, self.channel_mask.data_ptr(), str(device))
        if getattr(self, "_blocks_key", None) != key:
            self._blocks = ChannelBlocks.plan(self.channel_mask, device)
            self._blocks_key = key
        return self._blocks

    @torch.no_grad()
    def lipschitz(self, n_power_iterations: int = 30) -> float:
        """Largest eigenvalue of HᵀH (an upper bound, with margin), from the filters' spectra.

        HᵀH is a convolution over time that mixes filters: at frequency f it acts
        as H(f)ᴴH(f), with H(f) the (channels × filters) matrix of the filters'
        Fourier coefficients. Its norm is the largest σ_max(H(f))² over f, found
        by power iteration on every frequency of a grid 4× finer than the filter
        length, touching only the channels each filter lives on, in one compiled
        loop (engine/model/power_iteration.py: 0.035 s a call for 38 filters on
        32 channels, 0.19 s for 150 on 384, where numpy took 0.19 and 1.6 s).
        The former power iteration on convolutions cost the filter length times
        more: 6 s per call on a 32-channel probe, minutes at 384 channels, and
        training asks once per step.
        """
        # The same dictionary gives the same bound: kept until the filters or their channels change in place
        # (torch counts every in-place change in a tensor's version). Each pass that codes the pool asked
        # anew, 1.7 s a call at 384 channels.
        key = (id(self.filters), self.filters.data_ptr(), self.filters._version, self.channel_mask._version,
               n_power_iterations)
        cached = getattr(self, "_lipschitz_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        value = self._lipschitz_by_power_iteration(n_power_iterations)
        self._lipschitz_cache = (key, value)
        return value

    def _lipschitz_by_power_iteration(self, n_power_iterations: int) -> float:
        n_fft = _fast_fft_length(8 * self.n_taps)
        channels = _channels_of_filters(self.channel_mask)  # (K, N): each filter's channels, padded with -1
        filters = self.filters.detach().cpu().numpy().astype(np.float64)
        # Each filter's own channels only, before the transform (every channel's spectrum took 1.7 GB at 384).
        on_channels = np.take_along_axis(filters, np.maximum(channels, 0)[:, :, None], axis=1)  # (K, N, taps)
        local = np.fft.rfft(on_channels, n_fft, axis=-1)  # (K, N, F)
        local[channels < 0] = 0.0  # padding contributes nothing
        local = np.ascontiguousarray(local.transpose(2, 0, 1))  # (F, K, N)
        start = np.random.default_rng(1234).standard_normal((local.shape[0], self.n_filters)).astype(complex)
        eigenvalues = largest_eigenvalues(local, channels, self.n_channels, start, n_power_iterations)
        # Power iteration approaches each eigenvalue from below, and the grid may miss
        # the peak between two frequencies: keep a margin so that the step 1/L stays
        # safely inside FISTA's convergence bound.
        return max(float(eigenvalues.max()), 1e-6) * 1.05

    def encode(
        self,
        signal: torch.Tensor,
        n_iterations: int | None = None,
        lipschitz: float | None = None,
        tolerance: float = 0.0,
        gradient_iterations: int | None = None,
        n_debias_iterations: int | None = None,
    ) -> torch.Tensor:
        """Unrolled FISTA, then debiasing: (batch, n_channels, n) -> (batch, n_filters, n - n_taps + 1).

        The ℓ1 penalty shrinks every code by λ, which leaves a copy of each
        spike's own shape in the residual. Measured on the simulator, the
        neighbouring filters then learn that leftover and drift away from the
        true shapes (dictionary error 0.06 -> 0.29 in 40 steps). A few
        projected-gradient steps without the penalty, on the support FISTA
        found, remove the bias and keep the filters on the true shapes (0.07).

        HᵀH is applied in the frequency domain when that is cheaper (many
        channels, long filters): the same operator, exactly, as zero padding
        keeps the circular convolution linear.

        With `tolerance` > 0 the FISTA loop stops early once the largest code
        update is below `tolerance` (in code units); training uses a fixed T so
        gradients flow through the same computation every step.

        `gradient_iterations`: when gradients are on, keep only the last this
        many FISTA steps (and the debiasing) in the autograd graph; the steps
        before run without it. The codes are the same either way; the memory
        of a training step then grows with this number instead of T.

        `n_debias_iterations`: overrides the model's (0: the lasso codes as FISTA left them).
        """
        n_iterations = self.n_iterations if n_iterations is None else int(n_iterations)
        step = 1.0 / (lipschitz if lipschitz is not None else self.lipschitz())
        shrink = (self.lambdas * step).view(1, -1, 1)
        correlation = self.analysis(signal)  # Hᵀy, reused every step
        gram = self._gram_operator(correlation.shape[-1])
        tracked = n_iterations if gradient_iterations is None else min(int(gradient_iterations), n_iterations)
        start = torch.zeros_like(correlation)
        state = (start, start, 1.0)
        if torch.is_grad_enabled() and tracked < n_iterations:
            with torch.no_grad():  # the same operator; no graph is recorded for these steps
                state = fista_resumable(correlation.detach(), gram, shrink, step,
                                        n_iterations - tracked, state, tolerance)
            n_iterations = tracked
        codes = fista_resumable(correlation, gram, shrink, step, n_iterations, state, tolerance)[0]
        support = (codes > 0).to(codes.dtype)
        n_debias = self.n_debias_iterations if n_debias_iterations is None else int(n_debias_iterations)
        return debias(codes, correlation, gram, step, n_debias, support)

    def _gram_operator(self, n_codes: int, method: str = "auto"):
        """x -> HᵀH x by direct convolutions or, without gradients, by FFT.

        Per code sample, the direct route costs about 2·C·L multiply-adds per
        filter; the FFT route a few FFT passes per filter plus K products per
        frequency, which wins once channels × taps is large (tetrodes at 30 kHz).
        """
        filters = self.filters
        if method == "auto":
            direct_cost = 2 * self.n_channels * self.n_taps
            fft_cost = 6 * math.log2(max(n_codes, 2)) + 4 * self.n_filters
            # A margin of 2: measured on one channel × 40 taps, where the two
            # estimates are equal, the FFT route was the slower (0.9×).
            method = "fft" if 2 * fft_cost < direct_cost else "direct"
        if method == "direct":
            return lambda codes: self.analysis(self.synthesis(codes, filters), filters)
        n_fft = _fast_fft_length(n_codes + self.n_taps - 1)
        # Gradients flow through the FFTs to the filters, so training can use this route too.
        spectra = torch.fft.rfft(filters, n_fft, dim=-1)  # (n_filters, n_channels, n_freqs)
        # (n_freqs, n_filters, n_filters): one small matrix per frequency, so the
        # mixing is a batched complex matrix product (BLAS), not an einsum loop.
        gram_spectrum = torch.einsum("kcf,jcf->fkj", spectra.conj(), spectra).contiguous()

        def apply(codes: torch.Tensor) -> torch.Tensor:
            code_spectrum = torch.fft.rfft(codes, n_fft, dim=-1)  # (batch, n_filters, n_freqs)
            mixed = torch.matmul(gram_spectrum, code_spectrum.permute(2, 1, 0))  # (n_freqs, n_filters, batch)
            return torch.fft.irfft(mixed.permute(2, 1, 0), n_fft, dim=-1)[..., :n_codes]

        return apply

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.synthesis(codes)

    def forward(self, signal: torch.Tensor, n_iterations: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.encode(signal, n_iterations=n_iterations)
        return self.decode(codes), codes

    @torch.no_grad()
    def normalize_filters_(self) -> None:
        """Project every filter onto its channels, then back onto the unit sphere (over channels and taps)."""
        self.filters.mul_(self.channel_mask[:, :, None])
        norms = self.filters.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        self.filters.div_(norms)

    def filters_numpy(self) -> np.ndarray:
        """(n_filters, n_taps, n_channels) float32 copy, the layout templates use."""
        return self.filters.detach().cpu().numpy().transpose(0, 2, 1).astype(np.float32).copy()


# Local convolutions pay off once a block of filters uses under this fraction of the
# probe's channels; above it (tetrodes, short probes) one dense convolution is as fast.
LOCAL_MAX_CHANNEL_FRACTION = 0.5
# Filters per block. One convolution per neighbourhood (1-2 filters each) ran at
# 1.3 G multiply-adds/s against the dense convolution's 40 G on the 2-core CPU:
# so few output channels starve the convolution kernel. Blocks of this many
# filters with neighbouring main channels share most of their channels.
FILTERS_PER_BLOCK = 32


class ChannelBlocks:
    """Filters in blocks of neighbours, each block convolved over the union of its filters' channels.

    parts: [(filter indices, channel indices)]; inverse_order: where each filter's
    row sits once the blocks' outputs are concatenated.
    """

    def __init__(self, parts: list[tuple[torch.Tensor, torch.Tensor]], inverse_order: torch.Tensor) -> None:
        self.parts = parts
        self.inverse_order = inverse_order

    @classmethod
    def plan(cls, channel_mask: torch.Tensor, device: torch.device) -> "ChannelBlocks | None":
        mask = channel_mask.detach().cpu().numpy() > 0
        n_filters, n_channels = mask.shape
        if n_filters < 2 * FILTERS_PER_BLOCK:
            return None
        # Order filters by the middle of their neighbourhood (channel order follows the probe's depth
        # for the readers' layouts), so that a block's filters overlap.
        centres = np.array([np.flatnonzero(row).mean() if row.any() else 0.0 for row in mask])
        order = np.argsort(centres, kind="stable")
        parts, used = [], 0
        for start in range(0, n_filters, FILTERS_PER_BLOCK):
            members = order[start : start + FILTERS_PER_BLOCK]
            channels = np.flatnonzero(mask[members].any(axis=0))
            if channels.size == 0:
                channels = np.array([0])
            used += channels.size * members.size
            parts.append((torch.as_tensor(members, device=device), torch.as_tensor(channels, device=device)))
        if used >= LOCAL_MAX_CHANNEL_FRACTION * n_filters * n_channels:
            return None
        inverse = np.empty(n_filters, dtype=np.int64)
        inverse[order] = np.arange(n_filters)
        return cls(parts, torch.as_tensor(inverse, device=device))


def _channels_of_filters(channel_mask: torch.Tensor) -> np.ndarray:
    """(n_filters, most channels of a filter) int64: each filter's channels in order, padded with -1."""
    return channel_lists(channel_mask.detach().cpu().numpy() > 0)


def channel_lists(on_channel: np.ndarray) -> np.ndarray:
    """(n_filters, most channels of a filter) int64 from a (n_filters, n_channels) bool mask: each
    row's channels in order, padded with -1."""
    on_channel = np.asarray(on_channel, dtype=bool)
    width = max(int(on_channel.sum(axis=1).max()), 1) if on_channel.size else 1
    # Each row's channels first (stable sort of "off" flags), then -1 for the rest.
    order = np.argsort(~on_channel, axis=1, kind="stable")[:, :width]
    return np.where(np.take_along_axis(on_channel, order, axis=1), order, -1).astype(np.int64)


# The CPU correlates by FFT (overlap-save) once inputs × outputs × taps reach this, and the signal
# is long enough for a few segments. The direct convolution's cost grows with that product, the
# FFT's with (inputs + outputs) × log(segment) + inputs × outputs. Measured on the 2-core CPU
# (2 threads; 8 chunks of 1.2 s, or training's 32 windows of 0.2 s, at 30 kHz, 90 taps): 30 filters
# on 32 channels 294 -> 102 ms (windows 187 -> 112 ms); a tetrode's 4 channels × 8 filters (2880)
# 16 vs 19 ms and 14 vs 35 ms, so it stays direct; one channel × 3 filters × 40 taps, direct.
FFT_MIN_WORK = 8192
# Segment length of the overlap-save correlation: 512 was the fastest of 256, 512 and 1024 for
# 90 taps (each segment gives 512 − 89 outputs).
FFT_SEGMENT = 512
# The overlap-save correlation's spectra take at most about this much memory at once.
FFT_WORK_BYTES = 32 * 2**20


def correlate(signal: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """(batch, C, n) correlated with (K, C, L) -> (batch, K, n − L + 1), conv1d's "valid" correlation
    (Hᵀy, and Hx written as one). On the CPU without gradients, where it is cheaper, by FFT."""
    n_filters, n_channels, n_taps = filters.shape
    by_fft = (signal.device.type == "cpu" and n_filters * n_channels * n_taps >= FFT_MIN_WORK
              and FFT_SEGMENT >= 2 * n_taps and signal.shape[-1] >= 2 * FFT_SEGMENT
              and not (torch.is_grad_enabled() and (signal.requires_grad or filters.requires_grad)))
    return correlate_by_fft(signal, filters) if by_fft else F.conv1d(signal, filters)


def correlate_by_fft(signal: torch.Tensor, filters: torch.Tensor, n_fft: int = FFT_SEGMENT) -> torch.Tensor:
    """conv1d(signal, filters) by overlap-save: the signal cut into segments of `n_fft` samples that
    overlap by L − 1, each correlated in the frequency domain, the wrapped-around L − 1 outputs of
    each dropped. A run of segments goes through one batched complex product per frequency
    (filters × channels by channels × segments), so the CPU's matrix kernels do the work; runs are
    sized so that their spectra stay within FFT_WORK_BYTES whatever the probe."""
    batch, n_channels, n = signal.shape
    n_filters, _, n_taps = filters.shape
    n_out = n - n_taps + 1
    step = n_fft - n_taps + 1  # valid outputs per segment
    n_segments = -(-n_out // step)
    padded = F.pad(signal, (0, n_segments * step + n_taps - 1 - n))
    segments = padded.unfold(2, n_fft, step)  # (batch, C, S, n_fft), a view
    # Correlation is the product with the filters' conjugate spectra, summed over channels.
    filter_spectra = torch.fft.rfft(filters, n_fft, dim=-1).conj().permute(2, 0, 1)  # (F, K, C)
    n_freqs = filter_spectra.shape[0]
    per_segment = n_freqs * (n_channels + n_filters) * 8 * 2  # complex64 spectra and products, and a copy
    run = max(1, min(n_segments, FFT_WORK_BYTES // per_segment))
    outputs = signal.new_empty(batch, n_filters, n_segments * step)
    # Short chunks (training's windows): several whole rows a run; long ones: a row's segments in runs.
    rows_per_run = max(1, run // n_segments)
    for first_row in range(0, batch, rows_per_run):
        rows = slice(first_row, min(first_row + rows_per_run, batch))
        for first in range(0, n_segments, run):
            last = min(first + run, n_segments)
            spectra = torch.fft.rfft(segments[rows, :, first:last], dim=-1)  # (R, C, P, F)
            n_rows, _, n_pieces, _ = spectra.shape
            columns = spectra.permute(3, 1, 0, 2).reshape(n_freqs, n_channels, n_rows * n_pieces)
            products = torch.matmul(filter_spectra, columns).reshape(n_freqs, n_filters, n_rows, n_pieces)
            pieces = torch.fft.irfft(products.permute(2, 1, 3, 0), n_fft, dim=-1)[..., :step]  # (R, K, P, step)
            outputs[rows, :, first * step : last * step] = pieces.reshape(n_rows, n_filters, -1)
    return outputs[..., :n_out]


def fista(correlation: torch.Tensor, gram, shrink, step: "float | torch.Tensor", n_iterations: int,
          codes: torch.Tensor | None = None, tolerance: float = 0.0, restart: bool = False) -> torch.Tensor:
    """FISTA steps on 0.5‖y − Hx‖² + Σλ‖x‖₁, x ≥ 0, from `codes` (zeros when None).

    correlation: Hᵀy; gram: a function applying HᵀH (convolutions, the FFT
    route, or the working set's sparse matrix); step: 1/L, or a tensor of one
    step per code (a diagonal metric, as the working set's); shrink: λ·step,
    broadcast against the codes. With `tolerance` > 0, stops once the largest code
    update is below it. With `restart`, the momentum starts again whenever it
    points against the step just taken (O'Donoghue and Candès' gradient
    restart): no longer T unrolled steps of the encoder's FISTA, but the same
    lasso solved to `tolerance` in far fewer steps.
    """
    if codes is None:
        codes = torch.zeros_like(correlation) if isinstance(correlation, torch.Tensor) else np.zeros_like(correlation)
    return fista_resumable(correlation, gram, shrink, step, n_iterations, (codes, codes, 1.0), tolerance, restart)[0]


FistaState = tuple  # (codes, momentum point, momentum): where FISTA stands after some steps


def fista_resumable(correlation: torch.Tensor, gram, shrink, step: "float | torch.Tensor", n_iterations: int,
                    state: FistaState, tolerance: float = 0.0, restart: bool = False) -> FistaState:
    """`n_iterations` FISTA steps from `state`; returns the new state, so a run can be continued exactly.

    Torch tensors (the encoder, on any device) or numpy arrays (the working set's small sparse
    problems, where numpy's per-operation cost is a third of torch's: its solves ran 2× faster)."""
    codes, momentum_point, momentum = state
    on_torch = isinstance(correlation, torch.Tensor)
    for _ in range(n_iterations):
        codes_next = _relu(momentum_point + step * (correlation - gram(momentum_point)) - shrink)
        step_taken = codes_next - codes
        # Measured in the step's own metric (a per-code `step` is a diagonal one): same sign for a scalar step.
        if restart and _inner((momentum_point - codes_next) / step, step_taken, on_torch) > 0:
            momentum = 1.0
        momentum_next = (1.0 + math.sqrt(1.0 + 4.0 * momentum * momentum)) / 2.0
        momentum_point = codes_next + ((momentum - 1.0) / momentum_next) * step_taken
        if tolerance > 0.0 and float(abs(step_taken).max()) < tolerance:
            return codes_next, momentum_point, momentum_next
        codes, momentum = codes_next, momentum_next
    return codes, momentum_point, momentum


def _inner(a, b, on_torch: bool) -> float:
    return float(torch.dot(a.flatten(), b.flatten())) if on_torch else float(np.dot(a.ravel(), b.ravel()))


def _relu(values):
    """max(values, 0) of a torch tensor or a numpy array, in its own type."""
    return F.relu(values) if isinstance(values, torch.Tensor) else np.maximum(values, 0.0, dtype=values.dtype)


def debias(codes: torch.Tensor, correlation: torch.Tensor, gram, step: float, n_iterations: int,
           support: torch.Tensor | None = None) -> torch.Tensor:
    """Projected gradient steps without the penalty, kept on `support` (a 0/1 mask; None: every code).
    Torch tensors or numpy arrays, as `fista_resumable`."""
    for _ in range(n_iterations):
        codes = _relu(codes + step * (correlation - gram(codes)))
        if support is not None:
            codes = codes * support
    return codes


def _fast_fft_length(n: int) -> int:
    """Smallest 2^a·3^b·5^c ≥ n: FFT libraries are fastest on such lengths."""
    best = 1 << (n - 1).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def universal_threshold(n_channels: int, n_samples: int, noise_level: float = 1.0) -> float:
    """σ √(2 log(C·N)): the level pure noise exceeds with vanishing probability."""
    return float(noise_level * math.sqrt(2.0 * math.log(max(n_channels * n_samples, 2))))


def select_device(requested: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU for "auto"; otherwise exactly what was asked."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use --device auto or cpu")
    if requested.startswith("cuda:"):
        index = requested.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ValueError(
                f"device {requested!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"numbered from cuda:0; use --device cuda or auto"
            )
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was requested but Apple MPS is not available; use --device auto or cpu")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise ValueError(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps")
    return torch.device(requested)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "GPU: Apple MPS"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'' if threads == 1 else 's'})"
