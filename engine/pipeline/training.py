"""Training: the dictionary learned from the tied encoder's codes, and nothing else.

`Trainer` takes a model and a training pool and, step by step, codes a batch
of windows with the tied encoder and updates the filters: by default to their
least-squares shapes given those codes (engine/pipeline/dictionary_update.py),
or by Adam on the reconstruction error back-propagated through the unrolled
encoder; the filters are renormalised after each step. It knows nothing
of initialisation, pruning or sorting (engine/pipeline/run.py strings those
together). `run()` blocks; `pause()`, `resume()` and `stop()` are thread-safe
flags checked between optimiser steps, and a callback receives copies of small
snapshots at a bounded rate, so a GUI thread never touches live tensors.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np
import torch

from engine.cpu import adapt_threads, single_thread
from engine.evaluation.scoring import dictionary_error
from engine.model.crsae import N_DEBIAS_ITERATIONS, CRsAE, select_device
from engine.pipeline.dictionary_update import codes_of_kept_spikes, least_squares_update, reconstruction_error, recentre
from engine.model.working_set import ROUGH_SETTLED_FRACTION, Lockstep, WorkingSetEncoder
from engine.pipeline.inference import SOLVERS, uses_working_set
from engine.pipeline.params import (
    FILTER_MS, FILTERS_PER_CHANNEL, FULL_UPDATE_SECONDS, HELDOUT_INTERVAL_S, MAX_FILTERS, MAX_TAPS, MIN_TAPS,
    MIN_BATCH_SHAPE_SIMILARITY, MIN_SETTLE_STEPS, PEAK_FRACTION, SETTLE_TOLERANCE,
)
from engine.pipeline.pool import TrainingPool


# A training step's batch is coded by the CPU's working-set encoder in as many parts as there are free
# cores (other programs' load, engine/cpu.py), each part in a thread of its own, in lockstep
# (working_set.Lockstep): the encoder is compiled loops that one thread runs as fast as two, and the whole
# batch at once kept one core busy (32-channel probe, 32 windows a step: training 1.2 cores busy of 2).
# Parts deciding on their own when to stop the checks (the rough stop looks at the whole batch) trained
# other filters: recording seed 5 lost a 6-SNR neuron (0.895 -> 0.873); in lockstep the codes are the
# whole batch's, whatever the number of parts.

INITS = ("data", "random")
# The words `--whiten` and the Training panel take, as TrainingConfig.whiten values (None: automatic).
WHITEN_WORDS = {"auto": None, "on": True, "off": False}
# The words `--motion` takes (engine/pipeline/motion.py: SpikeInterface's drift correction, opt-in).
MOTION_WORDS = ("off", "rigid", "nonrigid")
DICTIONARY_UPDATES = ("auto", "least_squares", "gradient")


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
    # dictionary_update="gradient" only. Relative step: Adam moves each filter value by about learning_rate / sqrt(channels × taps),
    # i.e. a unit-norm filter by ~learning_rate per step, whatever its size; decays to 0 (cosine).
    learning_rate: float = 0.001
    batch_size: int = 32  # windows per step, lowered to fit max_step_mb
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
    # Back-propagate through only the last this many FISTA steps (None: all T).
    # The codes are the same; a step's memory grows with this instead of T.
    gradient_iterations: int | None = 20
    # Memory a training step may use for its autograd graph; the batch shrinks to fit.
    max_step_mb: float = 1024.0
    radius_um: float = 100.0  # a filter lives on the channels this close to its main channel
    # Spatial whitening (engine/pipeline/whitening.py): None = on probes of 24 to 64 channels, recordings of 30 s
    # or more (whitening.whitens); True/False forces it.
    whiten: bool | None = None
    # Probe drift estimated and undone before sorting (engine/pipeline/motion.py): "off", "rigid" or "nonrigid".
    motion: str = "off"
    # Where the filters start: "data" (k-means of threshold crossings) or "random" (noise, learned from scratch).
    init: str = "data"
    # How the filters learn from the codes (engine/pipeline/dictionary_update.py): "least_squares",
    # the closed-form shape given the tied encoder's codes (of the spikes sorting keeps, once the
    # filters are spike shapes), averaged over the batches; or "gradient", Adam on the
    # reconstruction error back-propagated through the unrolled encoder. "auto" = least squares:
    # on a 60 s tetrode simulation from the k-means start it lowered the dictionary error
    # 0.061 → 0.050 in 31 s of training with mean accuracy 0.987, where the gradient took
    # 113 s to move it 0.061 → 0.060 (0.986); from noise the gradient learns nothing.
    dictionary_update: str = "auto"
    # Least squares on the spikes only: training ends before n_epochs once the filters' shapes
    # are known to within this (mean standard error over the filters, in dictionary-error units,
    # Trainer.shape_uncertainty); 0 runs every epoch.
    settle_tolerance: float = SETTLE_TOLERANCE

    def update_rule(self) -> str:
        """The dictionary update this config runs: "least_squares" or "gradient"."""
        return "least_squares" if self.dictionary_update == "auto" else self.dictionary_update

    def validate(self) -> None:
        if self.n_filters is not None:
            _check_int(self.n_filters, "n_filters", 1, MAX_FILTERS)
        if self.n_taps is not None:
            _check_int(self.n_taps, "n_taps", MIN_TAPS, MAX_TAPS)
        _check_int(self.n_iterations, "n_iterations", 1, 10_000)
        _check_int(self.batch_size, "batch_size", 1, 4096)
        _check_float(self.lambda_scale, "lambda_scale", 0.0, 100.0, open_low=True)
        _check_float(self.learning_rate, "learning_rate", 0.0, 1.0, open_low=True)
        _check_float(self.window_ms, "window_ms", 1.0, 60_000.0)
        _check_float(self.n_epochs, "n_epochs", 0.0, 10_000.0)
        if self.gradient_iterations is not None:
            _check_int(self.gradient_iterations, "gradient_iterations", 1, 10_000)
        _check_float(self.max_step_mb, "max_step_mb", 1.0, 1e7)
        _check_float(self.radius_um, "radius_um", 0.0, 1e6, open_low=True)
        _check_float(self.settle_tolerance, "settle_tolerance", 0.0, 1.0)
        if self.whiten is not None and not isinstance(self.whiten, bool):
            raise ConfigError(f"whiten must be True, False or None (automatic), got {self.whiten!r}")
        if self.motion not in MOTION_WORDS:
            raise ConfigError(f"motion must be one of {', '.join(MOTION_WORDS)}, got {self.motion!r}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.dictionary_update not in DICTIONARY_UPDATES:
            raise ConfigError(f"dictionary_update must be one of {', '.join(DICTIONARY_UPDATES)}, "
                              f"got {self.dictionary_update!r}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        try:
            select_device(self.device) if self.device != "auto" else None
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def filters_for(self, n_channels: int) -> int:
        return int(self.n_filters) if self.n_filters is not None else auto_filters(n_channels)

    def taps_for(self, sampling_rate: float) -> int:
        if self.n_taps is not None:
            return int(self.n_taps)
        taps = max(int(round(FILTER_MS * 1e-3 * sampling_rate)), 8)
        # The same limit as an explicit n_taps: 40,000-tap filters (--fs 1e7) stall pruning for minutes.
        if taps > MAX_TAPS:
            raise ConfigError(
                f"the filter length, 4 ms at {sampling_rate:g} Hz, would be {taps} samples, above the limit of "
                f"{MAX_TAPS}: check the sampling rate (--fs), or give the length with --n-taps ({MIN_TAPS} to {MAX_TAPS})"
            )
        return taps

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


# Bytes the autograd graph keeps per (filter + channel) x sample x tracked step.
# Measured on the 5-minute tetrode before the graph was bounded (32 windows x
# 6000 samples x (8 filters + 4 channels) x 120 tracked steps = 221 M values):
# the process peaked at 5.7 GB, about 26 bytes a value.
GRAPH_BYTES_PER_VALUE = 26.0


def step_memory_mb(n_filters: int, n_channels: int, window: int, tracked_iterations: int, batch: int) -> float:
    """Estimated memory (MB) of one training step's autograd graph."""
    values_per_window = (n_filters + n_channels) * window * tracked_iterations
    return GRAPH_BYTES_PER_VALUE * values_per_window * batch / 2**20


def batch_size_within_budget(config: TrainingConfig, n_filters: int, n_channels: int, window: int) -> int:
    """config.batch_size, lowered so that a step fits config.max_step_mb; refuses if one window cannot."""
    if config.update_rule() == "gradient":
        tracked = (config.gradient_iterations or config.n_iterations) + N_DEBIAS_ITERATIONS
    else:
        tracked = 1  # no autograd graph: the encoder's state and one residual
    one_window = step_memory_mb(n_filters, n_channels, window, tracked, 1)
    fits = int(config.max_step_mb // one_window)
    if fits < 1:
        raise ConfigError(
            f"one training window ({window} samples x {n_filters} filters, {tracked} tracked steps) needs about "
            f"{one_window:.0f} MB, more than max_step_mb = {config.max_step_mb:g}: raise max_step_mb, shorten "
            f"window_ms, or set gradient_iterations (e.g. 20)"
        )
    return min(config.batch_size, fits)


@dataclass(frozen=True)
class TrainingSnapshot:
    step: int
    n_steps: int
    loss: float
    filters: np.ndarray  # (n_filters, n_taps, n_channels) float32 copy, unit norm
    filter_change: float  # ‖H_t − H_{t−1}‖ over the steps since the last snapshot
    elapsed_s: float
    eta_s: float
    heldout_loss: float = math.nan  # reconstruction MSE on the pool's fixed held-out windows
    dictionary_error: float | None = None  # mean error to the true shapes, when they are known


class Trainer:
    """Learns a model's filters on a pool of training windows. See the module docstring for threading."""

    def __init__(self, model: CRsAE, pool: TrainingPool, config: TrainingConfig,
                 model_lock: threading.RLock | None = None, reference_shapes: np.ndarray | None = None) -> None:
        """`model_lock` guards the model: others (live reconstruction, sorting) may read it while run() steps.

        `reference_shapes` (n_units, n_taps, n_channels): the true spike shapes of a simulation;
        snapshots then carry the dictionary error to them (engine/evaluation/scoring.py).
        """
        self.reference_shapes = reference_shapes
        self.model = model
        self.pool = pool
        self.config = config
        self.model_lock = model_lock or threading.RLock()
        self.device = next(model.parameters()).device
        self._rng = np.random.default_rng(config.seed)
        self._optimizer: torch.optim.Optimizer | None = None  # made when first used (`optimizer`)
        self.batch_size = batch_size_within_budget(config, model.n_filters, model.n_channels, pool.window)
        windows_per_epoch = max(pool.epoch_samples / pool.window, 1.0)
        self.n_steps = max(1, int(math.ceil(config.n_epochs * windows_per_epoch / self.batch_size)))
        self.step = 0
        self.settled_at: int | None = None  # the step training ended at because the shapes settled
        self.loss_history: list[float] = []
        self.filter_change_history: list[float] = []
        self.heldout_history: list[tuple[int, float]] = []  # (step, held-out MSE), at snapshots
        self.dictionary_error_history: list[tuple[int, float]] = []  # (step, error), with reference_shapes
        # How often the live curves are measured (a benchmark sets 0: every step), and the
        # seconds spent measuring them, which a benchmark takes off its clock.
        self.measure_interval_s = HELDOUT_INTERVAL_S
        self.measuring_s = 0.0
        # Once the filters are spike shapes (the k-means start, or noise after pruning), least
        # squares fits them to the spikes sorting would keep, not to every code
        # (codes_of_kept_spikes says why). While they are still noise, every code: on
        # SpikeInterface's 1-channel recording from noise, the kept spikes alone lost a unit (mean
        # dictionary error 0.70 against 0.07). The tuple is codes_of_kept_spikes's arguments: dead
        # time in samples, least spike amplitude, each filter's largest amplitude (or None).
        self.spike_reading: tuple[int, float, np.ndarray | None] | None = None
        self._spike_energy: torch.Tensor | None = None  # (n_filters,) code energy averaged so far
        # (n_filters,) sums over the averaged batches, for the shapes' standard errors (shape_uncertainty):
        # energy², and energy × the squared distance from the batch's shape to the filter it moved.
        self._energy_squares: torch.Tensor | None = None
        self._energy_scatter: torch.Tensor | None = None
        self._averaging_began = 0  # the step these sums began at
        self._resume_event = threading.Event()
        self._resume_event.set()
        self._stop_event = threading.Event()
        self.waiting_in_pause = threading.Event()  # set while run() is blocked by pause()

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
        return self.config.learning_rate / math.sqrt(self.model.n_channels * self.model.n_taps)

    def learning_rate_at(self, step: int) -> float:
        """Cosine decay to zero over the run: near the optimum Adam's steps stay
        about lr long and only random-walk, so the last steps must be short."""
        progress = min(step / max(self.n_steps, 1), 1.0)
        return self.base_learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """Adam over the filters, for the back-propagation rule (and checkpoints). Made when first asked:
        the least-squares rule never steps it, and torch's first optimizer costs ~1 s of imports."""
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(self.model.parameters(), lr=self.base_learning_rate)
        return self._optimizer

    def replace_model(self, model: CRsAE) -> None:
        """Go on with `model` (a pruned or split dictionary); Adam's moments belonged to the old filters."""
        with self.model_lock:
            self.model = model
            self._optimizer = None  # a new one over the new filters when next asked
            self._spike_energy = None  # new filters: their averages begin again
            self._energy_squares = self._energy_scatter = None

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
        adapt_threads()
        batch = self.pool.sample_batch(self._rng, self.batch_size, self.device)
        if self.config.update_rule() == "least_squares":
            return self._least_squares_step(batch)
        with self.model_lock:
            lipschitz = self.model.lipschitz()
            codes = self.model.encode(batch, lipschitz=lipschitz, gradient_iterations=self.config.gradient_iterations)
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

    @torch.no_grad()
    def _least_squares_step(self, batch: torch.Tensor) -> float:
        """Code the batch with the tied encoder, then give every filter its least-squares shape."""
        with self.model_lock:
            codes, kept_codes = self._lasso_codes(batch)
            loss = reconstruction_error(self.model.filters, codes, batch, self.model.channel_mask)
            if kept_codes is not None:
                codes = kept_codes
            target = least_squares_update(self.model.filters, codes, batch, self.model.channel_mask)
            if self.spike_reading is None:
                # From noise: move only part of the way on a small batch (an exponential average
                # of the recent batches' targets), all of it from FULL_UPDATE_SECONDS up.
                seconds = batch.shape[0] * batch.shape[2] / self.pool.sampling_rate
                fraction = min(1.0, seconds / FULL_UPDATE_SECONDS)
            else:
                energy = codes.pow(2).sum(dim=(0, 2))  # (n_filters,)
                target = target / target.norm(dim=(1, 2), keepdim=True).clamp_min(1e-12)
                # A batch whose shape is not this filter's neuron does not count (MIN_BATCH_SHAPE_SIMILARITY).
                alike = (target * self.model.filters).sum(dim=(1, 2)) >= MIN_BATCH_SHAPE_SIMILARITY
                self._track_scatter(energy * alike, target)
                fraction = self._spike_weighted_fraction(energy * alike, start_weight=energy)[:, None, None]
            filters = self.model.filters + fraction * (target - self.model.filters)
            self.model.filters.copy_(recentre(filters, PEAK_FRACTION))
            self.model.normalize_filters_()
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {self.step + 1}: "
                                     "check the recording for artefacts (NaN or huge values)")
        return loss

    def _spike_weighted_fraction(self, energy: torch.Tensor, start_weight: torch.Tensor | None = None) -> torch.Tensor:
        """(n_filters,) how far each filter moves to this batch's shape: its share of all the code
        energy it has had since the averaging began, so that each shape is the mean of every batch's.

        A batch holds only a few spikes of a slow unit, and one batch's shape is as noisy as they
        are: on the 60 s tetrode simulation, a 3 Hz unit (20 spikes a batch) went from dictionary
        error 0.09 to 0.18 when each step took the batch's shape whole, where the least-squares
        shape from all its true spikes is 0.09 from the truth. The shape the averaging starts
        from counts as one batch's worth (`start_weight`, default this batch's energy: a batch
        that does not count for a filter still sizes its start).
        """
        if self._spike_energy is None:  # replace_model() starts it again for new filters
            self._spike_energy = (energy if start_weight is None else start_weight).clone()
        self._spike_energy = self._spike_energy + energy
        return energy / self._spike_energy.clamp_min(1e-12)

    def _track_scatter(self, energy: torch.Tensor, target: torch.Tensor) -> None:
        """Add this batch (its code energy per filter, its unit-norm shapes) to shape_uncertainty's sums."""
        distance = (target - self.model.filters).pow(2).sum(dim=(1, 2))
        if self._energy_squares is None:
            self._averaging_began = self.step
            self._energy_squares = 2 * energy.pow(2)  # the start counts as one batch of the first one's energy
            self._energy_scatter = torch.zeros_like(energy)
        else:
            self._energy_squares = self._energy_squares + energy.pow(2)
        self._energy_scatter = self._energy_scatter + energy * distance

    def shape_uncertainty(self) -> np.ndarray | None:
        """(n_filters,) standard error of each filter's averaged shape (in dictionary-error units), or
        None before any spike-weighted step; NaN for a filter that has had no spikes.

        Each filter is the mean of the batches' shapes weighted by their code energies w_b. The
        spread of one batch's shape is estimated by Σ w_b d_b² / Σ w_b, d_b the distance from
        batch b's shape to the filter it moved, and the mean of n equal batches has 1/n of that
        variance; with unequal weights 1/n becomes Σ w_b² / (Σ w_b)². d_b also holds how far the
        start was from the truth, so the estimate overstates what is left early on.
        """
        if self._energy_squares is None:
            return None
        total = self._spike_energy
        scatter = self._energy_scatter / total.clamp_min(1e-12)
        variance = scatter * self._energy_squares / total.pow(2).clamp_min(1e-24)
        uncertainty = variance.sqrt().cpu().numpy()
        uncertainty[(total <= 0).cpu().numpy()] = np.nan
        return uncertainty

    def _shapes_settled(self) -> bool:
        """Whether more batches would barely move the filters (config.settle_tolerance)."""
        if self.config.settle_tolerance <= 0 or self.spike_reading is None:
            return False
        uncertainty = self.shape_uncertainty()
        if uncertainty is None or not np.isfinite(uncertainty).any():
            return False
        steps_averaged = self.step - self._averaging_began
        return steps_averaged >= MIN_SETTLE_STEPS and float(np.nanmean(uncertainty)) < self.config.settle_tolerance

    def _lasso_codes(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The tied encoder's codes of `batch`, and with a spike reading, the codes of only the spikes sorting
        would keep (dictionary_update.codes_of_kept_spikes; else None). Not debiased: debiasing blows up the
        small codes FISTA gives noise, and least squares then fits that noise (measured from the true shapes
        on the demo: dictionary error 0.09 after 10 steps with debiased codes, 0.05 without).

        On a CPU, by the working-set solver sorting uses (the same FISTA on the codes that can be non-zero),
        its optimality checks stopped once they add little (ROUGH_SETTLED_FRACTION): shapes are
        averages over many spikes, and the last checks' small codes barely move them (on the
        5-minute tetrode, with pruning's passes rough too, the sort scored 0.983 against 0.984
        with every pass exact). The batch is coded in parts in lockstep, a part per free core (see Lockstep)."""
        filters = self.model.filters

        def kept(codes: torch.Tensor, windows: torch.Tensor, gram: np.ndarray | None) -> torch.Tensor | None:
            if self.spike_reading is None:
                return None
            return codes_of_kept_spikes(codes, windows, filters, *self.spike_reading, gram=gram)

        if not uses_working_set(self.config.solver, self.device):
            codes = self.model.encode(batch, n_debias_iterations=0)
            return codes, kept(codes, batch, None)
        undebiased = CRsAE(filters.detach(), self.model.lambdas, self.model.n_iterations,
                           n_debias_iterations=0, channel_mask=self.model.channel_mask)
        encoder = WorkingSetEncoder(undebiased, settled_fraction=ROUGH_SETTLED_FRACTION)

        parts = list(torch.tensor_split(batch, min(adapt_threads(), len(batch))))
        together = Lockstep(len(parts)) if len(parts) > 1 else None

        def code_part(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            try:
                codes = torch.from_numpy(encoder.encode_with_correlation(windows.numpy(), together)[0])
            except BaseException:
                if together is not None:
                    together.abort()  # the other parts wait for this one's counts: let them go
                raise
            return codes, kept(codes, windows, encoder.gram)

        if together is None:
            coded = [code_part(batch)]
        else:
            with single_thread(), ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="sparsort-train") as pool:
                coded = list(pool.map(code_part, parts))  # a thread per part: all of them encode at once
        codes = torch.cat([part[0] for part in coded])
        return codes, (None if self.spike_reading is None else torch.cat([part[1] for part in coded]))

    @torch.no_grad()
    def heldout_loss(self) -> float:
        """Reconstruction MSE on the pool's fixed held-out windows: a curve that moves only when the model learns."""
        batch = self.pool.heldout_batch(self.device)
        with self.model_lock:
            if uses_working_set(self.config.solver, self.device):
                codes = torch.from_numpy(WorkingSetEncoder(self.model).encode(batch.numpy()))
            else:
                codes = self.model.encode(batch)
            return float(torch.mean((batch - self.model.decode(codes)) ** 2))

    def reference_error(self) -> float | None:
        """Mean dictionary error to `reference_shapes`, or None without them."""
        if self.reference_shapes is None:
            return None
        return dictionary_error(self.reference_shapes, self.filters()).mean_error

    def _measure(self) -> None:
        """Held-out loss and dictionary error now, kept in the histories (once per step)."""
        if self.heldout_history and self.heldout_history[-1][0] == self.step:
            return
        began = time.perf_counter()
        self.heldout_history.append((self.step, self.heldout_loss()))
        reference = self.reference_error()
        if reference is not None:
            self.dictionary_error_history.append((self.step, reference))
        self.measuring_s += time.perf_counter() - began

    def _latest_measures(self) -> tuple[float, float | None]:
        heldout = self.heldout_history[-1][1] if self.heldout_history else math.nan
        reference = self.dictionary_error_history[-1][1] if self.dictionary_error_history else None
        return heldout, reference

    def run(self, callback: Callable[[TrainingSnapshot], None] | None = None, snapshot_interval_s: float = 0.1,
            until_step: int | None = None) -> None:
        """Train until `n_steps` (or `until_step`, if sooner) or `stop()`; blocks while paused."""
        started = time.perf_counter()
        paused_for = 0.0
        last_snapshot = -math.inf
        previous_filters = self.model.filters.detach().clone()
        change_since_snapshot = 0.0
        last_step = self.n_steps if until_step is None else min(int(until_step), self.n_steps)
        first_step = self.step
        last_measure = time.perf_counter()
        if callback is not None and self.step == 0:
            self._measure()  # where the curves start
        while self.step < last_step and not self.is_stopped:
            if not self._resume_event.is_set():
                pause_started = time.perf_counter()
                self.waiting_in_pause.set()
                self._resume_event.wait()
                self.waiting_in_pause.clear()
                paused_for += time.perf_counter() - pause_started
                continue
            loss = self.train_step()
            self.step += 1
            if self._shapes_settled():
                self.settled_at = self.n_steps = last_step = self.step  # done: the last snapshot follows
            current = self.model.filters.detach()
            change = float((current - previous_filters).norm())
            previous_filters = current.clone()
            change_since_snapshot += change
            self.loss_history.append(loss)
            self.filter_change_history.append(change)
            now = time.perf_counter()
            if callback is not None and (now - last_snapshot >= snapshot_interval_s or self.step == last_step):
                elapsed = now - started - paused_for
                eta = elapsed / (self.step - first_step) * (self.n_steps - self.step)
                if now - last_measure >= self.measure_interval_s or self.step == last_step:
                    self._measure()
                    last_measure = now
                callback(TrainingSnapshot(self.step, self.n_steps, loss, self.filters(), change_since_snapshot,
                                          elapsed, eta, *self._latest_measures()))
                change_since_snapshot = 0.0
                last_snapshot = now

    def filters(self) -> np.ndarray:
        """(n_filters, n_taps, n_channels) float32 copy of the current dictionary."""
        with self.model_lock:
            return self.model.filters_numpy()

    # ---- persistence (engine/io/checkpoints.py) -----------------------------
    def state_dict(self) -> dict:
        return {
            # None when no optimizer was made (the least-squares rule never makes one): making one here to save
            # its empty state imported torch._dynamo, 1.9 s at the end of every `sparsort sort`.
            "optimizer": self._optimizer.state_dict() if self._optimizer is not None else None,
            "step": self.step,
            "n_steps": self.n_steps,
            "loss_history": list(self.loss_history),
            "filter_change_history": list(self.filter_change_history),
            "heldout_history": list(self.heldout_history),
            "dictionary_error_history": list(self.dictionary_error_history),
        }

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("optimizer")
        if saved is not None and saved.get("state"):  # Adam's moments, from a back-propagated run
            self.optimizer.load_state_dict(saved)
        self.step = int(state["step"])
        self.n_steps = int(state["n_steps"])
        self.loss_history = list(state["loss_history"])
        self.filter_change_history = list(state["filter_change_history"])
        # Checkpoints written before these curves existed have none.
        self.heldout_history = [tuple(item) for item in state.get("heldout_history", [])]
        self.dictionary_error_history = [tuple(item) for item in state.get("dictionary_error_history", [])]
