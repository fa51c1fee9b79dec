"""The sort, stage by stage.

    run_sort(recording, config)
      prepare():  preprocessing -> training pool -> initial dictionary
                  -> pruning -> splitting mixed filters -> pruning
      train():    training (engine/pipeline/training.py)
      sort():     final pruning -> inference (with explain-away and refinement
                  per chunk) -> coincidences -> amplitude splits and templates
                  -> merging units that are one neuron

Each stage has one home under engine/pipeline/ (the module of the same name);
`SortPipeline` holds what they hand each other, so that the app can run the
three phases from a worker thread, show the live model between them, and stop
any of them. Each stage's time and peak memory are kept in `stage_log`
(`sparsort sort --verbose` prints them).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from engine.cpu import adapt_threads
from engine.evaluation.simulator import GroundTruth
from engine.io.recording import Recording, RecordingError, check_min_duration
from engine.model.crsae import CRsAE, device_description, select_device, universal_threshold
from engine.model.similarity import shift_invariant_similarity
from engine.model.working_set import ROUGH_SETTLED_FRACTION
from engine.pipeline.coincidences import (coded_with_another, coincidence_drops, find_coincidences, group_medians,
                                         join_split_shares, resolve_coincidences)
from engine.pipeline.inference import SpikeEvents, SpikeSettings, infer_spikes
from engine.io.geometry import channel_neighbourhoods
from engine.pipeline.co_firing import combine_co_firing, describe_co_firing, find_co_firing
from engine.pipeline.bad_channels import with_flat_channels_filled
from engine.pipeline.faint_units import faint_candidates, found_filters_kept, searched_batches
from engine.pipeline.footprint import describe_footprints, widen_footprints
from engine.pipeline.initialization import initial_filters, initial_filters_by_neighbourhood, split_mixed_filters
from engine.pipeline.hollow_events import drop_hollow_events
from engine.pipeline.overlapped_spikes import restore_overlapped_spikes
from engine.pipeline.locked_events import drop_locked_events
from engine.pipeline.look_alike_units import reclassify_look_alikes
from engine.pipeline.motion import check_motion_correction, motion_corrected
from engine.pipeline.params import (
    CO_FIRING_MS, COINCIDENCE_MS, DEAD_TIME_MS, DUPLICATE_SIMILARITY, FAINT_LAMBDA_FRACTION, FAINT_MIN_CHANNELS,
    FILTERS_PER_CHANNEL, FINAL_DUPLICATE_SIMILARITY,
    LOCAL_INIT_MIN_CHANNELS, MAX_FILTERS, MAX_SIZE_RATIO, MIN_AMPLITUDE_SPIKES, MIN_SPLIT_SPIKES, MIN_USE_FRACTION,
    OUTLIER_AMPLITUDE_FACTOR, OWN_SPIKE_LAMBDAS, POOL_BATCH_CHUNKS, RANDOM_FILTERS_PER_CHANNEL, RANDOM_START_STEPS,
    SAME_SPIKE_MS, SHADOW_WINDOW_MS,
)
from engine.pipeline.pool import TrainingPool, build_training_pool
from engine.pipeline.preprocessing import PreprocessedRecording
from engine.pipeline.pruning import PruneDecision, prune
from engine.pipeline.reconstruction import WindowReconstruction, reconstruct_window
from engine.pipeline.refinement import AmplitudePrior, channel_sharing
from engine.pipeline.residual_units import CONTROL_OFFSETS_MS as RESIDUAL_CONTROL_OFFSETS_MS, label_residual_units
from engine.pipeline.small_events import separate_small_events
from engine.pipeline.sorting import Sorting, peak_taps
from engine.pipeline.spike_reassignment import reassign_spikes
from engine.pipeline.stages import SortStopped, StageLog
from engine.pipeline.templates import assemble_sorting
from engine.pipeline.training import Trainer, TrainingConfig, TrainingSnapshot
from engine.pipeline.unit_merge import SnippetMeans, merge_cleaned_units, merge_units, waveform_match
from engine.pipeline.waveform_split import split_by_waveform
from engine.pipeline.whitening import WhitenedRecording, estimate_whitening, unwhitened_sorting, whitens

Progress = Callable[[float], None]
ShouldStop = Callable[[], bool]


def _events_of_kept(events: SpikeEvents, keep: np.ndarray, n_filters: int) -> SpikeEvents:
    """`events` of a dictionary of `n_filters` with only the spikes of the filters kept, renumbered as
    the kept filters are (in the order of `keep`)."""
    new_index = np.full(n_filters, -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    mine = new_index[events.filters] >= 0
    return SpikeEvents(events.times[mine], new_index[events.filters[mine]].astype(events.filters.dtype),
                       events.amplitudes[mine])


def _part_of(progress: Progress | None, start: float, width: float) -> Progress | None:
    """`progress` for one part of a longer task: its fractions 0..1 reported as start..start + width."""
    if progress is None:
        return None
    return lambda fraction: progress(start + width * fraction)


def run_sort(
    recording: Recording,
    config: TrainingConfig | None = None,
    on_snapshot: Callable[[TrainingSnapshot], None] | None = None,
    sort_progress: Progress | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> tuple[Sorting, "SortPipeline"]:
    """Learn the dictionary of `recording` and sort it; returns the sorting and the pipeline (model, costs)."""
    pipeline = SortPipeline(recording, config, on_stage=on_stage)
    pipeline.prepare()
    pipeline.train(on_snapshot)
    return pipeline.sort(progress=sort_progress), pipeline


class SortPipeline:
    """One sort: the recording, the model and what each stage handed on."""

    def __init__(
        self,
        recording: Recording,
        config: TrainingConfig | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> None:
        """Cheap: checks the parameters against the recording; the work starts in `prepare()`."""
        self.config = config or TrainingConfig()
        self.config.validate()
        check_motion_correction(recording, self.config.motion)  # before any long work
        check_min_duration(recording, self.config.taps_for(recording.sampling_rate), "one filter")
        self.stage_log = StageLog(on_stage=on_stage)
        with self.stage_log.stage("flat channels"):
            # A channel that records nothing would be scaled up to noise level by everything after: filled
            # from its neighbours instead (engine/pipeline/bad_channels.py).
            recording, self.flat_channels = with_flat_channels_filled(recording, self.config.seed)
        if self.config.motion != "off":
            with self.stage_log.stage("motion correction"):
                # The drift estimated from the spikes' positions, and undone in every later read
                # (engine/pipeline/motion.py): a drifting neuron is one shape again.
                base = recording if isinstance(recording, PreprocessedRecording) else PreprocessedRecording(recording)
                recording = motion_corrected(base, self.config.motion, n_jobs=adapt_threads())
        with self.stage_log.stage("preprocessing"):
            # What the person sees and the outputs' µV: band-passed (and common-referenced on a probe).
            self.preprocessed = (recording if isinstance(recording, PreprocessedRecording)
                                 else PreprocessedRecording(recording))
            # What the sort's stages read: the same, spatially whitened on a probe (engine/pipeline/whitening.py).
            self.recording: Recording = self.preprocessed
            if whitens(self.preprocessed.n_channels, self.preprocessed.duration, self.config.whiten):
                self.recording = WhitenedRecording(self.preprocessed, *estimate_whitening(self.preprocessed))
            self.noise_levels = np.maximum(np.asarray(self.recording.noise_levels, dtype=np.float32), 1e-6)
        self.sampling_rate = float(self.recording.sampling_rate)
        # (n_channels, n_channels) bool: each filter lives on the neighbourhood of its main channel.
        self.neighbourhoods = channel_neighbourhoods(self.recording.channel_positions, self.config.radius_um)
        self.n_taps = self.config.taps_for(self.sampling_rate)
        self.window = min(max(self.config.window_for(self.sampling_rate), 2 * self.n_taps), self.recording.n_samples)
        self.device = select_device(self.config.device)
        self.device_name = device_description(self.device)
        self.lambda_ = self.config.lambda_scale * universal_threshold(self.recording.n_channels, self.window)
        torch.manual_seed(self.config.seed)
        # Guards the model: live reconstruction and sorting may read it while training steps.
        self.model_lock = threading.RLock()
        self.model: CRsAE | None = None
        self.pool: TrainingPool | None = None
        self.trainer: Trainer | None = None
        self.initial_filters: np.ndarray | None = None  # (n_kept, n_channels, n_taps): where training started
        self.initial_pruning: PruneDecision | None = None
        self.final_pruning: PruneDecision | None = None
        self.footprints = ""  # which filters grew beyond their neighbourhood, for reports
        self.faint_units = ""  # what the search for faint neurons added, for reports
        self._pool_events: tuple[bytes, SpikeEvents] | None = None  # (dictionary key, events)
        self._neurons_found = False  # pruned and split to one filter per neuron (after learning, from noise)
        # (n_filters,) each kept filter's median spike amplitude on the pool at the last pruning (inf
        # for a filter with too few spikes to tell): training leaves out spikes far above it.
        self._usual_amplitudes: np.ndarray | None = None
        # (n_units, n_taps, n_channels) true shapes, when the recording is a simulation with its ground
        # truth beside it (the demo is one): training then reports its dictionary error as it learns.
        truth = GroundTruth.beside(recording)
        # (Whitened as the sort sees the recording, so that the error compares like with like.)
        self.reference_shapes: np.ndarray | None = (
            self._as_sorted(truth.bandpassed_waveforms()) if truth is not None else None)

    @property
    def dead_time(self) -> int:
        return self._samples(DEAD_TIME_MS)

    def _spike_reading(self) -> tuple[int, float, np.ndarray | None]:
        """How training reads spikes from the codes once the filters are spike shapes (Trainer.spike_reading):
        the dead time, λ, and the largest amplitude each filter's spikes may have (none when the
        dictionary came without a pruning, from a checkpoint)."""
        usual = self._usual_amplitudes
        largest = None if usual is None or len(usual) != self.model.n_filters else OUTLIER_AMPLITUDE_FACTOR * usual
        return self.dead_time, self.lambda_, largest

    @property
    def is_prepared(self) -> bool:
        return self.trainer is not None

    def _samples(self, milliseconds: float) -> int:
        """A duration in whole samples, at least one."""
        return max(int(round(milliseconds * 1e-3 * self.sampling_rate)), 1)

    # ---- phase 1: a dictionary to train ------------------------------------------
    def prepare(
        self,
        progress: Callable[[str, float], None] | None = None,
        should_stop: ShouldStop | None = None,
        initial_dictionary: np.ndarray | None = None,
        initial_lambdas: np.ndarray | None = None,
    ) -> None:
        """Build the training pool and the starting dictionary (from the data, or `initial_dictionary`
        (n_filters, n_channels, n_taps), as a checkpoint gives it, with `initial_lambdas` (n_filters,) its
        filters' λ: a faint neuron's filter has a lower one); raises SortStopped on `should_stop()`.

        progress(stage, fraction) follows the stages that can take seconds.
        """
        report = progress or (lambda stage, fraction: None)
        self.stage_log.should_stop = should_stop
        with self.stage_log.stage("training pool"):
            self.pool = build_training_pool(self.recording, self.noise_levels, self.window,
                                            progress=lambda f: report("training pool", f), should_stop=should_stop)
        if initial_dictionary is not None or self.config.init == "random":
            with self.stage_log.stage("initial dictionary"):
                filters = self.random_dictionary() if initial_dictionary is None else initial_dictionary
                filters = np.asarray(filters, dtype=np.float32)
                if initial_lambdas is not None and np.shape(initial_lambdas) != (len(filters),):
                    raise ValueError(f"{np.size(initial_lambdas)} lambdas for a dictionary of {len(filters)} filters")
                # A saved dictionary keeps the channels its filters had grown to (engine/pipeline/footprint.py).
                self._set_model(filters, channel_mask=None if initial_dictionary is None else
                                self._neighbourhoods_of(filters) | np.any(filters != 0, axis=2),
                                lambdas=None if initial_lambdas is None else np.asarray(initial_lambdas, np.float32))
            n = self.model.n_filters
            self.initial_pruning = PruneDecision(np.arange(n), {}, [], np.zeros(n, dtype=np.int64))
            # Noise has no neurons to prune yet: train() prunes once the filters have learned shapes.
            self._neurons_found = initial_dictionary is not None
        else:
            with self.stage_log.stage("initial dictionary"):
                self._set_model(self._initial_dictionary())
            self._find_the_neurons(report, should_stop)
        self.final_pruning = self.initial_pruning
        self.initial_filters = self.model.filters.detach().cpu().numpy().copy()
        self.trainer = Trainer(self.model, self.pool, self.config, model_lock=self.model_lock,
                               reference_shapes=self.reference_shapes)
        if self._neurons_found:
            self.trainer.spike_reading = self._spike_reading()

    def _find_the_neurons(self, report=None, should_stop: ShouldStop | None = None) -> None:
        """Prune, split mixed filters, prune again: the dictionary keeps one filter per neuron found."""
        # Train only filters that code real spikes: idle or duplicate filters
        # were measured to pull the good ones off the true shapes.
        with self.stage_log.stage("pruning"):
            self.initial_pruning = self._prune(report, should_stop)
        with self.stage_log.stage("splitting mixed filters"):
            split, regrouped = self._split_mixed_filters(report, should_stop)
        events = regrouped
        if split:
            before = self.initial_pruning.describe()
            # On the pool's spikes as the split regrouped them, not coded again: the split's
            # clusters are the halves' spikes (at 32 channels the coding took as long as all of training).
            with self.stage_log.stage("pruning after splits"):
                self.initial_pruning = self._prune(report, should_stop, events=regrouped)
            self.initial_pruning.note = f"{before}; split {', '.join(map(str, split))} in two; then "
            events = _events_of_kept(regrouped, self.initial_pruning.keep, len(self.initial_pruning.counts))
        with self.stage_log.stage("footprints"):
            self.footprints = self._widen_footprints(events)
        self._neurons_found = True

    def _widen_footprints(self, events: SpikeEvents) -> str:
        """Give each filter the channels beyond its neighbourhood where its neuron is still big
        (engine/pipeline/footprint.py), judged on `events`, the pool's spikes of the current dictionary."""
        with self.model_lock:
            if len(events) == 0 or self.recording.n_channels == 1:
                return describe_footprints([], None, None)
            filters = self.model.filters.detach().cpu().numpy()
            before = self.model.channel_mask.detach().cpu().numpy() > 0
            code_index = events.times - peak_taps(self.model.filters_numpy())[events.filters]
            widened_filters, mask, widened = widen_footprints(
                self.pool.prune_segment(), filters, before, code_index, events.filters, events.amplitudes,
                self.recording.channel_positions, self.config.radius_um, seed=self.config.seed)
            if widened:
                self._set_model(widened_filters, channel_mask=mask)
            return describe_footprints(widened, before, mask)

    def random_dictionary(self) -> np.ndarray:
        """(n_filters, n_channels, n_taps) unit-norm noise, each filter on the neighbourhood of its own channel,
        the channels taken in turn so that every part of the probe gets filters."""
        n_channels = self.recording.n_channels
        n_filters = self.config.n_filters or min(max(RANDOM_FILTERS_PER_CHANNEL * n_channels, 4), MAX_FILTERS)
        rng = np.random.default_rng(self.config.seed)
        filters = rng.standard_normal((n_filters, n_channels, self.n_taps)).astype(np.float32)
        main_channels = np.arange(n_filters) % n_channels
        filters *= self.neighbourhoods[main_channels][:, :, None]
        # The main channel carries the most, so the model puts the filter on the same neighbourhood.
        filters[np.arange(n_filters), main_channels] *= 2.0
        return filters / np.linalg.norm(filters, axis=(1, 2), keepdims=True)

    def _initial_dictionary(self) -> np.ndarray:
        n_channels = self.recording.n_channels
        if n_channels >= LOCAL_INIT_MIN_CHANNELS and self.config.n_filters is None:
            return initial_filters_by_neighbourhood(self.pool.data, self.neighbourhoods, self.n_taps,
                                                    FILTERS_PER_CHANNEL, MAX_FILTERS, seed=self.config.seed)
        return initial_filters(self.pool.data, self.config.filters_for(n_channels), self.n_taps, seed=self.config.seed)

    # ---- phase 2: training -------------------------------------------------------
    def train(self, callback: Callable[[TrainingSnapshot], None] | None = None, snapshot_interval_s: float = 0.1) -> None:
        self._require_prepared()
        if callback is not None and isinstance(self.recording, WhitenedRecording):
            shown_to = callback  # the views draw the filters as recorded (`shown`)

            def callback(snapshot: TrainingSnapshot) -> None:
                shown_to(replace(snapshot, filters=self.shown(snapshot.filters)))
        if not self._neurons_found:
            # From noise: learn shapes first, then keep one filter per neuron, then go on learning.
            with self.stage_log.stage("training from noise"):
                self.trainer.run(callback, snapshot_interval_s, until_step=self._steps_before_pruning())
            if self.trainer.is_stopped:
                return
            self._find_the_neurons()
            self.trainer.spike_reading = self._spike_reading()
            self.final_pruning = self.initial_pruning
            self.initial_filters = self.model.filters.detach().cpu().numpy().copy()
        with self.stage_log.stage("training"):
            self.trainer.run(callback, snapshot_interval_s)

    def _steps_before_pruning(self) -> int:
        return max(min(RANDOM_START_STEPS, self.trainer.n_steps // 2), 1)

    # ---- phase 3: every spike of the recording ------------------------------------
    def sort(
        self,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
        recording: Recording | None = None,
        infer: Callable[..., SpikeEvents] | None = None,
    ) -> Sorting:
        """Prune the learned dictionary, then find every spike of the recording.

        `recording`: another recording of the same probe to sort with this
        dictionary (default: the one trained on). `infer`: what finds the
        spikes chunk by chunk, called as `infer_spikes` (the default) is, e.g.
        engine.pipeline.distributed.DaskInference to run the chunks on a
        cluster. Raises SortStopped if `should_stop()` turns true midway.
        """
        self._require_prepared()
        self.stage_log.should_stop = should_stop
        with self.stage_log.stage("final pruning"):
            self.final_pruning = self._prune(duplicate_similarity=FINAL_DUPLICATE_SIMILARITY, join_co_firing=True)
        target, noise_levels = self._sorting_target(recording)
        # Faint neurons are looked for in the recording the dictionary learned (another one is sorted as learned).
        faint_share = self._faint_share() if target is self.recording else 0.0
        # The drift this recording was corrected for, which can split a neuron by size (engine/pipeline/drift_phase.py).
        motion = getattr(self.preprocessed, "motion", None) if target is self.recording else None
        known = None  # spikes the faint search coded with the sort's own settings, while they stay valid
        if faint_share > 0:
            with self.stage_log.stage("faint units"):
                self.faint_units, known = self._add_faint_filters(_part_of(progress, 0.0, faint_share), should_stop)
        with self.model_lock:
            model = self.model
            prior = self._amplitude_prior()
        lambdas = model.lambdas.detach().cpu().numpy()  # (n_filters,) each filter's bar for its spikes
        with self.stage_log.stage("inference"):
            # `known` is used only by this process's inference, and only if its settings are the search's
            # (infer_spikes checks): a dictionary that gained a faint filter codes every batch again.
            extra = {"known": known} if infer is None and known is not None else {}
            events = (infer or infer_spikes)(
                model, target, noise_levels, self.dead_time, lambdas,
                progress=_part_of(progress, faint_share, 1.0 - faint_share), should_stop=should_stop, prior=prior,
                solver=self.config.solver, **extra,
            )
        if should_stop is not None and should_stop():
            raise SortStopped("sorting was stopped before the end of the recording")
        with self.stage_log.stage("coincidences"):
            mask = model.channel_mask.detach().cpu().numpy()
            sharing = (mask @ mask.T) > 0
            # Which spikes the lasso coded as two filters' sum, read before the weaker of each pair goes.
            shared = coded_with_another(events, self._samples(CO_FIRING_MS), sharing)
            coincidences = find_coincidences(events, self._samples(COINCIDENCE_MS), sharing)
            short, residue = coincidence_drops(events, self._samples(COINCIDENCE_MS), sharing=sharing,
                                               same_spike=self._samples(SAME_SPIKE_MS), coincidences=coincidences,
                                               own_spike_bar=OWN_SPIKE_LAMBDAS * lambdas)
            # One spike the lasso split between two look-alike filters is one event again.
            amplitudes, joined = join_split_shares(events, coincidences, self._samples(SAME_SPIKE_MS),
                                                   shift_invariant_similarity(model.filters_numpy()))
            keep = ~(short | residue | joined)
            # Dropped beside a bigger spike, not joined to it: asked of the recording at the end (overlapped spikes).
            overlapped = (short | residue) & ~joined
            overlapped = SpikeEvents(events.times[overlapped], events.filters[overlapped], events.amplitudes[overlapped])
            events, shared = SpikeEvents(events.times[keep], events.filters[keep], amplitudes[keep]), shared[keep]
        with self.stage_log.stage("templates"):
            sorting = assemble_sorting(
                events, model.filters_numpy(), noise_levels, self.sampling_rate, target.channel_positions,
                self.lambda_, (self._initial_note(), self._final_note()), shared=shared,
                one_waveform=lambda k, lower, upper, largest_size_ratio: self._one_waveform(
                    model, target, noise_levels, events, k, lower, upper, largest_size_ratio),
                dead_time=self.dead_time,
            )
        with self.stage_log.stage("splitting units by waveform"):
            # Two neurons of one shape and size on one filter: their recorded spikes still differ
            # (engine/pipeline/waveform_split.py).
            sorting = split_by_waveform(sorting, target, noise_levels, mask > 0, self.dead_time)
        with self.stage_log.stage("merging units"):
            # One neuron coded by two filters is two units until its spikes' refractoriness and the
            # recording's waveform at them say it is one (engine/pipeline/unit_merge.py).
            sorting = merge_units(sorting, target, noise_levels, model.filters_numpy(), mask > 0, self.dead_time,
                                  motion=motion)
        with self.stage_log.stage("small events"):
            # Residuals of neighbours' spikes that a unit's filter coded beside them, far smaller than the
            # unit's own spikes (engine/pipeline/small_events.py).
            sorting = separate_small_events(sorting)
        with self.stage_log.stage("residual units"):
            # Units of filters that learned no neuron, only what bigger neighbours' spikes leave: labelled
            # noise, not dropped (engine/pipeline/residual_units.py).
            sorting, note = label_residual_units(sorting, mask > 0, self._samples(SHADOW_WINDOW_MS),
                                                 tuple(self._samples(ms) for ms in RESIDUAL_CONTROL_OFFSETS_MS))
            if sorting.provenance is not None:
                sorting = replace(sorting, provenance=replace(sorting.provenance, residual_units=note))
        with self.stage_log.stage("reassigning spikes"):
            # Spikes the lasso gave one unit's filter that a look-alike unit's recorded waveform explains
            # better (engine/pipeline/spike_reassignment.py).
            sorting = reassign_spikes(sorting, target, noise_levels, model.filters_numpy(), mask > 0, self.dead_time)
        with self.stage_log.stage("locked events"):
            # A bigger neuron's spikes that a smaller unit's filter also coded, where the bigger one's filter does
            # not reach, always at one lag to them (engine/pipeline/locked_events.py).
            sorting = drop_locked_events(sorting, target, noise_levels, mask > 0)
        with self.stage_log.stage("hollow events"):
            # The same tails at a lag that wanders: events whose recorded window, with the other events taken
            # out, holds none of their unit's waveform (engine/pipeline/hollow_events.py).
            sorting = drop_hollow_events(sorting, target, noise_levels, mask > 0)
        with self.stage_log.stage("overlapped spikes"):
            # A small neuron's spikes coded short beside bigger ones and dropped as their residue, given back
            # where the recording, with the other events taken out, holds them (engine/pipeline/overlapped_spikes.py).
            sorting = restore_overlapped_spikes(sorting, target, noise_levels, mask > 0, overlapped, self.dead_time)
        with self.stage_log.stage("merging cleaned units"):
            # A neuron's two units whose merge the copies of neighbours' spikes in one of them blocked, asked
            # again now that those are gone (engine/pipeline/unit_merge.py).
            sorting = merge_cleaned_units(sorting, target, noise_levels, model.filters_numpy(), mask > 0, self.dead_time,
                                          motion=motion)
        with self.stage_log.stage("telling look-alikes apart"):
            # Look-alike units' spikes classified again by a discriminant of their recorded waveforms, where it
            # finds the units two neurons (engine/pipeline/look_alike_units.py).
            sorting = reclassify_look_alikes(sorting, target, noise_levels, model.filters_numpy(), mask > 0,
                                             self.dead_time)
        # The stages above compare templates with the recording as they read it; the person gets them in its µV.
        return unwhitened_sorting(sorting, target) if isinstance(target, WhitenedRecording) else sorting

    def _faint_share(self) -> float:
        """The part of the sort's coding the search for faint neurons takes (0 where it does not run):
        its budget of channels × samples against the whole recording's."""
        if self.recording.n_channels < FAINT_MIN_CHANNELS:
            return 0.0
        batches, indices = searched_batches(self.recording, self.n_taps)
        searched = sum(b - a for index in indices for a, b in batches[index])
        return searched / (searched + self.recording.n_samples)

    def _amplitude_prior(self) -> AmplitudePrior:
        """Each filter's usual spike amplitude in the pool, with which inference relabels spikes."""
        pool_events = self._events_of_pool()  # cached: the pruning just coded the pool with this dictionary
        return AmplitudePrior.from_events(pool_events.amplitudes, pool_events.filters, self.model.n_filters)

    def _add_faint_filters(self, progress: Progress | None = None, should_stop: ShouldStop | None = None,
                           ) -> tuple[str, tuple[SpikeSettings, dict[int, list[SpikeEvents]]] | None]:
        """Give neurons too faint for the first dictionary filters of their own (engine/pipeline/faint_units.py):
        each candidate is kept when it then codes at least FAINT_MIN_POOL_SPIKES of the training pool and is
        neither idle, a duplicate nor a shadow by pruning's rules; an old filter a kept one leaves idle goes
        (faint_units.found_filters_kept). Returns what it did, for the sort's notes,
        and the spikes of the batches it searched (with their settings) when the dictionary stayed as it was."""
        with self.model_lock:
            n_before = self.model.n_filters
            search = faint_candidates(self.recording, self.noise_levels, self.model, self._lambdas(), self.dead_time,
                                      self.neighbourhoods, solver=self.config.solver, prior=self._amplitude_prior(),
                                      progress=progress, should_stop=should_stop)
            candidates = search.candidates
            known = (search.settings, search.coded)
            if len(candidates) == 0:
                return "no faint unit found", known
            mask = np.concatenate([self.model.channel_mask.detach().cpu().numpy() > 0,
                                   self._neighbourhoods_of(candidates)])
            # A faint neuron's spikes sit near the bar: its filter gets a lower one (FAINT_LAMBDA_FRACTION).
            lambdas = np.concatenate([self._lambdas(), np.full(len(candidates), FAINT_LAMBDA_FRACTION * self.lambda_)])
            self._set_model(np.concatenate([self.model.filters.detach().cpu().numpy(), candidates]), channel_mask=mask,
                            lambdas=lambdas)
            filters = self.model.filters.detach().cpu().numpy()  # as the model holds them: on their channels, unit norm
            events = self._events_of_pool(should_stop=should_stop)
            decision = prune(self.model.filters_numpy(), events, FINAL_DUPLICATE_SIMILARITY,
                             shadow_window=self._samples(SHADOW_WINDOW_MS))
            counts = decision.counts  # each filter's pool events
            # A found filter that took an old filter's neuron replaces it (faint_units.found_filters_kept).
            kept, replaced = found_filters_kept(decision, n_before)
            old = np.setdiff1d(np.arange(n_before), replaced)
            keep = np.concatenate([old, np.asarray(kept, dtype=np.int64)])
            if len(keep) < self.model.n_filters:
                self._set_model(filters[keep], channel_mask=mask[keep], lambdas=lambdas[keep])
            if self.initial_filters is not None and len(self.initial_filters) == n_before:
                # A found filter starts where it was found, so views can still pair each filter with its start.
                found = self.model.filters.detach().cpu().numpy()[len(old):]
                self.initial_filters = np.concatenate([self.initial_filters[old], found])
            # A dictionary back as it was (no candidate kept) still codes the searched batches as they were.
            return (f"faint units: {len(candidates)} candidates, kept {len(kept)} "
                    f"(pool spikes {', '.join(str(int(counts[k])) for k in kept)})"
                    + (f"; idle beside them, dropped filter {', '.join(str(k) for k in replaced)}" if replaced else "")), known

    def _one_waveform(self, model: CRsAE, target: Recording, noise_levels: np.ndarray, events: SpikeEvents,
                      k: int, lower: tuple[float, float], upper: tuple[float, float],
                      largest_size_ratio: float = MAX_SIZE_RATIO) -> bool:
        """Whether the recording at filter k's spikes with code amplitudes in `lower` and in `upper`
        ((low, high) each) holds one neuron: the two groups' mean snippets on k's channels, where its
        code puts them, at least DUPLICATE_SIMILARITY alike and of one size (within `largest_size_ratio`). The
        data, not the codes: a spike coded with a companion filter still holds its whole neuron, at
        its whole size. Without the size, two neurons of one shape (what the amplitude split is for)
        were joined back: 32 channels, recording seed 0, sorter seed 1: 0.867 -> 0.809. The means'
        noise is taken out of their norms (each one's squared norm less its spikes' spread over their
        count), so that a hundred noisy spikes of one neuron do not look like two shapes. The means
        are unit_merge's (SnippetMeans: up to MERGE_SPIKES spikes a group, spread over the recording,
        band-passed together; the pool of a 384-channel probe held 4 of one group); fewer than
        MIN_SPLIT_SPIKES in a group is too few to tell: False."""
        filters = model.filters_numpy()
        peak = int(peak_taps(filters)[k])
        channels = np.flatnonzero(model.channel_mask[k].detach().cpu().numpy() > 0)
        reader = SnippetMeans(target, noise_levels, length=filters.shape[1], before=peak)
        mine = events.filters == k
        times, amplitudes = events.times[mine], events.amplitudes[mine]
        inside = (times >= peak) & (times - peak + filters.shape[1] <= target.n_samples)
        means = []
        for low, high in (lower, upper):
            chosen = times[inside & (amplitudes >= low) & (amplitudes <= high)]
            if len(chosen) < MIN_SPLIT_SPIKES:
                return False
            means.append(reader.mean(chosen, channels))
        similarity, size_ratio = waveform_match(means[0], means[1], max_shift=0)
        return similarity >= DUPLICATE_SIMILARITY and size_ratio <= largest_size_ratio

    def _final_note(self) -> str:
        """What the pruning after training decided, and which faint neurons got filters after it."""
        note = self.final_pruning.describe()
        return f"{note}; {self.faint_units}" if self.faint_units else note

    def _initial_note(self) -> str:
        """What the pruning before training decided, and which filters grew beyond their neighbourhood."""
        note = self.initial_pruning.describe()
        return f"{note}; {self.footprints}" if self.footprints else note

    def recording_notes(self) -> list[str]:
        """What the sort changed in the recording before reading it (flat channels filled, drift undone)."""
        notes = []
        if len(self.flat_channels.channels):
            notes.append(self.flat_channels.describe())
        if self.config.motion != "off":
            notes.append(self.preprocessed.description)  # (a MotionCorrectedRecording's)
        return notes

    def _reads(self) -> list[Recording]:
        """What the sort reads and every recording under it, down to the file's (each `parent` in turn)."""
        chain: list[Recording] = [self.recording]
        while getattr(chain[-1], "parent", None) is not None:
            chain.append(chain[-1].parent)
        return chain

    def _sorting_target(self, recording: Recording | None) -> tuple[Recording, np.ndarray]:
        if recording is None or any(recording is known for known in self._reads()):
            return self.recording, self.noise_levels
        if recording.n_channels == self.recording.n_channels:
            recording, _ = with_flat_channels_filled(recording, self.config.seed)  # its own flat channels
        target = recording if isinstance(recording, PreprocessedRecording) else PreprocessedRecording(recording)
        if target.n_channels != self.recording.n_channels:
            raise RecordingError(
                f"the dictionary was learned on {self.recording.n_channels} channels but this recording has "
                f"{target.n_channels}: sort recordings of the same probe, or train on this one"
            )
        if isinstance(self.recording, WhitenedRecording):
            # The dictionary's space: the same probe's recording seen through the same matrix.
            target = WhitenedRecording(target, self.recording.whitening, self.recording.unwhitening)
        return target, np.maximum(np.asarray(target.noise_levels, dtype=np.float32), 1e-6)

    def _as_sorted(self, shapes: np.ndarray) -> np.ndarray:
        """`shapes` (…, n_channels) in the preprocessed recording's µV, turned into what the sort's stages read."""
        return self.recording.whiten(shapes) if isinstance(self.recording, WhitenedRecording) else shapes

    def _as_recorded(self, shapes: np.ndarray) -> np.ndarray:
        """`shapes` (…, n_channels) as the sort's stages read them, turned into the preprocessed recording's µV."""
        return self.recording.unwhiten(shapes) if isinstance(self.recording, WhitenedRecording) else shapes

    # ---- the model between stages ---------------------------------------------------
    def _set_model(self, filters: np.ndarray, channel_mask: np.ndarray | None = None,
                   lambdas: np.ndarray | None = None) -> None:
        """Make `filters` (n_filters, n_channels, n_taps) the dictionary; training goes on with it.

        channel_mask: (n_filters, n_channels) bool, the channels of each filter (default: the
        neighbourhood of its main channel); the filters are zero elsewhere. lambdas: (n_filters,)
        each filter's λ (default: the sort's λ for all; a faint neuron's filter has a lower one)."""
        if channel_mask is None:
            channel_mask = self._neighbourhoods_of(filters)
        lambdas = self.lambda_ if lambdas is None else lambdas
        model = CRsAE(filters, lambdas, self.config.n_iterations, channel_mask=channel_mask).to(self.device)
        with self.model_lock:
            self.model = model
            if self.trainer is not None:
                self.trainer.replace_model(model)

    def _lambdas(self) -> np.ndarray:
        """(n_filters,) the current model's λ of each filter: also the smallest amplitude its spikes may have."""
        return self.model.lambdas.detach().cpu().numpy().astype(np.float32)

    def _neighbourhoods_of(self, filters: np.ndarray) -> np.ndarray:
        """(n_filters, n_channels) bool: the neighbourhood of each filter's main channel."""
        return self.neighbourhoods[np.linalg.norm(filters, axis=2).argmax(axis=1)]

    def _events_of_pool(self, progress: Progress | None = None, should_stop: ShouldStop | None = None) -> SpikeEvents:
        """Spikes of every filter over the pool's prune segment, computed once per dictionary."""
        filters = self.model.filters.detach().cpu().numpy()
        # The filters and their λ: a filter's bar decides its spikes as much as its shape.
        key = hashlib.blake2b(filters.tobytes() + self._lambdas().tobytes(), digest_size=16).digest()
        key += repr(filters.shape).encode()
        if self._pool_events is not None and self._pool_events[0] == key:
            return self._pool_events[1]
        events = infer_spikes(
            self.model, self.pool.prune_recording(), np.ones(self.recording.n_channels, np.float32),
            self.dead_time, self._lambdas(), solver=self.config.solver, progress=progress, should_stop=should_stop,
            settled_fraction=ROUGH_SETTLED_FRACTION,  # which filters are neurons: counts, not exact spikes
            batch_chunks=POOL_BATCH_CHUNKS,  # short: every core gets a batch of a pool of a few seconds
        )
        if should_stop is not None and should_stop():
            raise SortStopped("stopped while coding the training pool")
        # Pruning counts each filter's events here, so the median of all of them is its usual amplitude, every
        # pair may coincide and no bar is set beside bigger events. A filter that codes its unit beside a bigger
        # look-alike has most of its pool events under that one's: read as sorting reads them (lone events'
        # median, pairs sharing a channel), a filter whose unit the sort then found (SpikeInterface's tetrode,
        # 5 min: 0.95) fell under the idle count and went.
        events = resolve_coincidences(events, self._samples(COINCIDENCE_MS), usual_of_lone_events=False,
                                      residual_fraction=0.0)
        self._pool_events = (key, events)
        return events

    def _prune(self, report: Callable[[str, float], None] | None = None, should_stop: ShouldStop | None = None,
               duplicate_similarity: float = DUPLICATE_SIMILARITY, events: SpikeEvents | None = None,
               join_co_firing: bool = False) -> PruneDecision:
        """Merge duplicate filters and drop idle ones (engine/pipeline/pruning.py), judged on `events`
        (default: the pool coded with the current dictionary); with `join_co_firing`, also make one
        filter of two that code one neuron together (engine/pipeline/co_firing.py)."""
        with self.model_lock:
            progress = (lambda f: report("pruning", f)) if report is not None else None
            if events is None:
                events = self._events_of_pool(progress, should_stop)
            filters = self.model.filters_numpy()
            decision = prune(filters, events, duplicate_similarity, shadow_window=self._samples(SHADOW_WINDOW_MS))
            mask = self.model.channel_mask.detach().cpu().numpy() > 0
            if join_co_firing:
                absorbed = find_co_firing(events, decision.keep.tolist(), self._samples(CO_FIRING_MS),
                                          channel_sharing(filters.transpose(0, 2, 1)))
                if absorbed:
                    decision = decision.without(absorbed, describe_co_firing(absorbed))
                    filters = combine_co_firing(filters, events, absorbed, self._samples(CO_FIRING_MS), peak_taps(filters))
                    for gone, kept in absorbed.items():
                        mask[kept] |= mask[gone]
            medians = group_medians(events.amplitudes, events.filters, len(decision.counts))
            self._usual_amplitudes = np.where(decision.counts >= MIN_AMPLITUDE_SPIKES, medians, np.inf)[decision.keep]
            if len(decision.keep) < self.model.n_filters:
                kept = np.ascontiguousarray(filters.transpose(0, 2, 1)[decision.keep])  # (n_kept, n_channels, n_taps)
                self._set_model(kept, channel_mask=mask[decision.keep], lambdas=self._lambdas()[decision.keep])
                # The starting shapes follow their filters, so views can still pair them.
                if self.initial_filters is not None and len(self.initial_filters) == len(decision.counts):
                    self.initial_filters = self.initial_filters[decision.keep]
        return decision

    def _split_mixed_filters(self, report: Callable[[str, float], None] | None = None,
                             should_stop: ShouldStop | None = None) -> tuple[list[int], SpikeEvents]:
        """Give a neuron folded into a look-alike filter its own filter (engine/pipeline/initialization.py);
        returns the filters split and the pool's spikes with each split filter's given to its halves."""
        with self.model_lock:
            progress = (lambda f: report("splitting mixed filters", f)) if report is not None else None
            events = self._events_of_pool(progress, should_stop)
            if len(events) == 0:
                return [], events
            filters = self.model.filters.detach().cpu().numpy()
            code_index = events.times - peak_taps(self.model.filters_numpy())[events.filters]
            busiest = int(np.bincount(events.filters).max())
            min_spikes = max(MIN_SPLIT_SPIKES, int(MIN_USE_FRACTION * busiest))
            result = split_mixed_filters(
                self.pool.prune_segment(), filters, code_index, events.filters, events.amplitudes,
                DUPLICATE_SIMILARITY, min_spikes, seed=self.config.seed,
            )
            if result.split:
                self._set_model(result.filters)
            return result.split, SpikeEvents(events.times, result.spike_filters.astype(events.filters.dtype),
                                             events.amplitudes)

    def _require_prepared(self) -> None:
        if not self.is_prepared:
            raise RuntimeError("call prepare() first: the pipeline has no dictionary yet")

    # ---- for the live views -------------------------------------------------------------
    def filters(self) -> np.ndarray:
        """(n_filters, n_taps, n_channels) float32 copy of the current dictionary (whitened on a whitened
        sort: what a checkpoint keeps and a later sort of the same probe starts from)."""
        with self.model_lock:
            return self.model.filters_numpy()

    def shown(self, filters: np.ndarray | None) -> np.ndarray | None:
        """`filters` (n, n_taps, n_channels) of this sort's dictionary, as the person sees the recording: a
        whitened sort's unwhitened, in units of the preprocessed recording's noise σ, unit norm again."""
        if filters is None or not isinstance(self.recording, WhitenedRecording):
            return filters
        in_uv = self.recording.unwhiten(np.asarray(filters, dtype=np.float32) * self.noise_levels)
        shown = in_uv / np.maximum(np.asarray(self.preprocessed.noise_levels, dtype=np.float32), 1e-6)
        norms = np.linalg.norm(shown, axis=(1, 2), keepdims=True)
        return (shown / np.maximum(norms, 1e-12)).astype(np.float32)

    def reconstruct(self, start: int, stop: int) -> WindowReconstruction:
        """Codes and reconstruction of one window (thread-safe)."""
        with self.model_lock:
            window = reconstruct_window(self.model, self.recording, self.noise_levels, start, stop)
        if isinstance(self.recording, WhitenedRecording):  # drawn as recorded: the traces as the person sees them
            window = replace(window, traces=self.preprocessed.get_traces(window.start, window.start + len(window.traces)),
                             reconstruction=self._as_recorded(window.reconstruction))
        return window
