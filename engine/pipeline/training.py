"""Train a CRsAE on a recording, in a way a GUI can drive from another thread.

The trainer owns the preprocessed, noise-normalised training pool, the model
and the optimiser. `run()` blocks; `pause()`, `resume()` and `stop()` are
thread-safe flags checked between optimiser steps, and a callback receives
copies of small snapshots at a bounded rate, so a GUI thread never touches
live tensors.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.pipeline.amplitude_split import describe_amplitude_splits, split_by_amplitude
from engine.pipeline.pruning import (
    DUPLICATE_SIMILARITY, MIN_USE_FRACTION, SHADOW_WINDOW_MS, PruneDecision, group_medians, prune, resolve_coincidences,
)
from engine.pipeline.inference import SOLVERS, SpikeEvents, infer_spikes
from engine.pipeline.initialization import initial_filters, split_mixed_filters
from engine.model.crsae import CRsAE, device_description, select_device, universal_threshold
from engine.pipeline.refinement import AmplitudePrior
from engine.pipeline.sorting import Sorting, peak_taps
from engine.pipeline.preprocessing import PreprocessedRecording
from engine.io.recording import Recording, RecordingError, check_min_duration

# The pool of preprocessed data training samples windows from is capped at this
# many values (channels × samples): 64 M float32 = 256 MB, enough for minutes of
# a tetrode or seconds-long pieces spread over a 384-channel probe.
MAX_POOL_VALUES = 64_000_000
POOL_PIECE_S = 2.0
# Deciding which filters are neurons codes this much of the pool: enough
# spikes of a 1 Hz unit to count, little enough to take a second or two.
PRUNE_SECONDS = 20.0
DEAD_TIME_MS = 0.5  # spikes of one unit closer than this are one spike
COINCIDENCE_MS = 0.5  # events of two filters this close may be one spike
MIN_SPLIT_SPIKES = 20  # a filter is split only if each half has at least this many spikes
AMPLITUDE_SPLIT_MIN_FRACTION = 0.05  # ... and, split by amplitude, this fraction of the filter's spikes


MAX_FILTERS = 512
# Filters provisioned per channel when n_filters is left to us. Measured: one
# channel with 3 neurons is sorted best from 8 (32 fragments each neuron and
# pruning cannot put it back together); a tetrode with 8 neurons needs 32
# (with 8, 16 or 24 k-means folds its rarest unit into a 0.93-similar one).
FILTERS_PER_CHANNEL = 8


def auto_filters(n_channels: int) -> int:
    return int(min(max(FILTERS_PER_CHANNEL * n_channels, 8), MAX_FILTERS))


class ConfigError(ValueError):
    """An impossible training parameter, named with its value and allowed range."""


@dataclass
class TrainingConfig:
    n_filters: int | None = None  # provisioned filters, pruned to those in use; None = auto_filters(channels)
    n_taps: int | None = None  # filter length; None = 4 ms at the sampling rate
    n_iterations: int = 100  # unrolled FISTA steps T
    lambda_scale: float = 1.0  # multiplies the universal threshold
    # Relative step: Adam moves each filter value by about learning_rate / sqrt(channels × taps),
    # i.e. a unit-norm filter by ~learning_rate per step, whatever its size; decays to 0 (cosine).
    learning_rate: float = 0.001
    batch_size: int = 32
    window_ms: float = 200.0  # length of each training window
    # Passes over the training pool. Measured on the CPU benchmark: 1 and 2 epochs
    # sort alike (demo min unit 0.9502 vs 0.9505, tetrode 0.985 both, SI-generated
    # 0.809 both; the k-means start is already close), and 1 halves `sort --demo`.
    n_epochs: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # How sorting encodes the recording (engine/pipeline/inference.py SOLVERS): the same
    # lasso either way; "auto" = the working set on a CPU, dense on a GPU.
    solver: str = "auto"

    def validate(self) -> None:
        if self.n_filters is not None:
            _check_int(self.n_filters, "n_filters", 1, MAX_FILTERS)
        if self.n_taps is not None:
            _check_int(self.n_taps, "n_taps", 4, 2048)
        _check_int(self.n_iterations, "n_iterations", 1, 10_000)
        _check_int(self.batch_size, "batch_size", 1, 4096)
        _check_float(self.lambda_scale, "lambda_scale", 0.0, 100.0, open_low=True)
        _check_float(self.learning_rate, "learning_rate", 0.0, 1.0, open_low=True)
        _check_float(self.window_ms, "window_ms", 1.0, 60_000.0)
        _check_float(self.n_epochs, "n_epochs", 0.0, 10_000.0)
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        try:
            select_device(self.device) if self.device != "auto" else None
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def filters_for(self, n_channels: int) -> int:
        return int(self.n_filters) if self.n_filters is not None else auto_filters(n_channels)

    def taps_for(self, sampling_rate: float) -> int:
        return int(self.n_taps) if self.n_taps is not None else max(int(round(4e-3 * sampling_rate)), 8)

    def window_for(self, sampling_rate: float) -> int:
        return int(round(self.window_ms * 1e-3 * sampling_rate))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingConfig":
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown training parameters: {', '.join(sorted(unknown))}")
        return cls(**values)


def _check_int(value, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be a whole number between {low} and {high}, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} = {value} is out of range: use a value between {low} and {high}")


def _check_float(value, name: str, low: float, high: float, open_low: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    too_low = value <= low if open_low else value < low
    if too_low or value > high:
        bound = "greater than" if open_low else "at least"
        raise ConfigError(f"{name} = {value} is out of range: it must be {bound} {low} and at most {high}")


@dataclass(frozen=True)
class TrainingSnapshot:
    step: int
    n_steps: int
    loss: float
    filters: np.ndarray  # (n_filters, n_taps, n_channels) float32 copy, unit norm
    filter_change: float  # ‖H_t − H_{t−1}‖ over the steps since the last snapshot
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class WindowReconstruction:
    start: int
    traces: np.ndarray  # (n, n_channels) float32 µV, preprocessed
    reconstruction: np.ndarray  # (n, n_channels) float32 µV, H x
    codes: np.ndarray  # (n_filters, n) float32, code of filter k aligned to its spike time


class TrainingStopped(Exception):
    """Raised inside long work when the person pressed Stop."""


class Trainer:
    """Learns the dictionary of a recording. See module docstring for threading."""

    def __init__(
        self,
        recording: Recording,
        config: TrainingConfig | None = None,
        initial_dictionary: np.ndarray | None = None,
    ) -> None:
        """`initial_dictionary` (n_filters, n_channels, n_taps): start from these
        filters instead of clustering the data (used to restore checkpoints)."""
        self.config = config or TrainingConfig()
        self.config.validate()
        self.recording = recording if isinstance(recording, PreprocessedRecording) else PreprocessedRecording(recording)
        self.sampling_rate = float(self.recording.sampling_rate)
        self.n_taps = self.config.taps_for(self.sampling_rate)
        self.window = max(self.config.window_for(self.sampling_rate), 2 * self.n_taps)
        check_min_duration(self.recording, self.n_taps, "one filter")
        self.window = min(self.window, self.recording.n_samples)
        self.device = select_device(self.config.device)
        self.device_name = device_description(self.device)
        self.noise_levels = np.maximum(np.asarray(self.recording.noise_levels, dtype=np.float32), 1e-6)

        # Guards the model: the GUI's reconstruct() and sort() may run while run() steps.
        self._model_lock = threading.RLock()
        torch.manual_seed(self.config.seed)
        self._rng = np.random.default_rng(self.config.seed)
        self.pool = self._build_pool()  # (n_channels, n_pool) float32, noise-normalised
        self.lambda_ = self.config.lambda_scale * universal_threshold(self.recording.n_channels, self.window)
        if initial_dictionary is None:
            n_filters = self.config.filters_for(self.recording.n_channels)
            candidates = initial_filters(self.pool, n_filters, self.n_taps, seed=self.config.seed)
        else:
            candidates = np.asarray(initial_dictionary, dtype=np.float32)
        self.model = CRsAE(candidates, self.lambda_, self.config.n_iterations).to(self.device)
        self.optimizer = self._new_optimizer()
        if initial_dictionary is None:
            # Train only filters that code real spikes: idle or duplicate filters
            # were measured to pull the good ones off the true shapes.
            self.initial_pruning = self._prune_model()
            split = self._split_mixed_filters()
            if split:
                before = self.initial_pruning.describe()
                self.initial_pruning = self._prune_model()
                self.initial_pruning.note = f"{before}; split {', '.join(map(str, split))} in two; then "
        else:
            n = len(candidates)
            self.initial_pruning = PruneDecision(np.arange(n), {}, [], np.zeros(n, dtype=np.int64))
        self.final_pruning = self.initial_pruning
        self.initial_filters = self.model.filters.detach().cpu().numpy().copy()  # (n_kept, n_channels, n_taps)

        windows_per_epoch = max(self.pool.shape[1] / self.window, 1.0)
        self.n_steps = max(1, int(math.ceil(self.config.n_epochs * windows_per_epoch / self.config.batch_size)))
        self.step = 0
        self.loss_history: list[float] = []
        self.filter_change_history: list[float] = []
        self._resume_event = threading.Event()
        self._resume_event.set()
        self._stop_event = threading.Event()

    # ---- optimisation -------------------------------------------------------
    @property
    def base_learning_rate(self) -> float:
        """Adam's step per filter value: the configured relative step over sqrt(channels × taps).

        Adam moves every value by about its lr whatever the gradient's size, so a
        fixed lr moves a 4-channel × 120-tap filter 3.5× further per step than a
        1 × 40 one. Measured: Adam lr 0.01 took the true tetrode dictionary to
        error 0.2 in 19 steps and wrecked the sort (0.10), while the demo took it.
        The default relative step 0.001 was chosen on the 5-minute tetrode:
        0.005 took it from 0.991 to 0.73 in 94 steps, 0.002 to 0.988, 0.001
        kept 0.990 (demo: 0.966 at every one of these).
        """
        return self.config.learning_rate / math.sqrt(self.recording.n_channels * self.n_taps)

    def learning_rate_at(self, step: int) -> float:
        """Cosine decay to zero over the run: near the optimum Adam's steps stay
        about lr long and only random-walk, so the last steps must be short."""
        progress = min(step / max(self.n_steps, 1), 1.0)
        return self.base_learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.base_learning_rate)

    # ---- data ---------------------------------------------------------------
    def _build_pool(self) -> np.ndarray:
        """Preprocessed, noise-normalised data to draw training windows from."""
        n_channels, n_samples = self.recording.n_channels, self.recording.n_samples
        budget = MAX_POOL_VALUES // n_channels
        if n_samples <= budget:
            pieces = [(0, n_samples)]
        else:
            piece = max(int(POOL_PIECE_S * self.sampling_rate), self.window)
            n_pieces = max(budget // piece, 1)
            starts = np.linspace(0, n_samples - piece, n_pieces).astype(np.int64)
            pieces = [(int(s), int(s) + piece) for s in starts]
        chunks = [self.recording.get_traces(start, stop).T / self.noise_levels[:, None] for start, stop in pieces]
        return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)

    def _sample_batch(self) -> torch.Tensor:
        starts = self._rng.integers(0, self.pool.shape[1] - self.window + 1, size=self.config.batch_size)
        index = starts[:, None] + np.arange(self.window)[None, :]
        batch = self.pool[:, index].transpose(1, 0, 2)  # (batch, n_channels, window)
        return torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)

    # ---- control from another thread ---------------------------------------
    def pause(self) -> None:
        self._resume_event.clear()

    def resume(self) -> None:
        self._resume_event.set()

    def stop(self) -> None:
        self._stop_event.set()
        self._resume_event.set()

    @property
    def is_paused(self) -> bool:
        return not self._resume_event.is_set()

    @property
    def is_stopped(self) -> bool:
        return self._stop_event.is_set()

    # ---- training -----------------------------------------------------------
    def train_step(self) -> float:
        batch = self._sample_batch()
        with self._model_lock:
            lipschitz = self.model.lipschitz()
            codes = self.model.encode(batch, lipschitz=lipschitz)
            reconstruction = self.model.decode(codes)
            loss = torch.mean((batch - reconstruction) ** 2)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate_at(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.model.normalize_filters_()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"training loss became {value} at step {self.step + 1}: lower the learning rate "
                f"(now {self.config.learning_rate}) or check the recording for artefacts"
            )
        return value

    def run(self, callback: Callable[[TrainingSnapshot], None] | None = None, snapshot_interval_s: float = 0.1) -> None:
        """Train until `n_steps` or `stop()`; blocks while paused."""
        started = time.perf_counter()
        paused_for = 0.0
        last_snapshot = -math.inf
        previous_filters = self.model.filters.detach().clone()
        change_since_snapshot = 0.0
        while self.step < self.n_steps and not self.is_stopped:
            if not self._resume_event.is_set():
                pause_started = time.perf_counter()
                self._resume_event.wait()
                paused_for += time.perf_counter() - pause_started
                continue
            loss = self.train_step()
            self.step += 1
            current = self.model.filters.detach()
            change = float((current - previous_filters).norm())
            previous_filters = current.clone()
            change_since_snapshot += change
            self.loss_history.append(loss)
            self.filter_change_history.append(change)
            now = time.perf_counter()
            if callback is not None and (now - last_snapshot >= snapshot_interval_s or self.step == self.n_steps):
                elapsed = now - started - paused_for
                eta = elapsed / self.step * (self.n_steps - self.step)
                callback(
                    TrainingSnapshot(self.step, self.n_steps, loss, self.filters(), change_since_snapshot, elapsed, eta)
                )
                change_since_snapshot = 0.0
                last_snapshot = now

    def filters(self) -> np.ndarray:
        """(n_filters, n_taps, n_channels) float32 copy of the current dictionary."""
        with self._model_lock:
            return self.model.filters_numpy()

    # ---- pruning and sorting ------------------------------------------------
    @property
    def dead_time(self) -> int:
        return self._samples(DEAD_TIME_MS)

    @property
    def _prune_length(self) -> int:
        """Samples at the start of the pool that pruning and splitting code (PRUNE_SECONDS)."""
        return min(self.pool.shape[1], int(PRUNE_SECONDS * self.sampling_rate))

    def _samples(self, milliseconds: float) -> int:
        """A duration in whole samples, at least one."""
        return max(int(round(milliseconds * 1e-3 * self.sampling_rate)), 1)

    def _pool_events(self) -> SpikeEvents:
        """Spikes of every filter over the first PRUNE_SECONDS of the training pool."""
        from engine.io.recording import NumpyRecording

        length = self._prune_length
        pool_recording = NumpyRecording(self.pool[:, :length].T, self.sampling_rate)
        events = infer_spikes(
            self.model, pool_recording, np.ones(self.recording.n_channels, np.float32), self.dead_time, self.lambda_,
            solver=self.config.solver,
        )
        return resolve_coincidences(events, self._samples(COINCIDENCE_MS))

    def _prune_model(self) -> PruneDecision:
        """Merge duplicate filters and drop idle ones, in place."""
        with self._model_lock:
            events = self._pool_events()
            decision = prune(self.model.filters_numpy(), events, shadow_window=self._samples(SHADOW_WINDOW_MS))
            self._pool_events_cache = events if len(decision.keep) == self.model.n_filters else None
            if len(decision.keep) < self.model.n_filters:
                kept = self.model.filters.detach()[torch.as_tensor(decision.keep, device=self.device)].cpu().numpy()
                self.model = CRsAE(kept, self.lambda_, self.config.n_iterations).to(self.device)
                self.optimizer = self._new_optimizer()
                # The starting shapes follow their filters, so views can still pair them.
                if getattr(self, "initial_filters", None) is not None and len(self.initial_filters) == len(decision.counts):
                    self.initial_filters = self.initial_filters[decision.keep]
        return decision

    def _split_mixed_filters(self) -> list[int]:
        """Give a neuron folded into a look-alike filter its own filter (engine/pipeline/initialization.py)."""
        with self._model_lock:
            # The pruning just before coded the pool with this same dictionary when it dropped nothing.
            events = self._pool_events_cache if self._pool_events_cache is not None else self._pool_events()
            if len(events) == 0:
                return []
            filters = self.model.filters.detach().cpu().numpy()
            code_index = events.times - peak_taps(self.model.filters_numpy())[events.filters]
            busiest = int(np.bincount(events.filters).max())
            min_spikes = max(MIN_SPLIT_SPIKES, int(MIN_USE_FRACTION * busiest))
            length = self._prune_length
            new_filters, split = split_mixed_filters(
                self.pool[:, :length], filters, code_index, events.filters, events.amplitudes, DUPLICATE_SIMILARITY,
                min_spikes,
                seed=self.config.seed,
            )
            if split:
                self.model = CRsAE(new_filters, self.lambda_, self.config.n_iterations).to(self.device)
                self.optimizer = self._new_optimizer()
            return split

    def sort(
        self,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        recording: Recording | None = None,
        infer: Callable[..., SpikeEvents] | None = None,
    ) -> Sorting:
        """Prune the learned dictionary, then find every spike of the recording.

        `recording`: another recording of the same probe to sort with this
        dictionary (default: the one trained on). `infer`: what finds the
        spikes chunk by chunk, called as `infer_spikes` (the default) is, e.g.
        engine.pipeline.distributed.DaskInference to run the chunks on a
        cluster. Raises TrainingStopped if `should_stop()` turns true midway.
        """
        self.final_pruning = self._prune_model()
        with self._model_lock:
            model = self.model
            pool_events = self._pool_events_cache if self._pool_events_cache is not None else self._pool_events()
        prior = AmplitudePrior.from_events(pool_events.amplitudes, pool_events.filters, model.n_filters)
        target, noise_levels = self.recording, self.noise_levels
        if recording is not None and recording is not self.recording and recording is not self.recording.parent:
            target = recording if isinstance(recording, PreprocessedRecording) else PreprocessedRecording(recording)
            if target.n_channels != self.recording.n_channels:
                raise RecordingError(
                    f"the dictionary was learned on {self.recording.n_channels} channels but this recording has "
                    f"{target.n_channels}: sort recordings of the same probe, or train on this one"
                )
            noise_levels = np.maximum(np.asarray(target.noise_levels, dtype=np.float32), 1e-6)
        events = (infer or infer_spikes)(
            model, target, noise_levels, self.dead_time, self.lambda_,
            progress=progress, should_stop=should_stop, prior=prior, solver=self.config.solver,
        )
        if should_stop is not None and should_stop():
            raise TrainingStopped("sorting was stopped before the end of the recording")
        events = resolve_coincidences(events, self._samples(COINCIDENCE_MS))
        return self._sorting_from_events(events, noise_levels, target)

    def _sorting_from_events(self, events: SpikeEvents, noise_levels: np.ndarray, target: Recording) -> Sorting:
        filters = self.model.filters_numpy()  # (n_filters, n_taps, n_channels) unit norm, noise-σ units
        n_filters = filters.shape[0]
        # Two neurons of one shape but different sizes share a filter: their code amplitudes tell them apart.
        units, unit_filters, splits = split_by_amplitude(events.amplitudes, events.filters, n_filters,
                                                         MIN_SPLIT_SPIKES, AMPLITUDE_SPLIT_MIN_FRACTION)
        in_uv = filters * noise_levels[None, None, :]
        main = np.ptp(in_uv, axis=1).argmax(axis=1)  # (n_filters,)
        peaks = peak_taps(in_uv)
        peak_value = np.abs(in_uv[np.arange(n_filters), peaks, main])  # µV per unit of code
        median_code = group_medians(events.amplitudes, units, len(unit_filters))
        # (n_units, n_taps, n_channels) µV: a typical spike of each unit, its filter at its median size.
        templates = in_uv[unit_filters] * median_code[:, None, None]
        return Sorting(
            spike_times=events.times,
            spike_units=units,
            amplitudes=events.amplitudes * peak_value[events.filters] if n_filters else events.amplitudes,
            templates=templates,
            sampling_rate=self.sampling_rate,
            template_peak_taps=peaks[unit_filters],
            channel_positions=target.channel_positions,
            extra={
                "filter_index": unit_filters,
                "code_amplitudes": events.amplitudes,
                "lambda": self.lambda_,
                "noise_levels_uv": noise_levels.copy(),
                "initial_pruning": self.initial_pruning.describe(),
                "final_pruning": self.final_pruning.describe(),
                "amplitude_splits": describe_amplitude_splits(splits),
            },
        )

    # ---- views --------------------------------------------------------------
    def reconstruct(self, start: int, stop: int) -> WindowReconstruction:
        """Codes and reconstruction of one window, for live views (thread-safe)."""
        start = max(int(start), 0)
        stop = min(int(stop), self.recording.n_samples)
        if stop - start < self.n_taps:
            raise RecordingError(f"window [{start}, {stop}) is shorter than one filter ({self.n_taps} samples)")
        traces = self.recording.get_traces(start, stop)  # (n, n_channels) µV
        signal = torch.from_numpy(np.ascontiguousarray(traces.T / self.noise_levels[:, None]))[None].to(self.device)
        with self._model_lock, torch.no_grad():
            codes = self.model.encode(signal)
            reconstruction = self.model.decode(codes)[0].cpu().numpy().T * self.noise_levels[None, :]
            peak_taps = _peak_taps(self.model.filters_numpy())
        codes = codes[0].cpu().numpy()  # (n_filters, n - n_taps + 1)
        aligned = np.zeros((codes.shape[0], stop - start), dtype=np.float32)
        for k, peak in enumerate(peak_taps):
            aligned[k, peak : peak + codes.shape[1]] = codes[k]
        return WindowReconstruction(start, traces.astype(np.float32), reconstruction.astype(np.float32), aligned)

    # ---- persistence --------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> None:
        from engine.io.atomic import write_bytes_atomic
        import io

        with self._model_lock:
            state = {
                "format": 1,
                "config": self.config.to_dict(),
                "filters": self.model.filters.detach().cpu().clone(),
                "initial_filters": torch.from_numpy(self.initial_filters),
                "lambdas": self.model.lambdas.detach().cpu().clone(),
                "optimizer": self.optimizer.state_dict(),
                "step": self.step,
                "n_steps": self.n_steps,
                "loss_history": list(self.loss_history),
                "filter_change_history": list(self.filter_change_history),
            }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_bytes_atomic(path, buffer.getvalue())

    @classmethod
    def load_checkpoint(cls, path: str | Path, recording: Recording, device: str | None = None) -> "Trainer":
        state = torch.load(Path(path), map_location="cpu", weights_only=False)
        config = TrainingConfig.from_dict(state["config"])
        if device is not None:
            config.device = device
        else:
            try:
                select_device(config.device)
            except ValueError:
                # Trained on a GPU this machine lacks: the dictionary is the same on any device.
                config.device = "auto"
        filters = state["filters"].numpy()  # (n_filters, n_channels, n_taps)
        if recording.n_channels != filters.shape[1]:
            raise RecordingError(
                f"the checkpoint's filters have {filters.shape[1]} channels but the recording has "
                f"{recording.n_channels}: open the recording it was trained on"
            )
        config.n_taps = filters.shape[2]
        trainer = cls(recording, config, initial_dictionary=filters)
        trainer.initial_filters = state["initial_filters"].numpy()
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.step = int(state["step"])
        trainer.n_steps = int(state["n_steps"])
        trainer.loss_history = list(state["loss_history"])
        trainer.filter_change_history = list(state["filter_change_history"])
        return trainer


def _peak_taps(filters: np.ndarray) -> np.ndarray:
    """Tap of each filter's extremum on its main channel. filters: (n, taps, channels)."""
    from engine.pipeline.sorting import peak_taps

    return peak_taps(filters)
