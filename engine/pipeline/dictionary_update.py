"""The dictionary update of training: least squares on the codes the tied FISTA encoder found.

Training alternates two steps. The encoder (unrolled FISTA with the filters
themselves as weights) codes a batch of windows; then every filter is set to
the shape that best reconstructs the batch given those codes. That second step
has a closed form, one small linear system per filter (taps × taps), solved
filter after filter on the running residual (block coordinate descent, as in
Mairal et al.'s online dictionary learning): the reconstruction error never
rises, the memory stays one residual per batch plus one taps × taps matrix,
whatever the number of filters and channels, and a filter reaches the mean
shape of the spikes it codes in one step, where Adam moves it by its step size.

Measured on the demo (1 channel, 3 units) from the true shapes plus noise
(dictionary error 0.51): 0.15 after 12 steps of 16 windows, where
back-propagation through the encoder with Adam reached 0.36 and then stalled.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F

from engine.model.pairs import pairs_in_runs
from engine.pipeline.inference import kept_events
from engine.pipeline.params import DOMINATED_OVERLAP_FACTOR
from engine.pipeline.refinement import channel_sharing

# Tikhonov term, relative to a filter's code energy: keeps a filter that codes a
# handful of spikes from fitting their noise, and the system well conditioned.
RIDGE = 1e-3


# Below this fraction of non-zero codes (the kept spikes' codes are ~0.1 %), a filter's
# sums run over its spikes and its channels only; above it (codes of noise filters,
# early in learning from noise), as convolutions over the whole batch.
SPARSE_CODE_FRACTION = 0.01


@torch.no_grad()
def least_squares_update(filters: torch.Tensor, codes: torch.Tensor, batch: torch.Tensor,
                         channel_mask: torch.Tensor | None = None) -> torch.Tensor:
    """New filters (n_filters, n_channels, n_taps) minimising ‖batch − H codes‖², one filter at a time.

    codes: (batch, n_filters, n_codes) from the encoder; batch: (batch, n_channels, n_codes + n_taps − 1).
    A filter without codes in the batch keeps its shape. `channel_mask` (n_filters, n_channels)
    keeps each filter on its channels.

    With sparse codes the cost grows with spikes × a filter's channels × taps, not
    with filters × channels × samples: on a 32-channel probe with a hundred filters
    the convolutions over every channel made one step minutes long.
    """
    filters = filters.detach().clone()
    n_filters, n_channels, n_taps = filters.shape
    sparse = _codes_are_sparse(codes)
    channels = _channels_per_filter(filters, channel_mask)
    residual = _residual(batch, codes, filters, channels, sparse)  # (batch, n_channels, n)
    lags = torch.arange(n_taps, device=filters.device)
    toeplitz_index = (lags[:, None] - lags[None, :]).abs()  # (n_taps, n_taps)
    for k in range(n_filters):
        code = codes[:, k]  # (batch, n_codes)
        if not bool((code != 0).any()):
            continue
        # gradient[c, l] = Σ_b Σ_t residual[b, c, t + l] · code[b, t]: what this filter's codes leave unexplained.
        if sparse:
            windows, times = torch.nonzero(code, as_tuple=True)
            values = code[windows, times]
            positions = times[:, None] + lags[None, :]  # (n_codes, n_taps)
            snippets = residual[windows[:, None, None], channels[k][None, :, None], positions[:, None, :]]
            gradient = torch.zeros(n_channels, n_taps, dtype=filters.dtype, device=filters.device)
            gradient[channels[k]] = torch.einsum("i,icl->cl", values, snippets)
            # The codes' autocorrelation at lags 0..n_taps−1 fills the Toeplitz normal matrix of this filter.
            autocorrelation = _sparse_autocorrelation(windows, times, values, n_taps, code.shape[1])
        else:
            gradient = F.conv1d(residual.transpose(0, 1), code[None])[:, 0]  # (n_channels, n_taps)
            padded = F.pad(code, (0, n_taps - 1))
            autocorrelation = F.conv1d(padded[None], code[None])[0, 0]  # (n_taps,)
        normal = autocorrelation[toeplitz_index]
        normal = normal + RIDGE * autocorrelation[0] * torch.eye(n_taps, device=filters.device, dtype=filters.dtype)
        change = torch.linalg.solve(normal, gradient.T).T  # (n_channels, n_taps)
        if channel_mask is not None:
            change = change * channel_mask[k][:, None]
        filters[k] += change
        if sparse:
            _add_atoms(residual, code, change, channels[k], sign=-1.0)
        else:
            residual -= F.conv_transpose1d(code[:, None], change[None])
    return filters


@torch.no_grad()
def reconstruction_error(filters: torch.Tensor, codes: torch.Tensor, batch: torch.Tensor,
                         channel_mask: torch.Tensor | None = None) -> float:
    """Mean of (batch − H codes)², the training loss reported each step; with sparse codes, from each
    filter's non-zeros on its channels (the dense decode of the whole batch was 14 % of a tetrode's step)."""
    residual = _residual(batch, codes, filters, _channels_per_filter(filters, channel_mask), _codes_are_sparse(codes))
    return float(torch.mean(residual**2))


def _codes_are_sparse(codes: torch.Tensor) -> bool:
    """Whether sums over each filter's non-zeros beat convolutions over the batch (SPARSE_CODE_FRACTION).
    Counted without a batch-sized mask: `(codes != 0).sum()` wrote one, 9× slower (0.6 s of a 32-channel sort)."""
    return bool(torch.count_nonzero(codes) <= SPARSE_CODE_FRACTION * codes.numel())


def _channels_per_filter(filters: torch.Tensor, channel_mask: torch.Tensor | None) -> list[torch.Tensor]:
    """Each filter's channels (all of them without a mask)."""
    n_filters, n_channels, _ = filters.shape
    all_channels = torch.arange(n_channels, device=filters.device)
    return [all_channels if channel_mask is None else torch.nonzero(channel_mask[k] > 0)[:, 0]
            for k in range(n_filters)]


def _residual(batch: torch.Tensor, codes: torch.Tensor, filters: torch.Tensor, channels: list[torch.Tensor],
              sparse: bool) -> torch.Tensor:
    """batch − H codes: each filter's non-zeros placed on its channels when `sparse`, else one convolution."""
    if not sparse:
        return batch - F.conv_transpose1d(codes, filters)
    residual = batch.clone()
    for k in range(filters.shape[0]):
        _add_atoms(residual, codes[:, k], filters[k], channels[k], sign=-1.0)
    return residual


def _sparse_autocorrelation(windows: torch.Tensor, times: torch.Tensor, values: torch.Tensor, n_lags: int,
                            n_codes: int) -> torch.Tensor:
    """(n_lags,) Σ_b Σ_t code[b, t] · code[b, t + lag] of a code given by its non-zeros (windows, times,
    values, in torch.nonzero's order), from the pairs of non-zeros closer than n_lags in one window.

    The convolution of the whole padded code with itself (kernel as long as the windows) cost
    batch × samples × taps: 35 % of a training step on a tetrode, for a few hundred non-zeros."""
    key = (windows * (n_codes + n_lags) + times).cpu().numpy()  # windows far enough apart never pair
    first = np.arange(key.size)
    last = np.searchsorted(key, key + n_lags, side="left")
    rows, columns = pairs_in_runs(first, last)
    lags = torch.from_numpy(key[columns] - key[rows]).to(values.device)
    rows, columns = torch.from_numpy(rows).to(values.device), torch.from_numpy(columns).to(values.device)
    return values.new_zeros(n_lags).index_add_(0, lags, values[rows] * values[columns])


def _add_atoms(signal: torch.Tensor, code: torch.Tensor, shape: torch.Tensor, channels: torch.Tensor,
               sign: float) -> None:
    """signal[b, c, t + l] += sign · code[b, t] · shape[c, l] for every non-zero code, on `channels` only."""
    if signal.device.type == "cpu" and signal.dtype == torch.float32 and signal.is_contiguous():
        # In place through numpy views, one compiled pass: index_put_ with 64-bit index tuples was
        # 16 % of a training step on a 32-channel probe. The same products, added in the same order.
        # The loop does not check its bounds (index_put_ does): what would write outside is refused here.
        if (signal.shape[0] != code.shape[0] or signal.shape[2] < code.shape[1] + shape.shape[1] - 1
                or shape.shape[0] != signal.shape[1] or (channels.numel() and int(channels.max()) >= signal.shape[1])):
            raise ValueError(f"codes {tuple(code.shape)} and a filter {tuple(shape.shape)} on channels up to "
                             f"{int(channels.max()) if channels.numel() else -1} do not fit a signal {tuple(signal.shape)}")
        _add_code_atoms(signal.numpy(), code.detach().numpy(), shape.detach().to(torch.float32).numpy(),
                        channels.numpy().astype(np.int64), np.float32(sign))
        return
    windows, times = torch.nonzero(code, as_tuple=True)
    if windows.numel() == 0:
        return
    n_taps = shape.shape[1]
    positions = times[:, None] + torch.arange(n_taps, device=signal.device)[None, :]  # (n_codes, n_taps)
    amounts = sign * code[windows, times][:, None, None] * shape[channels][None]  # (n_codes, n_channels_k, n_taps)
    index = (windows[:, None, None].expand_as(amounts), channels[None, :, None].expand_as(amounts),
             positions[:, None, :].expand_as(amounts))
    signal.index_put_(index, amounts, accumulate=True)


# nogil, cache: compiled once per machine.
@numba.njit(nogil=True, cache=True)
def _add_code_atoms(signal, code, shape, channels, sign):
    n_windows, n_codes = code.shape
    n_taps = shape.shape[1]
    for window in range(n_windows):
        for time in range(n_codes):
            value = code[window, time]
            if value == 0.0:
                continue
            scaled = sign * value
            for channel in channels:
                target = signal[window, channel, time : time + n_taps]
                row = shape[channel]
                for tap in range(n_taps):
                    target[tap] += scaled * row[tap]


@torch.no_grad()
def recentre(filters: torch.Tensor, fraction: float, dead_band: float = 0.1) -> torch.Tensor:
    """Shift each filter (zero fill) whose energy centre is more than `dead_band` of its length
    away from `fraction` of it back there.

    A filter learned from noise often catches its spike near one end, cut off by
    the edge; the codes then shift with it, and least squares alone never moves
    the spike back (measured from random starts on the demo: spikes stuck at
    taps 2 and 34 of 40). Shifted to the middle, the next update grows the rest.
    """
    n_taps = filters.shape[-1]
    energy = (filters**2).sum(dim=1)  # (n_filters, n_taps)
    centre = (energy * torch.arange(n_taps, device=filters.device)).sum(1) / energy.sum(1).clamp_min(1e-12)
    target = round(fraction * (n_taps - 1))
    shifts = (target - centre).round().long().tolist()
    out = filters.clone()
    for k, shift in enumerate(shifts):
        if abs(shift) <= dead_band * n_taps:
            continue
        out[k] = 0.0
        if shift > 0:
            out[k, :, shift:] = filters[k, :, : n_taps - shift]
        else:
            out[k, :, : n_taps + shift] = filters[k, :, -shift:]
    return out


def dominated_by_overlap(spike_filters: np.ndarray, indices: np.ndarray, amplitudes: np.ndarray,
                         filters: np.ndarray, factor: float = DOMINATED_OVERLAP_FACTOR) -> np.ndarray:
    """(n,) bool: the spikes whose atoms overlap, on a channel both filters use, a spike of another
    filter more than `factor` times bigger.

    indices: code indices (a spike's atom spans n_taps + 2 samples from index − 1);
    filters: (n_filters, n_channels, n_taps). Pairs are found among the spikes sorted by time,
    each against those within one atom's length: a few per spike, whatever the probe.
    """
    n = len(indices)
    dominated = np.zeros(n, dtype=bool)
    if n < 2:
        return dominated
    sharing = channel_sharing(filters)
    width = filters.shape[2] + 2
    order = np.argsort(indices, kind="stable")
    times = indices[order]
    first = np.arange(n) + 1  # each pair once: the later spikes within one atom's length
    last = np.searchsorted(times, times + width, side="left")
    a, b = pairs_in_runs(first, last)
    a, b = order[a], order[b]
    linked = sharing[spike_filters[a], spike_filters[b]] & (spike_filters[a] != spike_filters[b])
    a, b = a[linked], b[linked]
    dominated[a[amplitudes[b] > factor * amplitudes[a]]] = True
    dominated[b[amplitudes[a] > factor * amplitudes[b]]] = True
    return dominated


@torch.no_grad()
def codes_of_kept_spikes(codes: torch.Tensor, batch: torch.Tensor, filters: torch.Tensor,
                         dead_time: int, min_amplitude: float, max_amplitudes: np.ndarray | None = None,
                         gram: np.ndarray | None = None) -> torch.Tensor:
    """The codes of the spikes sorting would keep, every other code zeroed.

    Sorting reads the lasso's codes as spikes: each filter's local maxima at least
    `dead_time` apart, at least `min_amplitude` over the three samples around them,
    less the events the data do not need (explain_away.py), refitted. The lasso
    also splits a spike between look-alike filters; least squares on all codes then
    pulls each filter towards its look-alikes. Measured on a 60 s tetrode simulation
    (8 units, 0.85–0.93 alike) from the k-means start, 10 steps: on all codes mean
    accuracy fell 0.986 → 0.676 (two filters drifted to other units' shapes,
    dictionary error 0.09 → 0.54 and 0.45); on the kept spikes' codes it was 0.987.

    codes: (batch, n_filters, n_codes); batch: (batch, n_channels, n_codes + n_taps − 1);
    filters: (n_filters, n_channels, n_taps). The windows are laid end to end,
    a filter length and the dead time apart, so that one pass serves the batch.

    `gram`: the filters' Gram tensor, when the encoder has it (explaining away's products; faster).

    `max_amplitudes` (n_filters,): a filter's spikes bigger than this are left out too. A
    filter sometimes codes a far bigger spike of another neuron (or a part of it), and least
    squares weighs each spike by its code squared: on SpikeInterface's 5-minute tetrode a
    5.5 σ unit's filter (its spikes coded ~16) coded a few spikes a batch at 40–290; within
    15 steps they had pulled it off its unit (0.98 → 0.69 alike), it then won nothing and the
    final pruning dropped it (mean accuracy 0.809 untrained, 0.754 trained; 0.811 with the
    spikes above OUTLIER_AMPLITUDE_FACTOR × each filter's median left out, the filter kept at 0.975).

    A spike that overlaps a spike of another filter more than DOMINATED_OVERLAP_FACTOR times bigger,
    on a channel both use, is left out as well (`dominated_by_overlap`): it is mostly what that spike
    leaves unexplained. On SpikeInterface's 32-channel probe (5 min, 11 steps) four filters, 0.97-0.99
    alike to their units at the start, ended 0.50-0.74 alike, pulled to 24-69 σ neighbours; with
    this rule and the batch-shape rule (training.py, MIN_BATCH_SHAPE_SIMILARITY) they ended 0.89-0.99,
    and the sort scored 0.724 instead of 0.625. Alone, this rule kept one of the four.
    """
    n_windows, n_filters, n_codes = codes.shape
    stride = batch.shape[2] + filters.shape[2] + 2 + dead_time

    def end_to_end(windows: np.ndarray) -> np.ndarray:  # (n_windows, rows, n) -> (rows, n_windows * stride)
        # One zeroed array and one copy into it (np.pad, then a transposed copy, was 10 % of a training step).
        laid = np.zeros((windows.shape[1], n_windows, stride), dtype=windows.dtype)
        laid[:, :, : windows.shape[2]] = windows.transpose(1, 0, 2)
        return laid.reshape(windows.shape[1], -1)

    long_codes = end_to_end(codes.detach().cpu().numpy())
    spike_filters, indices, triplets = kept_events(
        long_codes, end_to_end(batch.detach().cpu().numpy()), filters.detach().cpu().numpy(), dead_time, min_amplitude,
        gram)
    if max_amplitudes is not None:
        usual = triplets.sum(axis=1) <= np.asarray(max_amplitudes)[spike_filters]  # amplitudes as sorting reads them
        spike_filters, indices, triplets = spike_filters[usual], indices[usual], triplets[usual]
    clear = ~dominated_by_overlap(spike_filters, indices, triplets.sum(axis=1), filters.detach().cpu().numpy())
    spike_filters, indices, triplets = spike_filters[clear], indices[clear], triplets[clear]
    kept = np.zeros_like(long_codes)
    for offset in range(3):  # the code at index − 1, index, index + 1
        at = indices + offset - 1
        inside = (at >= 0) & (at < kept.shape[1])
        kept[spike_filters[inside], at[inside]] = triplets[inside, offset]
    windows = kept.reshape(n_filters, n_windows, stride)[:, :, :n_codes]
    return torch.from_numpy(np.ascontiguousarray(windows.transpose(1, 0, 2))).to(codes.device, codes.dtype)
