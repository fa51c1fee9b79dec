"""Every tuning constant of the sort, with the measurement that chose it.

The stages import their constants from here, so that a reader who wants to
know why the sort behaves as it does (or to tune it) finds every number in
one place. Numbers a person sets per run live in `TrainingConfig` instead.
"""

# ---- training pool (engine/pipeline/pool.py) -----------------------------------
# The pool of preprocessed data training samples windows from is capped at this
# many values (channels × samples): 64 M float32 = 256 MB, enough for minutes of
# a tetrode or seconds-long pieces spread over a 384-channel probe.
MAX_POOL_VALUES = 64_000_000
# ... but never shorter than this (where the recording is that long): on a 384-channel probe the cap left
# 5.6 s, in which a 2-Hz neuron fires ~11 times, too few for the first dictionary's clusters and pruning's
# counts, and such neurons went unsorted. 384 channels, 100 neurons, 60 s, each sorted with the floor at
# 0, 12 and 20 s (a sort gives the same spikes run to run; the times are single runs): SpikeInterface's
# drifting generator's probe, static (neurons of 2-8 Hz), 0.792, 0.824, 0.840 in 88, 91, 99 s; its
# ground-truth generator's, 0.921, 0.929, 0.916 in 74, 96, 116 s. 12 s is 553 MB of pool at 384
# channels; probes under 178 channels at 30 kHz keep the cap's longer pool.
MIN_POOL_SECONDS = 12.0
POOL_PIECE_S = 2.0  # when the pool is capped, it is made of pieces this long, spread over the recording
POOL_READ_S = 10.0  # when it is not, the whole recording is read this much at a time
# Deciding which filters are neurons codes this much of the pool: enough
# spikes of a 1 Hz unit to count, little enough to take a second or two.
PRUNE_SECONDS = 20.0
# ... in batches of this many 1-s chunks, coded a batch per free core: in the sort's batches of 8 the
# 20 chunks were 3 batches, the last coded alone while the other core waited (a 384-channel pool, 4 s,
# one batch: one core). Coded up to six times a sort: 384 channels 87.9 -> 77.3 s, the same 0.920; on the
# 32-channel probe the same events (recording seed 4, after training) and a second or so a sort.
POOL_BATCH_CHUNKS = 2
# Windows at the end of the pool that training never draws: the live curve of
# reconstruction error on them moves only when the model learns (not with the batch drawn).
HELDOUT_WINDOWS = 4
# Coding them costs about an eighth of a training step: measured at most this often.
HELDOUT_INTERVAL_S = 1.0

# ---- training (engine/pipeline/training.py) ------------------------------------
# A least-squares update moves the filters all the way to their fitted shapes only when the
# batch holds this much data (the default batch: 32 windows of 200 ms); a smaller batch moves
# them that fraction of the way. Measured: batches of 4 × 100 ms, moved all the way, left a
# 12 s simulation's k-means shapes at errors 0.18, 0.29 and 0.56 after 15 steps (noise fitted).
FULL_UPDATE_SECONDS = 6.4
# Training from spike shapes ends once the filters' averaged shapes are known to within this
# standard error (mean over the filters; dictionary-error units, where distinct neurons sit
# 0.1-0.4 apart), after at least MIN_SETTLE_STEPS steps. Measured on the 5-minute tetrode
# simulation (47 steps in the epoch, 1.2 s each): the mean error of the eight filters to the
# true shapes was 0.058, 0.044, 0.040, 0.0387 and 0.0374 after 1, 10, 20, 30 and 47 steps,
# while this estimate was 0.032, 0.019, 0.0155, 0.0128 and 0.0099: it overstates what is
# left (it counts how far the start was) and stops at step ~22, 0.0026 short of the epoch's end.
SETTLE_TOLERANCE = 0.015
MIN_SETTLE_STEPS = 5

# Training fits no filter to its spikes bigger than this many times its median amplitude on
# the training pool (another neuron's, coded by a filter that partly fits them:
# dictionary_update.codes_of_kept_spikes has the measurement). Two neurons that share a
# filter and differ in size stay within it: the SpikeInterface pairs were 3.1× apart at most.
OUTLIER_AMPLITUDE_FACTOR = 3.0
# From spike shapes, a batch moves a filter only when the shape its spikes in that batch fit is
# at least this alike to it (cosine, both unit-norm); else the batch's spikes are not its
# neuron's, or too few to tell, and the filter keeps its shape for that batch. Measured on
# SpikeInterface's 32-channel probe, 5 min (24 units, 11 training steps): a 9 σ unit's filter,
# 0.97 alike to its unit at the start, coded a 69 σ neighbour's spikes in one batch (that
# batch's shape 0.61 alike to the filter), took half of it (the first batches weigh most), and
# ended the training 0.74 alike to its unit and 0.89 to the neighbour; so did three more filters,
# and a filter of a 7 σ unit coding 6-20 spikes a batch (shapes 0.3-0.5 alike) drifted 0.90 → 0.75.
# Filters that stay on their neuron had batch shapes 0.83-1.0 alike at every step.
MIN_BATCH_SHAPE_SIMILARITY = 0.8
# Training fits no filter to its spikes that overlap (atoms within a filter length, on a shared
# channel) a spike of another filter more than this many times bigger: what such a spike leaves
# unexplained (its filter is never exactly its shape) is coded by the small filters around it,
# and least squares would pull them towards it. dictionary_update.codes_of_kept_spikes has the
# measurement. A small neuron's genuine spikes under a big one are few (they overlap it by chance).
DOMINATED_OVERLAP_FACTOR = 2.0
# A filter's median amplitude is trusted from this many spikes on (training's bound above, and
# sorting's amplitude prior, refinement.AmplitudePrior).
MIN_AMPLITUDE_SPIKES = 5

# ---- initial dictionary (engine/pipeline/initialization.py) --------------------
DETECTION_THRESHOLD = 5.0  # noise σ: threshold crossings that seed the k-means of snippets
# Where the extremum sits inside a filter: spikes are asymmetric (a short
# trough, a long repolarisation), so the peak goes a little before the middle.
PEAK_FRACTION = 0.4
FILTER_MS = 4.0  # default filter length: a spike and its repolarisation
MIN_TAPS, MAX_TAPS = 4, 2048
MAX_FILTERS = 512
# Filters provisioned per channel when n_filters is left to us. Measured: one
# channel with 3 neurons is sorted best from 8 (32 fragments each neuron and
# pruning cannot put it back together); a tetrode with 8 neurons needs 32
# (with 8, 16 or 24 k-means folds its rarest unit into a 0.93-similar one).
FILTERS_PER_CHANNEL = 8
# From this many channels up, the initial dictionary is clustered channel by
# channel on neighbourhoods (initialization.initial_filters_by_neighbourhood);
# below it, over all channels at once, as measured on the demo and tetrodes.
LOCAL_INIT_MIN_CHANNELS = 9
# From this many channels the k-means start detects spikes per neighbourhood
# (initialization.detect_peaks_locally) rather than one per dead time on the
# whole probe. Measured, whole sort, one run each: 384 channels, 100 units, 20 s:
# 0.799 (78/100 well detected) probe-wide, 0.832 (81/100) local; 32 channels,
# 24 units, 30 s: 0.850 probe-wide, 0.825 local (one unit lost its filter), so
# below 64 channels, where few spikes meet on the probe at once, it stays probe-wide.
LOCAL_DETECTION_MIN_CHANNELS = 64
# From a random start (--init random), training steps before the first pruning:
# noise filters have no neurons to prune, learned ones do.
RANDOM_START_STEPS = 15
# Noise filters provisioned per channel (at least 4) when n_filters is left to us. Fewer than
# for the k-means start: two noise filters that settle on one neuron each learn a variant of
# its shape (measured on the demo from 8: 0.966 alike, below DUPLICATE_SIMILARITY, and the
# unit split between them, accuracy 0.59); from 4, one filter per unit (0.994, 0.947, 0.947).
RANDOM_FILTERS_PER_CHANNEL = 4

# ---- pruning (engine/pipeline/pruning.py) --------------------------------------
# Measured on the simulator: distinct neurons reached a shift-invariant
# similarity of 0.89-0.90, duplicates of one neuron 0.99-1.0.
DUPLICATE_SIMILARITY = 0.97
# The pruning after training merges only what training made one: two filters that
# converge on one neuron reach 0.99-1.0. Pairs the first pruning judged distinct sit
# near 0.97 and flip with small changes: on SpikeInterface's 32-channel probe two
# units' filters at 0.97 were kept apart before least-squares training and merged
# after it (with 3 other losses, 21 -> 18 units well detected).
FINAL_DUPLICATE_SIMILARITY = 0.99
# Filters alike in shape whose spikes' median sizes differ by this factor or more are two
# neurons of one shape, not duplicates (pruning.find_duplicates). Two k-means clusters of one
# neuron differ in size by its amplitude jitter (tens of %); the two neurons of one shape on
# SpikeInterface's 32-channel probe, by 2.8× (and their sizes are two groups: pruning.distinct_sizes).
DISTINCT_AMPLITUDE_RATIO = 2.0
# Two filters sharing a channel of which at least this fraction of each one's spikes fire within
# CO_FIRING_MS of the other's, at their usual sizes (within this ratio), are one neuron coded
# as their sum: the final pruning joins them (engine/pipeline/co_firing.py). Chance
# coincidences of two 15 Hz neurons within 0.1 ms are ~0.3 %.
CO_FIRING_FRACTION = 0.5
CO_FIRING_SIZE_RATIO = 1.5
CO_FIRING_MS = 0.1
# A filter that wins fewer spikes than this fraction of the busiest filter's
# count explains leftovers, not a neuron (overlap clusters won ~5 %).
MIN_USE_FRACTION = 0.1
# A filter with at least this fraction of its spikes within SHADOW_WINDOW_MS of
# bigger spikes of one other filter codes what that filter leaves of its
# spikes, not a neuron: chance coincidences of two neurons at 30 Hz within
# ±1 ms are ~6 %. Measured on SpikeInterface's generated recording: a filter
# fired with 256 of the 287 spikes of the largest unit (111 σ), a 5 % shape
# mismatch there leaving a residual far above λ.
SHADOW_FRACTION = 0.8
SHADOW_WINDOW_MS = 1.0
# A filter is split in two (initialization.split_mixed_filters) only if each
# half has at least this many spikes (or MIN_USE_FRACTION of the busiest's).
MIN_SPLIT_SPIKES = 20
# A filter's channels grow beyond its neighbourhood where its median spike on the training
# pool still peaks above this many noise SDs (engine/pipeline/footprint.py). The median of
# FOOTPRINT_SPIKES snippets has a noise SD of about 0.09, its largest of 120 taps about 0.3:
# 1 is well above it. At 2 (the bar until 2026-12-04), the biggest neurons of SpikeInterface's
# 32-channel probe left ~400 σ² a spike on channels of 1-2 σ peaks, and other filters coded
# it as false spikes of their own.
FOOTPRINT_MIN_PEAK_SIGMA = 1.0
FOOTPRINT_SPIKES = 200
# A filter whose median spike holds more than this fraction of its own channels' energy on the
# channels it would take is firing beside another neuron, not on a neuron of its own that reaches
# further (genuine neurons on SpikeInterface's 32-channel probe: 1-4 %; filters coding what a big
# neuron's filter left out: 5-15 times their own). It keeps its channels.
FOOTPRINT_MAX_OUTSIDE_FRACTION = 0.25
# ... but never farther from the main channel than this many neighbourhood radii.
FOOTPRINT_MAX_RADIUS_FACTOR = 2.5

# ---- spikes from codes (engine/pipeline/inference.py, explain_away.py) ---------
DEAD_TIME_MS = 0.5  # spikes of one unit closer than this are one spike
COINCIDENCE_MS = 0.5  # events of two filters this close may be one spike
# An event coinciding with a bigger event of a filter it shares a channel with is kept only if
# it is at least this fraction of its own filter's usual amplitude (coincidences.resolve_coincidences).
COINCIDENT_MIN_FRACTION = 0.7
# ... and, whatever its usual amplitude, when it is under this fraction of the bigger event: a residual
# as big as the filter's own spikes (coincidences.resolve_coincidences has what it gained and cost).
RESIDUAL_FRACTION = 0.05
# ... but an overlapped event at least this many times its filter's λ is a spike of its own, whatever its
# fraction of the usual amplitude: beside a bigger spike, a big neuron's amplitude is read short
# (coincidences.coincidence_survivors has what it gained).
OWN_SPIKE_LAMBDAS = 4.0
# An event this close to the bigger one is read as part of the same spike (a residual, or a share of one
# spike the lasso split between two filters); farther apart, as a spike of its own overlapping another,
# judged against the smallest neuron its filter codes (coincidences.smallest_group_medians says why).
SAME_SPIKE_MS = 0.1
# Two such shares of filters at least this alike are joined into one event when together they come nearer
# the bigger share's usual amplitude than it alone (coincidences.join_split_shares says what it gained).
SPLIT_SHARE_SIMILARITY = 0.8

# ---- two neurons, one shape (engine/pipeline/amplitude_split.py) ---------------
# Otsu's split of a filter's log-amplitudes must leave the two means this many
# pooled SDs apart: one normal distribution split this way gives 2.65, a
# uniform drift 3.46; the SI-generated pair of look-alike units 5+.
AMPLITUDE_SPLIT_SEPARATION = 5.0
AMPLITUDE_SPLIT_MIN_FRACTION = 0.05  # each group is also at least this fraction of the filter's spikes
# Groups closer than that are still two units when the spike trains say so
# (amplitude_split.refractory_confirmed_groups): the filter's train breaks the refractory period,
# its two groups' cross-correlogram holds at least this fraction of the chance count there
# (one neuron's bigger and smaller spikes leave it all but empty), one group keeps it, and the
# other holds at most this fraction of its chance count (the SpikeInterface tetrode's split groups:
# 0.20-0.38; a simulated neuron's smaller spikes among 20 % stray events: 0.5-0.9).
REFRACTORY_SPLIT_CROSS_RATIO = 0.5
REFRACTORY_SPLIT_MAX_GROUP_RATIO = 0.5
# ... each count with at least this many pairs due by chance (fewer cannot tell; as the merge's old bar).
REFRACTORY_SPLIT_MIN_EXPECTED = 8.0

# ---- merging units that are one neuron (engine/pipeline/unit_merge.py says why and what was measured)
REFRACTORY_MS = 1.5  # SpikeInterface's ISI-violation threshold
BASELINE_MS = (10.0, 50.0)  # the cross-correlogram's flanks: what two independent neurons give
MAX_REFRACTORY_RATIO = 0.25  # of the chance count, at most, inside the refractory window
# ... and so few that two independent units would leave the window that empty with at most this
# probability (Poisson, at the chance count). Until 2026-12-04 the rule was "at least 8 pairs
# expected", whose weakest pass (2 of 8) has 0.014; but a 60-s Neuropixels sort's units hold
# 500-900 spikes, and one neuron's two units there showed 0 pairs of 6.3-7.9 expected
# (probability 0.0004-0.002) and stayed two.
REFRACTORY_P_VALUE = 0.015
MERGE_SIMILARITY = 0.97  # the recording's mean snippets at both units' spikes, noise out of the norms
MAX_SIZE_RATIO = 1.3
# ... and where the two trains are too sparse for the refractory count to judge (no dip that passes, no excess
# over it either: too few pairs due by chance), waveforms this alike, within MAX_SIZE_RATIO, are one neuron. On
# SpikeInterface's drifting generator's 384-channel probe, static, 60 s (neurons of 2-8 Hz: 0.9-3.3 pairs due),
# seven one-neuron pairs were 0.993-1.000 alike and stayed apart; pairs of two neurons at most 0.960 (and that
# one fires inside the period: in excess).
UNTESTED_MERGE_SIMILARITY = 0.985
# Filters less alike than this (best shift, unit norm) do not hold one neuron between them;
# the three filters of the neuron above were 0.83-0.96 alike.
MIN_FILTER_SIMILARITY = 0.7
MERGE_SPIKES = 200
# ... and, on a motion-corrected recording, one neuron the drift split by size (engine/pipeline/drift_phase.py):
# which unit a spike is in depends on the displacement it came at (Cramér's V and p over DRIFT_PHASE_BINS
# bins of the displacement), and their summed rate over those bins varies at most DRIFT_MERGE_MAX_FLATNESS
# of the less varying one's; the waveforms then need only be this alike and within this ratio in size.
DRIFT_PHASE_BINS = 8
DRIFT_PHASE_MIN_SPAN_UM = 2.0  # less drift (5th to 95th percentile) than this decides nothing
DRIFT_MERGE_MIN_V = 0.3
DRIFT_MERGE_MAX_P = 1e-6
DRIFT_MERGE_MAX_FLATNESS = 0.5
DRIFT_MERGE_SIMILARITY = 0.93
DRIFT_MAX_SIZE_RATIO = 1.6
# Spikes of each unit the refractory count reads at most (spread over the recording):
# the counts scale together, and a 2-hour unit's spike train need not be read whole.
MAX_COUNTED_SPIKES = 50_000
# Shifts of one unit's mean snippet against the other's that the waveform test tries, in ms:
# two filters may put one neuron's peak a sample or two apart.
MAX_SHIFT_MS = 0.2

# ---- neurons too faint for the first dictionary (engine/pipeline/faint_units.py) ----------
# Probes of this many channels or more are searched. On 32 channels (5 min, recording seed 0) it found
# one neuron in each of two sorts (0.889 -> 0.894, 0.888 -> 0.896; recording seed 6: none, the same
# scores); on SpikeInterface's tetrode its one candidate took a neuron's spikes (0.913 -> 0.832).
FAINT_MIN_CHANNELS = LOCAL_INIT_MIN_CHANNELS
# Channels × samples of the recording coded to find them (20 s of a 384-channel probe), and at most
# this many seconds (a 32-channel probe's whole 5 minutes doubled its sort's time). Measured at 384
# channels (sorter seeds 0, 2): 30 s scored 0.921 / 0.904 with the search taking 43-50 s; 20 s,
# 0.915 / 0.914 with 10-18 s less. Reading and band-passing the pieces is a third of the search.
FAINT_MAX_VALUES = 384 * 20 * 30_000
FAINT_MAX_SECONDS = 60.0
# The residual's peaks searched, in noise σ: a 3.3 σ neuron's spikes cross 4 σ about one time in four;
# noise alone, a few times a minute on each channel.
FAINT_THRESHOLD = 4.0
FAINT_MIN_SPIKES = 30  # a channel's peaks, at least, to make a candidate
# ... or this many of its peaks at the first dictionary's detection bar or deeper, with as many standard
# deviations more negative than positive ones: a neuron at 2 Hz that no filter codes peaks ~40 times in the
# 20 s searched on a 384-channel probe, shared by two or three channels, each of which the noise crosses
# -4 σ ~20 times; but it crosses 5 σ seldom (SpikeInterface's drifting 384-channel probe: +5 σ 32 times
# on the 384 channels in all, at most twice on one; -5 σ 161 times, 12-19 on the channels of such neurons).
# A bar of 10 found two more neurons there, and a candidate of ten noisy peaks that took one's spikes and
# 300 events of no neuron's (0.8530 -> 0.8534, the rare neuron 1.00 -> 0.00).
FAINT_STRONG_THRESHOLD = DETECTION_THRESHOLD
FAINT_MIN_STRONG_SPIKES = 15
FAINT_STRONG_NOISE_EXCESS_Z = 4.0
# ... and this many standard deviations more negative peaks than positive ones (noise gives both alike;
# a neuron's troughs only the negative): see faint_units.noise_excess.
FAINT_NOISE_EXCESS_Z = 4.0
# A candidate is kept when it then codes at least this many spikes of the training pool.
FAINT_MIN_POOL_SPIKES = 10
# A found filter's λ, as a fraction of the sort's: a faint neuron's spikes project onto its filter near
# λ, and at the full bar the lasso coded a third to a half of them (SpikeInterface's 384-channel probe).
FAINT_LAMBDA_FRACTION = 0.8
FAINT_SNIPPET_CHANNELS = 8  # a faint neuron is seen on few channels: its snippets keep the nearest 8
FAINT_SNIPPETS_PER_CHANNEL = 200
# The searched batches' chunks coded at once, a part per free core (faint_units.search_parts): a 384-channel
# probe's search is 3 batches, which a batch per core left one core idle for a third of the search (384
# channels, 60 s: the search 20.1 -> 14.3 s, the same candidates).
FAINT_PART_CHUNKS = 2
