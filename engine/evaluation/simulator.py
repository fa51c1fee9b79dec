"""Ground-truth simulator: synthetic extracellular recordings with known spikes.

It serves the tests, the benchmarks and the app's built-in demo. The default
is the experiment CRsAE spike sorting was first shown on: three neurons firing
at 30 Hz each on one channel at 10 kHz for two minutes, so their spikes
overlap often. Each unit has its own extracellular spike shape (a sharp
negative trough, a slower positive repolarisation lobe, sometimes a small
positive lobe before the trough), scaled per spike by a little jitter, on top
of slightly coloured Gaussian noise and a slow local-field wave that the
band-pass removes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from engine.io.atomic import write_npy_atomic, write_text_atomic
from engine.pipeline.preprocessing import bandpass_filter, default_freq_max, filter_margin
from engine.io.recording import RecordingError, write_recording
from engine.io.geometry import linear_positions
from engine.pipeline.sorting import Sorting, peak_taps

GROUND_TRUTH_FORMAT = "sparsort-ground-truth"
GROUND_TRUTH_VERSION = 1
# Bump when the simulator or DEMO changes, so cached demos are rebuilt.
DEMO_FOLDER = "demo-v1"

# Ranges units are drawn from (ms and µV). Amplitudes are stratified (each
# unit takes a different slice of the range), shapes are drawn to differ.
_TROUGH_UV = (50.0, 150.0)
_TROUGH_WIDTH_MS = (0.08, 0.2)  # Gaussian σ of the negative trough
_REPOLARISATION_DELAY_MS = (0.3, 0.75)  # trough to positive peak
_REPOLARISATION_WIDTH_MS = (0.2, 0.45)
_REPOLARISATION_RATIO = (0.15, 0.5)  # positive peak / trough depth
_PRE_LOBE_RATIO = (0.1, 0.25)  # only for triphasic units
_PRE_LOBE_DELAY_MS = 0.25
_PRE_LOBE_WIDTH_MS = 0.1
_TRIPHASIC_FRACTION = 1 / 3
# Band-passed shapes of two units correlate at most this much (any shift),
# when a few draws allow it; see _distinct_shapes.
_MAX_SHAPE_SIMILARITY = 0.9
_SHAPE_ATTEMPTS = 50
_TROUGH_POSITION = 1 / 3  # of the waveform window: repolarisation needs more room than onset
_EDGE_TAPER = 0.1  # fraction of taps at each end faded to zero, so no lobe is cut into a step

# Space: amplitude falls as 1 / (1 + (d / λ)²) with distance d; distant
# channels also see a broader, slightly different shape (tissue low-passes).
_DECAY_LENGTH_UM = 25.0
_DEPTH_OFF_PROBE_UM = (10.0, 35.0)
_MAX_BROADENING = 0.3
_RATIO_VARIATION = 0.1

_NOISE_CUTOFF_FRACTION = 0.4  # of the sampling rate: noise is mildly low-passed
_LFP_UV = 30.0
_LFP_FREQUENCIES_HZ = (0.5, 12.0)
_N_LFP_COMPONENTS = 3
_CHUNK_SAMPLES = 1 << 20


def tetrode_positions(spacing_um: float = 25.0) -> np.ndarray:
    """(4, 2) µm: four wires on a 2 x 2 square, `spacing_um` apart."""
    return np.array([[0.0, 0.0], [spacing_um, 0.0], [0.0, spacing_um], [spacing_um, spacing_um]])


DEMO = dict(duration_s=120.0, n_units=3, sampling_rate=10_000.0, n_channels=1, firing_rates=30.0)
TETRODE = dict(
    duration_s=300.0,
    n_units=8,
    sampling_rate=30_000.0,
    n_channels=4,
    firing_rates=(3.0, 4.5, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0),
    channel_positions=tetrode_positions(),
)


@dataclass
class GroundTruth:
    """Which unit fired when, and exactly what was added to the recording."""

    spike_times: np.ndarray  # (n_spikes,) int64 sample of the extremum on the unit's main channel
    spike_units: np.ndarray  # (n_spikes,) int32 unit index
    waveforms: np.ndarray  # (n_units, n_taps, n_channels) float32 µV at scale 1
    peak_taps: np.ndarray  # (n_units,) int64 tap of the extremum on the main channel
    sampling_rate: float  # Hz
    amplitude_scales: np.ndarray | None = None  # (n_spikes,) float32 factor on the unit's waveform
    channel_positions: np.ndarray | None = None  # (n_channels, 2) µm
    unit_positions: np.ndarray | None = None  # (n_units, 3) µm: x, y, distance off the probe plane

    def __post_init__(self) -> None:
        self.spike_times = np.asarray(self.spike_times, dtype=np.int64)
        self.spike_units = np.asarray(self.spike_units, dtype=np.int32)
        self.waveforms = np.asarray(self.waveforms, dtype=np.float32)
        self.peak_taps = np.asarray(self.peak_taps, dtype=np.int64)
        self.sampling_rate = float(self.sampling_rate)
        if self.amplitude_scales is None:
            self.amplitude_scales = np.ones(len(self.spike_times), dtype=np.float32)
        self.amplitude_scales = np.asarray(self.amplitude_scales, dtype=np.float32)
        if self.channel_positions is None:
            self.channel_positions = linear_positions(self.n_channels)
        self.channel_positions = np.asarray(self.channel_positions, dtype=np.float64)
        if self.unit_positions is not None:
            self.unit_positions = np.asarray(self.unit_positions, dtype=np.float64)

    @property
    def n_spikes(self) -> int:
        return len(self.spike_times)

    @property
    def n_units(self) -> int:
        return self.waveforms.shape[0]

    @property
    def n_channels(self) -> int:
        return self.waveforms.shape[2]

    def main_channels(self) -> np.ndarray:
        """(n_units,) int channel with the largest peak-to-peak per unit (as `Sorting` does)."""
        return np.ptp(self.waveforms, axis=1).argmax(axis=1)

    def bandpassed_waveforms(self, freq_min: float = 300.0, freq_max: float | None = None) -> np.ndarray:
        """(n_units, n_taps, n_channels) float32 µV: the waveforms as the preprocessing sees them.

        Each waveform is zero-padded by the filter margin before filtering, so
        it is filtered as an isolated spike in silence would be.
        """
        freq_max = default_freq_max(self.sampling_rate) if freq_max is None else freq_max
        margin = filter_margin(self.sampling_rate, float(freq_min), float(freq_max))
        n_units, n_taps, n_channels = self.waveforms.shape
        padded = np.zeros((n_taps + 2 * margin, n_units * n_channels), dtype=np.float32)  # (time, unit x channel)
        padded[margin:margin + n_taps] = self.waveforms.transpose(1, 0, 2).reshape(n_taps, -1)
        filtered = bandpass_filter(padded, self.sampling_rate, freq_min, freq_max)[margin:margin + n_taps]
        return np.ascontiguousarray(filtered.reshape(n_taps, n_units, n_channels).transpose(1, 0, 2))

    def to_sorting(self) -> Sorting:
        """The ground truth as a `Sorting`, amplitudes in µV at each spike's extremum."""
        main = self.main_channels()
        extremum = np.abs(self.waveforms[np.arange(self.n_units), self.peak_taps, main])  # (n_units,) µV
        return Sorting(
            spike_times=self.spike_times,
            spike_units=self.spike_units,
            amplitudes=self.amplitude_scales * extremum[self.spike_units],
            templates=self.waveforms,
            sampling_rate=self.sampling_rate,
            template_peak_taps=self.peak_taps,
            channel_positions=self.channel_positions,
        )

    def save(self, folder: str | os.PathLike) -> Path:
        """Write npy files and ground_truth.json (last, so it marks a complete folder)."""
        folder = Path(folder)
        for name, array in self._arrays().items():
            write_npy_atomic(folder / f"{name}.npy", array)
        summary = {
            "format": GROUND_TRUTH_FORMAT,
            "version": GROUND_TRUTH_VERSION,
            "sampling_rate": self.sampling_rate,
            "n_units": self.n_units,
            "n_spikes": self.n_spikes,
        }
        write_text_atomic(folder / "ground_truth.json", json.dumps(summary, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> GroundTruth:
        folder = Path(folder)
        summary_path = folder / "ground_truth.json"
        if not summary_path.is_file():
            raise RecordingError(
                f"{folder} is not a ground-truth folder (no ground_truth.json): "
                f"point to the folder GroundTruth.save or write_simulation made"
            )
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if summary.get("format") != GROUND_TRUTH_FORMAT or summary.get("version") != GROUND_TRUTH_VERSION:
            raise RecordingError(
                f"{summary_path} is format {summary.get('format')!r} version {summary.get('version')!r}; "
                f"this Sparsort reads {GROUND_TRUTH_FORMAT!r} version {GROUND_TRUTH_VERSION}: simulate it again"
            )
        arrays = {}
        for name in ("spike_times", "spike_units", "waveforms", "peak_taps", "amplitude_scales",
                     "channel_positions", "unit_positions"):
            path = folder / f"{name}.npy"
            if path.is_file():
                arrays[name] = np.load(path, allow_pickle=False)
        missing = [name for name in ("spike_times", "spike_units", "waveforms", "peak_taps") if name not in arrays]
        if missing:
            files = ", ".join(f"{name}.npy" for name in missing)
            raise RecordingError(f"{folder} lacks {files}: simulate it again")
        return cls(sampling_rate=summary["sampling_rate"], **arrays)

    @classmethod
    def beside(cls, recording) -> GroundTruth | None:
        """The ground truth `write_simulation` saved next to `recording`'s file (ground_truth/), or None
        when there is none or it does not fit the recording (another rate or channel count)."""
        while getattr(recording, "parent", None) is not None:  # through preprocessing to the file
            recording = recording.parent
        path = getattr(recording, "path", None)
        folder = Path(path).parent / "ground_truth" if path is not None else None
        if folder is None or not (folder / "ground_truth.json").is_file():
            return None
        try:
            truth = cls.load(folder)
        except RecordingError:
            return None
        fits = truth.sampling_rate == recording.sampling_rate and truth.n_channels == recording.n_channels
        return truth if fits else None

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "spike_times": self.spike_times,
            "spike_units": self.spike_units,
            "waveforms": self.waveforms,
            "peak_taps": self.peak_taps,
            "amplitude_scales": self.amplitude_scales,
            "channel_positions": self.channel_positions,
        }
        if self.unit_positions is not None:
            arrays["unit_positions"] = self.unit_positions
        return arrays


@dataclass
class SimulationPaths:
    recording: Path  # the .bin; its .json sidecar sits beside it
    truth: Path  # folder holding the GroundTruth


def simulate(
    duration_s: float = 120.0,
    n_units: int = 3,
    sampling_rate: float = 10_000.0,
    n_channels: int = 1,
    firing_rates=30.0,
    noise_uv: float = 10.0,
    refractory_ms: float = 2.0,
    amplitude_jitter: float = 0.1,
    seed: int = 0,
    channel_positions=None,
    spike_duration_ms: float = 4.0,
    lfp_uv: float = _LFP_UV,
) -> tuple[np.ndarray, GroundTruth]:
    """Simulate a recording; returns traces (n_samples, n_channels) float32 µV and its ground truth.

    `firing_rates` is one rate for all units or one per unit (Hz). `lfp_uv`
    is the amplitude of the slow wave below 12 Hz. Units keep the same shapes
    and positions for a given seed whatever the duration.
    """
    if int(n_units) != n_units or n_units < 0 or int(n_channels) != n_channels or n_channels < 1:
        raise RecordingError(
            f"need n_units >= 0 and n_channels >= 1 (whole numbers), got {n_units} and {n_channels}"
        )
    n_units, n_channels = int(n_units), int(n_channels)
    n_samples = int(round(duration_s * sampling_rate))
    n_taps = int(round(spike_duration_ms * sampling_rate / 1000))
    rates = np.asarray(firing_rates, dtype=np.float64)  # (n_units,) Hz
    if rates.ndim == 0:
        rates = np.full(n_units, float(rates))
    _check_simulation(n_samples, n_taps, n_units, sampling_rate, rates, noise_uv, refractory_ms,
                      amplitude_jitter, lfp_uv)
    positions = linear_positions(n_channels) if channel_positions is None else np.asarray(channel_positions, float)
    if positions.shape != (n_channels, 2):
        raise RecordingError(f"channel_positions must have shape ({n_channels}, 2) µm, got {positions.shape}")

    shape_rng, train_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    unit_positions = _place_units(shape_rng, n_units, positions)  # (n_units, 3) µm
    waveforms = _unit_waveforms(shape_rng, n_units, n_taps, sampling_rate, positions, unit_positions)
    unit_peak_taps = peak_taps(waveforms)  # (n_units,) int64

    traces = np.empty((n_samples, n_channels), dtype=np.float32)  # µV
    _fill_background(traces, noise_rng, sampling_rate, noise_uv, lfp_uv)
    times_per_unit, scales_per_unit = [], []
    refractory_samples = int(math.ceil(refractory_ms * sampling_rate / 1000))
    for unit in range(n_units):
        # Every spike lies whole inside the recording.
        first, last = unit_peak_taps[unit], n_samples - n_taps + unit_peak_taps[unit]
        times = _spike_train(train_rng, rates[unit] / sampling_rate, refractory_samples, first, last)
        scales = np.maximum(1 + amplitude_jitter * train_rng.standard_normal(len(times)), 0.1).astype(np.float32)
        _add_spikes(traces, times - unit_peak_taps[unit], scales, waveforms[unit])
        times_per_unit.append(times)
        scales_per_unit.append(scales)

    spike_times = np.concatenate(times_per_unit) if n_units else np.zeros(0, np.int64)
    spike_units = np.repeat(np.arange(n_units, dtype=np.int32), [len(t) for t in times_per_unit])
    amplitude_scales = np.concatenate(scales_per_unit) if n_units else np.zeros(0, np.float32)
    order = np.argsort(spike_times, kind="stable")
    truth = GroundTruth(
        spike_times=spike_times[order],
        spike_units=spike_units[order],
        waveforms=waveforms,
        peak_taps=unit_peak_taps,
        sampling_rate=sampling_rate,
        amplitude_scales=amplitude_scales[order],
        channel_positions=positions,
        unit_positions=unit_positions,
    )
    return traces, truth


def write_simulation(out_dir: str | os.PathLike, **simulate_kwargs) -> SimulationPaths:
    """Simulate and write `recording.bin` (+ `recording.json`) and `ground_truth/` into out_dir.

    The recording is int16 with an automatic gain; its quantisation step is
    about 1/16000 of the largest |value|, far below the noise.
    """
    out_dir = Path(out_dir)
    traces, truth = simulate(**simulate_kwargs)
    recording = write_recording(out_dir / "recording.bin", traces, truth.sampling_rate,
                                dtype="int16", channel_positions=truth.channel_positions)
    return SimulationPaths(recording=recording, truth=truth.save(out_dir / "ground_truth"))


def cache_dir() -> Path:
    """Where Sparsort caches generated files: $SPARSORT_CACHE, else ~/.cache/sparsort."""
    configured = os.environ.get("SPARSORT_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "sparsort"


def demo_recording_path() -> Path:
    """Path of the demo recording (.bin), simulated on first use and reused after.

    The demo is written into a temporary folder and renamed into place, so a
    concurrent caller sees either no demo or a complete one.
    """
    folder = cache_dir() / DEMO_FOLDER
    paths = _simulation_paths(folder)
    if _is_complete(paths):
        return paths.recording
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEMO_FOLDER}-", dir=folder.parent))
    try:
        write_simulation(staging, **DEMO)
        if folder.exists() and not _is_complete(paths):
            shutil.rmtree(folder)  # damaged, e.g. partly deleted by hand
        try:
            os.rename(staging, folder)
        except OSError:
            if not _is_complete(paths):  # anything but another caller winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths.recording


def _simulation_paths(folder: Path) -> SimulationPaths:
    return SimulationPaths(recording=folder / "recording.bin", truth=folder / "ground_truth")


def _is_complete(paths: SimulationPaths) -> bool:
    return (paths.recording.is_file() and paths.recording.with_suffix(".json").is_file()
            and (paths.truth / "ground_truth.json").is_file())


def _check_simulation(n_samples, n_taps, n_units, sampling_rate, rates, noise_uv, refractory_ms,
                      amplitude_jitter, lfp_uv) -> None:
    if sampling_rate <= 0:
        raise RecordingError(f"sampling_rate must be positive, got {sampling_rate:g} Hz")
    if n_taps < 4:
        raise RecordingError(
            f"spike_duration_ms gives {n_taps} taps at {sampling_rate:g} Hz; a spike needs at least 4: "
            f"use spike_duration_ms >= {4000 / sampling_rate:.3g}"
        )
    if n_samples <= n_taps:
        raise RecordingError(
            f"duration gives {n_samples} samples, not longer than one spike ({n_taps} samples): simulate longer"
        )
    if rates.shape != (n_units,):
        raise RecordingError(f"firing_rates must be one number or {n_units} (one per unit), got {rates.size}")
    max_rate = 1000 / refractory_ms if refractory_ms > 0 else math.inf
    if np.any(rates < 0) or np.any(rates >= max_rate):
        raise RecordingError(
            f"firing rates must be >= 0 and below {max_rate:g} Hz (1 / refractory period of "
            f"{refractory_ms:g} ms), got {rates.tolist()}"
        )
    if min(noise_uv, refractory_ms, amplitude_jitter, lfp_uv) < 0:
        raise RecordingError(
            f"noise_uv, refractory_ms, amplitude_jitter and lfp_uv must be >= 0, got "
            f"{noise_uv}, {refractory_ms}, {amplitude_jitter}, {lfp_uv}"
        )


def _stratified(rng: np.random.Generator, n: int, bounds: tuple[float, float]) -> np.ndarray:
    """(n,) values, one from each of n equal slices of `bounds`, in random order.

    Draws stay near their slice's middle, so two units are never nearly equal.
    """
    low, high = bounds
    slices = rng.permutation(n) + 0.5 + rng.uniform(-0.25, 0.25, n)
    return low + (high - low) * slices / max(n, 1)


def _within(bounds: tuple[float, float], fraction: np.ndarray) -> np.ndarray:
    return bounds[0] + (bounds[1] - bounds[0]) * fraction


def _place_units(rng: np.random.Generator, n_units: int, channel_positions: np.ndarray) -> np.ndarray:
    """(n_units, 3) µm: x, y near the probe and a distance off its plane."""
    low = channel_positions.min(axis=0) - _DECAY_LENGTH_UM / 2
    high = channel_positions.max(axis=0) + _DECAY_LENGTH_UM / 2
    in_plane = rng.uniform(low, high, size=(n_units, 2))
    depth = rng.uniform(*_DEPTH_OFF_PROBE_UM, size=(n_units, 1))
    return np.hstack([in_plane, depth])


@dataclass
class _SpikeShape:
    """One unit's extracellular spike: trough, repolarisation lobe, optional pre-lobe (ms)."""

    trough_width_ms: float
    delay_ms: float
    repolarisation_width_ms: float
    ratio: float
    pre_ratio: float

    def sample(self, time_ms: np.ndarray, width_scale: float = 1.0, ratio_scale: float = 1.0) -> np.ndarray:
        """(n_taps,) unitless, trough of about -1 at time 0."""
        return (
            -_gaussian(time_ms, 0.0, self.trough_width_ms * width_scale)
            + self.ratio * ratio_scale * _gaussian(time_ms, self.delay_ms * width_scale,
                                                   self.repolarisation_width_ms * width_scale)
            + self.pre_ratio * _gaussian(time_ms, -_PRE_LOBE_DELAY_MS * width_scale,
                                         _PRE_LOBE_WIDTH_MS * width_scale)
        )


def _draw_shape(rng: np.random.Generator) -> _SpikeShape:
    # One shared "breadth" sets trough width, delay and lobe width together, as
    # in real cells (narrow fast-spiking to broad pyramidal).
    breadth = rng.uniform()
    triphasic = rng.uniform() < _TRIPHASIC_FRACTION
    return _SpikeShape(
        trough_width_ms=_within(_TROUGH_WIDTH_MS, breadth),
        delay_ms=_within(_REPOLARISATION_DELAY_MS, breadth),
        repolarisation_width_ms=_within(_REPOLARISATION_WIDTH_MS, breadth),
        ratio=rng.uniform(*_REPOLARISATION_RATIO),
        pre_ratio=rng.uniform(*_PRE_LOBE_RATIO) if triphasic else 0.0,
    )


def _distinct_shapes(rng: np.random.Generator, n_units: int, time_ms: np.ndarray, taper: np.ndarray,
                     sampling_rate: float) -> list[_SpikeShape]:
    """Shapes that stay distinguishable after the default band-pass.

    A dictionary learner normalises its filters and may shift them, so what
    tells two units apart is their band-passed shape up to a shift and a scale.
    Each unit takes the first of a few random draws whose best normalised
    cross-correlation with every earlier unit is below a limit, or else the
    least similar draw.
    """
    shapes, seen = [], []  # seen: band-passed, unit-norm shapes of the accepted units
    for _ in range(n_units):
        best_similarity = math.inf
        for _ in range(_SHAPE_ATTEMPTS):
            shape = _draw_shape(rng)
            filtered = _bandpassed_unit_norm(shape.sample(time_ms) * taper, sampling_rate)
            similarity = max((np.correlate(filtered, other, "full").max() for other in seen), default=0.0)
            if similarity < best_similarity:
                best_similarity, best_shape, best_filtered = similarity, shape, filtered
            if similarity <= _MAX_SHAPE_SIMILARITY:
                break
        shapes.append(best_shape)
        seen.append(best_filtered)
    return shapes


def _bandpassed_unit_norm(waveform: np.ndarray, sampling_rate: float) -> np.ndarray:
    margin = filter_margin(sampling_rate, 300.0, default_freq_max(sampling_rate))
    padded = np.pad(waveform, margin)  # (n_taps + 2 margin,) silence either side
    filtered = bandpass_filter(padded, sampling_rate)[margin:margin + len(waveform)]
    return filtered / np.linalg.norm(filtered)


def _unit_waveforms(rng, n_units, n_taps, sampling_rate, channel_positions, unit_positions) -> np.ndarray:
    """(n_units, n_taps, n_channels) float32 µV, trough on the nearest channel = -amplitude."""
    time_ms = (np.arange(n_taps) - int(n_taps * _TROUGH_POSITION)) * 1000 / sampling_rate  # (n_taps,)
    taper = _edge_taper(n_taps)
    amplitude = _stratified(rng, n_units, _TROUGH_UV)  # (n_units,) µV
    shapes = _distinct_shapes(rng, n_units, time_ms, taper, sampling_rate)
    n_channels = len(channel_positions)
    waveforms = np.zeros((n_units, n_taps, n_channels), dtype=np.float32)
    for unit, shape in enumerate(shapes):
        offsets = channel_positions - unit_positions[unit, :2]
        distance = np.sqrt((offsets ** 2).sum(axis=1) + unit_positions[unit, 2] ** 2)  # (n_channels,) µm
        nearest = distance.argmin()
        gain = 1 / (1 + (distance / _DECAY_LENGTH_UM) ** 2)
        gain /= gain[nearest]
        extra_distance = distance - distance[nearest]
        broadening = 1 + _MAX_BROADENING * extra_distance / (extra_distance + _DECAY_LENGTH_UM)
        ratio_change = 1 + _RATIO_VARIATION * rng.standard_normal(n_channels)
        ratio_change[nearest] = 1.0  # the nearest channel shows the unit's own shape
        for channel in range(n_channels):
            waveforms[unit, :, channel] = gain[channel] * taper * shape.sample(
                time_ms, broadening[channel], ratio_change[channel])
        waveforms[unit] *= amplitude[unit] / -waveforms[unit, :, nearest].min()
    return waveforms


def _gaussian(time_ms: np.ndarray, centre_ms: float, width_ms: float) -> np.ndarray:
    return np.exp(-0.5 * ((time_ms - centre_ms) / width_ms) ** 2)


def _edge_taper(n_taps: int) -> np.ndarray:
    """(n_taps,) 1 in the middle, half-cosine ramps to 0 over the outer taps."""
    ramp_length = max(1, int(n_taps * _EDGE_TAPER))
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_length) + 0.5) / ramp_length)
    taper = np.ones(n_taps)
    taper[:ramp_length] = ramp
    taper[-ramp_length:] = ramp[::-1]
    return taper


def _spike_train(rng: np.random.Generator, rate_per_sample: float, refractory_samples: int,
                 first: int, last: int) -> np.ndarray:
    """(n,) int64 sorted sample times in [first, last]: Poisson with a dead time.

    Intervals are the refractory period plus a geometric wait (the discrete
    exponential) whose mean makes the average rate the requested one.
    """
    if rate_per_sample == 0 or last < first:
        return np.zeros(0, dtype=np.int64)
    # Samples beyond the refractory period; rounding the period up to whole
    # samples can leave no room at rates near the maximum.
    mean_wait = max(1 / rate_per_sample - refractory_samples, 0.0)
    success = 1 / (mean_wait + 1)  # geometric(p) - 1 has mean (1 - p) / p = mean_wait
    expected = (last - first) * rate_per_sample
    n_draw = int(expected + 5 * math.sqrt(expected) + 10)
    intervals = refractory_samples + rng.geometric(success, size=n_draw) - 1
    times = first + rng.geometric(success) - 1 + np.concatenate([[0], np.cumsum(intervals)])
    while times[-1] <= last:
        more = refractory_samples + rng.geometric(success, size=n_draw) - 1
        times = np.concatenate([times, times[-1] + np.cumsum(more)])
    return times[times <= last].astype(np.int64)


def _add_spikes(traces: np.ndarray, onsets: np.ndarray, scales: np.ndarray, waveform: np.ndarray) -> None:
    # Within one unit, onsets are distinct, so for a fixed tap the indices
    # never repeat and a plain fancy-indexed += adds every spike.
    for tap in range(waveform.shape[0]):
        traces[onsets + tap] += scales[:, None] * waveform[tap]


def _fill_background(traces: np.ndarray, rng: np.random.Generator, sampling_rate: float,
                     noise_uv: float, lfp_uv: float) -> None:
    """Write slightly coloured noise of std `noise_uv` plus a slow wave into traces, chunk by chunk."""
    n_samples, n_channels = traces.shape
    cutoff = _NOISE_CUTOFF_FRACTION * sampling_rate
    colouring = butter(2, cutoff, btype="lowpass", fs=sampling_rate, output="sos")
    impulse = np.zeros(int(10 * sampling_rate / cutoff) + 64)
    impulse[0] = 1.0
    # Low-passing shrinks white noise's std by the impulse response's norm; undo that.
    noise_gain = noise_uv / np.sqrt(np.sum(sosfilt(colouring, impulse) ** 2))
    state = np.zeros((colouring.shape[0], 2, n_channels))
    lfp_frequencies = rng.uniform(*_LFP_FREQUENCIES_HZ, size=_N_LFP_COMPONENTS)  # Hz
    lfp_phases = rng.uniform(0, 2 * np.pi, size=_N_LFP_COMPONENTS)
    # The local field is broad in space: nearly the same on every channel.
    lfp_channel_gain = rng.uniform(0.8, 1.2, size=n_channels)
    lfp_component_uv = lfp_uv / math.sqrt(_N_LFP_COMPONENTS)
    for start in range(0, n_samples, _CHUNK_SAMPLES):
        stop = min(start + _CHUNK_SAMPLES, n_samples)
        white = rng.standard_normal((stop - start, n_channels))  # (chunk, n_channels) unit variance
        noise, state = sosfilt(colouring, white, axis=0, zi=state)
        time_s = np.arange(start, stop) / sampling_rate
        wave = lfp_component_uv * np.sin(2 * np.pi * np.outer(time_s, lfp_frequencies) + lfp_phases).sum(axis=1)
        traces[start:stop] = noise_gain * noise + wave[:, None] * lfp_channel_gain
