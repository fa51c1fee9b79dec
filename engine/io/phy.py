"""The phy/Kilosort folder: the field's interchange format, written and read.

`export_phy` writes a folder that phy, SpikeInterface and Kilosort tools open.
`load_phy` reads folders from us, Kilosort 2–4 and SpikeInterface's
`export_to_phy`. The `write_*` helpers save curation back into a folder the way
phy does, each file atomically.

What is in a folder (one row per spike unless said otherwise):
    params.py              dat_path, n_channels_dat, dtype, offset, sample_rate, hp_filtered
    spike_times.npy        sample index of each spike, ascending
    spike_templates.npy    template that found the spike
    spike_clusters.npy     cluster after curation (absent: same as spike_templates)
    amplitudes.npy         template scaling per spike (ours: µV)
    templates.npy          (n_templates, n_samples, n_channels) shapes, all peaks at one index
    channel_map.npy        (n_channels,) column of each sorted channel in the raw file
    channel_positions.npy  (n_channels, 2) µm
    cluster_group.tsv      cluster_id<TAB>group (good / mua / noise / unsorted)

We add `gain_to_uv` to params.py (µV per raw unit) so that the raw data reads
back in µV, and `amplitude_unit` (what amplitudes.npy holds: "µV" for our own
sorts), so that a view can label the axis; phy and SpikeInterface ignore names
they do not know.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.io.atomic import write_npy_atomic, write_text_atomic
from engine.io.recording import BinaryRecording, Recording, RecordingError
from engine.model.similarity import normalised_cross_correlation
from engine.io.geometry import linear_positions
from engine.io.params_py import read_params_py
from engine.pipeline.sorting import Sorting, template_mix

PARAMS_FILE = "params.py"
EXPORTED_DATA_FILE = "recording.dat"
DEFAULT_GROUP = "unsorted"
# Half-width of the mean waveforms computed from raw data when a folder has no templates.
MEAN_WAVEFORM_HALF_WIDTH_MS = 1.0
INT16_FULL_SCALE = 32767
CHUNK_VALUES = 1 << 22  # values per chunk when copying a recording: 16 MB of float32


class PhyFolderError(ValueError):
    """A folder that is not, or cannot become, a usable phy folder."""


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


def export_phy(
    sorting: Sorting,
    out_dir: str | os.PathLike,
    recording: Recording | None = None,
    hp_filtered: bool = False,
    cluster_groups: dict[int, str] | None = None,
    before_swap: Callable[[Path], None] | None = None,
) -> Path:
    """Write `sorting` as a phy folder at `out_dir` and return its absolute path.

    The raw data phy shows: a `BinaryRecording` is pointed at where it lies;
    any other recording is written into the folder as int16 `recording.dat`;
    without a recording, params.py names no data file. The folder is built
    beside `out_dir` and renamed into place, so an interrupted export leaves
    the previous folder (if any) untouched and no half-written one.

    `cluster_groups` (unit -> phy group) are the groups cluster_group.tsv gets, every other unit
    "unsorted"; without them, `sorting.unit_groups` (a fresh sort's: its residual units as noise),
    which a person then reviews in phy or Sparsort. The sort's own labels (`sorting.sort_labels`)
    go in cluster_SparsortLabel.tsv.

    `before_swap(staging)` writes the caller's own files (a checkpoint, a run
    summary) into the folder before it is renamed into place, so the finished
    folder never lacks them. Leftovers of an export killed earlier are
    recovered first (`recover_interrupted_export`), each with a warning.
    """
    out_dir = Path(out_dir).resolve()
    for message in recover_interrupted_export(out_dir):
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    _check_replaceable(out_dir)
    groups = _unit_groups(sorting, cluster_groups)
    if recording is not None:
        _check_recording_matches(sorting, recording)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Plain mkdir rather than mkdtemp: mkdtemp's private 0700 mode would survive
    # the rename and lock other users out of the exported folder.
    staging = _unused_sibling(out_dir, "partial")
    staging.mkdir()
    try:
        data_params, channel_map = _place_raw_data(recording, staging, out_dir, sorting.n_channels)
        _write_params(staging, data_params, sorting.sampling_rate, hp_filtered, sorting.amplitude_unit)
        _write_spikes(staging, sorting)
        _write_templates(staging, sorting, channel_map)
        write_cluster_groups(staging, groups)
        if sorting.sort_labels:  # a sort that labelled nothing writes no file of blanks
            write_sort_labels(staging, sorting.sort_labels)
        if before_swap is not None:
            before_swap(staging)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _check_replaceable(out_dir: Path) -> None:
    # Replacing deletes the old folder: refuse anything that is not a phy folder,
    # so a mistyped path cannot wipe a user's unrelated files.
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise PhyFolderError(f"{out_dir} exists and is a file, not a folder")
    looks_like_phy = (out_dir / PARAMS_FILE).exists() or (out_dir / "spike_times.npy").exists()
    if any(out_dir.iterdir()) and not looks_like_phy:
        raise PhyFolderError(
            f"{out_dir} is not empty and is not a phy folder (no {PARAMS_FILE}); refusing to replace it"
        )


def _unit_groups(sorting: Sorting, cluster_groups: dict[int, str] | None) -> dict[int, str]:
    groups = {int(unit): DEFAULT_GROUP for unit in sorting.unit_ids}
    given = sorting.unit_groups if cluster_groups is None else cluster_groups
    for unit, group in given.items():
        if int(unit) not in groups:
            raise ValueError(
                f"cluster_groups names unit {unit}, but the sorting has units 0..{sorting.n_units - 1}"
            )
        groups[int(unit)] = group
    return groups


def _check_recording_matches(sorting: Sorting, recording: Recording) -> None:
    if recording.n_channels != sorting.n_channels:
        raise ValueError(f"recording has {recording.n_channels} channels, the sorting {sorting.n_channels}")
    if not np.isclose(recording.sampling_rate, sorting.sampling_rate, rtol=1e-6):
        raise ValueError(
            f"recording is sampled at {recording.sampling_rate} Hz, the sorting at {sorting.sampling_rate} Hz"
        )


def _place_raw_data(recording: Recording | None, staging: Path, out_dir: Path, n_channels: int) -> tuple[dict, np.ndarray]:
    """Make the raw data reachable from the finished folder.

    Returns its params.py entries and the channel map: (n_channels,) int32
    column of each sorted channel in that file.
    """
    identity = np.arange(n_channels, dtype=np.int32)
    if recording is None:
        # An empty dat_path is how phy and SpikeInterface spell "no raw data".
        return {"dat_path": "", "n_channels_dat": n_channels, "dtype": "int16", "offset": 0, "gain_to_uv": 1.0}, identity
    # params.py has one gain for the file: a file whose sorted channels differ in gain is copied.
    if isinstance(recording, BinaryRecording) and recording.gain_to_uv is not None:
        data_file = Path(recording.path).resolve()
        if data_file.is_relative_to(out_dir):
            # The file lives in the folder being replaced (a re-export of a
            # loaded phy folder): carry it over, or deleting the old folder would delete the data.
            dat_path = data_file.relative_to(out_dir)
            _link_or_copy(data_file, staging / dat_path)
        else:
            dat_path = _reference_to(data_file, out_dir)
        # Columns the sort leaves out (SpikeGLX's sync word) stay in the file; channel_map
        # names the sorted ones, as Kilosort's output does.
        return {
            "dat_path": dat_path.as_posix(),
            "n_channels_dat": recording.n_file_channels,
            "dtype": np.dtype(recording.dtype).name,
            "offset": int(recording.offset),
            "gain_to_uv": float(recording.gain_to_uv),
        }, recording.file_channels.astype(np.int32)
    gain_to_uv = _write_int16(recording, staging / EXPORTED_DATA_FILE)
    return {
        "dat_path": EXPORTED_DATA_FILE,
        "n_channels_dat": recording.n_channels,
        "dtype": "int16",
        "offset": 0,
        "gain_to_uv": gain_to_uv,
    }, identity


def _reference_to(data_file: Path, out_dir: Path) -> Path:
    # Relative when data and folder share a parent (a session folder holding
    # both), so moving the session keeps the link; absolute otherwise, so
    # moving the phy folder alone keeps it.
    if data_file.is_relative_to(out_dir.parent):
        return Path(os.path.relpath(data_file, out_dir))
    return data_file


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write_int16(recording: Recording, path: Path) -> float:
    """Write the recording as int16 scaled to use the full range; return µV per unit."""
    chunk = max(1, CHUNK_VALUES // recording.n_channels)  # samples per chunk
    # Two passes over the data, so that neither needs the whole recording in memory.
    peak_uv = max((float(np.abs(traces).max()) for _, _, traces in recording.iter_chunks(chunk)), default=0.0)
    gain_to_uv = peak_uv / INT16_FULL_SCALE if peak_uv > 0 else 1.0
    with open(path, "wb") as handle:
        for _, _, traces in recording.iter_chunks(chunk):  # (n, c) µV
            np.round(traces / gain_to_uv).astype(np.int16).tofile(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return gain_to_uv


def _write_params(
    folder: Path, data_params: dict, sampling_rate: float, hp_filtered: bool, amplitude_unit: str
) -> None:
    values = {
        **data_params, "sample_rate": float(sampling_rate), "hp_filtered": bool(hp_filtered),
        "amplitude_unit": amplitude_unit,
    }
    order = [
        "dat_path", "n_channels_dat", "dtype", "offset", "sample_rate", "hp_filtered", "gain_to_uv", "amplitude_unit"
    ]
    lines = [
        "# Written by Sparsort. gain_to_uv: µV per raw data unit; amplitude_unit: what amplitudes.npy holds "
        "(both read by Sparsort, ignored by phy)."
    ]
    lines += [f"{name} = {values[name]!r}" for name in order]
    write_text_atomic(folder / PARAMS_FILE, "\n".join(lines) + "\n")


def _write_spikes(folder: Path, sorting: Sorting) -> None:
    write_npy_atomic(folder / "spike_times.npy", sorting.spike_times.astype(np.int64))
    write_npy_atomic(folder / "spike_templates.npy", sorting.spike_units.astype(np.int32))
    write_npy_atomic(folder / "spike_clusters.npy", sorting.spike_units.astype(np.int32))
    write_npy_atomic(folder / "amplitudes.npy", sorting.amplitudes.astype(np.float64))


def _write_templates(folder: Path, sorting: Sorting, channel_map: np.ndarray) -> None:
    templates = centred_templates(sorting.templates, sorting.template_peak_taps)
    n_units, n_channels = sorting.n_units, sorting.n_channels
    write_npy_atomic(folder / "templates.npy", templates)
    # Kilosort's dense layout, in its float64: every template on every channel.
    write_npy_atomic(folder / "templates_ind.npy", np.tile(np.arange(n_channels, dtype=np.float64), (n_units, 1)))
    write_npy_atomic(folder / "channel_map.npy", channel_map)
    write_npy_atomic(folder / "channel_positions.npy", np.asarray(sorting.channel_positions, dtype=np.float64))
    write_npy_atomic(folder / "similar_templates.npy", template_similarity(sorting.templates))
    # We never whiten, so both matrices are the identity phy expects then.
    write_npy_atomic(folder / "whitening_mat.npy", np.eye(n_channels))
    write_npy_atomic(folder / "whitening_mat_inv.npy", np.eye(n_channels))


def centred_templates(templates: np.ndarray, peak_taps: np.ndarray) -> np.ndarray:
    """(n_units, 2 * half + 1, n_channels) float32 templates, each peak moved to tap `half`.

    phy cuts spike waveforms centred on the spike time, and a spike time is the
    sample of the peak, so centring the peak makes templates and waveforms line up.
    """
    n_units, n_taps, n_channels = templates.shape
    peak_taps = np.asarray(peak_taps, dtype=np.int64)
    half = int(max(peak_taps.max(), (n_taps - 1 - peak_taps).max())) if n_units else 0
    centred = np.zeros((n_units, 2 * half + 1, n_channels), dtype=np.float32)
    for unit in range(n_units):
        start = half - peak_taps[unit]
        centred[unit, start : start + n_taps] = templates[unit]
    return centred


def template_similarity(templates: np.ndarray, block_size: int = 64) -> np.ndarray:
    """(n_units, n_units) float32 best normalised cross-correlation over all lags."""
    n_units = len(templates)
    similarity = np.zeros((n_units, n_units), dtype=np.float32)
    if templates.shape[1] == 0:
        return similarity
    # In blocks of rows: all lags of all pairs at once would be n² × n_lags floats.
    for start in range(0, n_units, block_size):
        block = normalised_cross_correlation(templates[start : start + block_size], templates)  # (b, n, n_lags)
        similarity[start : start + block_size] = block.max(axis=2)
    return similarity


def _unused_sibling(out_dir: Path, role: str) -> Path:
    """A hidden name beside `out_dir`, e.g. `.phy.partial-<random>`."""
    return out_dir.parent / f".{out_dir.name}.{role}-{uuid.uuid4().hex}"


def _leftovers(out_dir: Path, role: str) -> list[Path]:
    """Siblings `_unused_sibling(out_dir, role)` made, newest first."""
    found = [path for path in out_dir.parent.glob(f".{out_dir.name}.{role}-*") if path.is_dir()]
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)


def recover_interrupted_export(out_dir: str | os.PathLike) -> list[str]:
    """Undo what an export killed part-way left beside `out_dir`; one message per thing done.

    `_swap_into_place` can be stopped at three points: while the new folder is
    written (an unfinished `.X.partial-…`), between its two renames (X missing,
    the previous folder under `.X.old-…`), or while deleting the previous
    folder (a half-deleted `.X.old-…` beside the new X). The previous folder is
    put back when X is missing; everything else left over is deleted.
    """
    out_dir = Path(out_dir).resolve()
    if not out_dir.parent.is_dir():
        return []
    messages = []
    old_copies = _leftovers(out_dir, "old")
    if old_copies and not out_dir.exists():
        os.rename(old_copies[0], out_dir)
        messages.append(
            f"restored {out_dir} from {old_copies[0].name}: an earlier export was stopped "
            "after moving the previous folder aside and before putting the new one in place"
        )
        old_copies = old_copies[1:]
    for old in old_copies:
        shutil.rmtree(old, ignore_errors=True)
        messages.append(f"deleted {old.name}, the previous {out_dir.name} an earlier export replaced and was stopped deleting")
    for partial in _leftovers(out_dir, "partial"):
        shutil.rmtree(partial, ignore_errors=True)
        messages.append(f"deleted {partial.name}, the unfinished folder of an export that was stopped")
    return messages


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    # Old aside, new in, then old away: at every instant one complete folder
    # exists on disk (under `aside` if we are killed between the two renames).
    aside = _unused_sibling(out_dir, "old")
    os.rename(out_dir, aside)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(aside, out_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)


# ---------------------------------------------------------------------------
# Curation written back (what phy saves)
# ---------------------------------------------------------------------------


def write_cluster_groups(folder: str | os.PathLike, groups: dict[int, str]) -> None:
    """cluster_group.tsv: the label (good / mua / noise / unsorted) of each cluster."""
    lines = ["cluster_id\tgroup"]
    lines += [f"{int(cluster)}\t{_tsv_cell(group)}" for cluster, group in sorted(groups.items())]
    write_text_atomic(Path(folder) / "cluster_group.tsv", "\n".join(lines) + "\n")


SORT_LABELS_FILE = "cluster_SparsortLabel.tsv"
SORT_LABEL_COLUMN = "SparsortLabel"


def write_sort_labels(folder: str | os.PathLike, labels: dict[int, str]) -> None:
    """cluster_SparsortLabel.tsv: the sort's own verdict on each cluster (as Kilosort's cluster_KSLabel.tsv),
    which curation never rewrites; phy shows it as a column. A label in cluster_group.tsv equal to it is
    the sort's, not a person's (engine.io.output_folder)."""
    lines = [f"cluster_id\t{SORT_LABEL_COLUMN}"]
    lines += [f"{int(cluster)}\t{_tsv_cell(label)}" for cluster, label in sorted(labels.items())]
    write_text_atomic(Path(folder) / SORT_LABELS_FILE, "\n".join(lines) + "\n")


def read_sort_labels(folder: str | os.PathLike) -> dict[int, str]:
    """The sort's own labels (cluster_SparsortLabel.tsv), {} for a folder without them."""
    path = Path(folder) / SORT_LABELS_FILE
    return (_read_tsv_column(path, SORT_LABEL_COLUMN) or {}) if path.is_file() else {}


def write_cluster_info(folder: str | os.PathLike, rows: list[dict]) -> None:
    """cluster_info.tsv: one row per cluster, `cluster_id` first, then every other key seen."""
    columns = ["cluster_id"]
    for row in rows:
        if "cluster_id" not in row:
            raise ValueError(f"cluster_info row without cluster_id: {row}")
        columns += [key for key in row if key not in columns]
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(_tsv_cell(row.get(column, "")) for column in columns))
    write_text_atomic(Path(folder) / "cluster_info.tsv", "\n".join(lines) + "\n")


def write_spike_clusters(folder: str | os.PathLike, spike_clusters: np.ndarray) -> None:
    """spike_clusters.npy: the cluster of every spike, in spike_times.npy's order."""
    folder = Path(folder)
    spike_clusters = np.asarray(spike_clusters).reshape(-1)
    n_spikes = len(_read_npy(folder, "spike_times.npy", mmap_mode="r"))
    if len(spike_clusters) != n_spikes:
        raise PhyFolderError(f"{len(spike_clusters)} spike clusters for {n_spikes} spikes in {folder}")
    write_npy_atomic(folder / "spike_clusters.npy", spike_clusters.astype(np.int32))


def _tsv_cell(value) -> str:
    # A tab or newline inside a cell would shift every column after it.
    return str(value).replace("\t", " ").replace("\n", " ")


# ---------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------

REQUIRED_FILES = ("params.py", "spike_times.npy", "spike_templates.npy")
RAW_DATA_UNIT = "raw units"  # the data file's own numbers, for want of a gain to µV
TEMPLATE_UNIT = "template units"  # another tool's templates.npy: its own scale


@dataclass
class PhyFolder:
    path: Path
    params: dict  # params.py's assignments
    spike_times: np.ndarray  # (n_spikes,) int64 sample index, ascending
    spike_templates: np.ndarray  # (n_spikes,) int32 template that found each spike
    spike_clusters: np.ndarray  # (n_spikes,) int32 cluster id after curation
    amplitudes: np.ndarray | None  # (n_spikes,) float64 template scaling, None when absent
    # (n_templates, n_samples, n_channels) float32, dense and un-whitened; None when absent.
    templates: np.ndarray | None
    channel_map: np.ndarray  # (n_channels,) int32 column of each sorted channel in the raw file
    channel_positions: np.ndarray  # (n_channels, 2) µm
    cluster_groups: dict[int, str]  # cluster id -> good / mua / noise / unsorted
    # The whole raw file (all n_channels_dat columns; `channel_map` picks the
    # sorted ones), or None with the reason in `missing_data_reason`.
    recording: Recording | None
    missing_data_reason: str | None

    @property
    def sampling_rate(self) -> float:
        return float(self.params["sample_rate"])

    @property
    def n_channels(self) -> int:
        return len(self.channel_map)

    @property
    def cluster_ids(self) -> np.ndarray:
        return np.unique(self.spike_clusters)

    @property
    def written_by_sparsort(self) -> bool:
        # Every params.py we write carries gain_to_uv; Kilosort's and SpikeInterface's do not.
        return "gain_to_uv" in self.params

    @property
    def data_unit(self) -> str:
        """What the raw data read from this folder is in: µV where params.py gives gain_to_uv (ours do);
        else the file's own numbers (RAW_DATA_UNIT), read with a gain of 1: Kilosort's and SpikeInterface's
        params.py give no gain, and an int16 Neuropixels value is ~0.2-2.3 µV depending on the probe."""
        return "µV" if "gain_to_uv" in self.params else RAW_DATA_UNIT

    @property
    def template_unit(self) -> str:
        """What the templates are in: µV in a folder we wrote; another tool's templates.npy (un-whitened
        here) in that tool's own TEMPLATE_UNIT (Kilosort's are scaled per spike by amplitudes.npy;
        SpikeInterface's are µV only when its recording had gains, which the folder does not say);
        without templates.npy, means of the raw data, in its unit."""
        if "template_unit" in self.params:
            return str(self.params["template_unit"])
        if self.templates is None:
            return self.data_unit
        return "µV" if self.written_by_sparsort else TEMPLATE_UNIT

    @property
    def amplitude_unit(self) -> str:
        """What amplitudes.npy holds: "µV" in a folder we wrote, Kilosort's unitless "template scaling" otherwise.

        Our params.py names it (folders we wrote before it did held µV); another
        tool's amplitudes scale its templates, whatever those are in.
        """
        if "amplitude_unit" in self.params:
            return str(self.params["amplitude_unit"])
        return "µV" if self.written_by_sparsort else "template scaling"

    def sorted_recording(self) -> Recording | None:
        """The raw data of the sorted channels only (channel_map's columns), or None without raw data."""
        whole = self.recording
        if whole is None or np.array_equal(self.channel_map, np.arange(whole.n_channels)):
            return whole
        return BinaryRecording(whole.path, whole.sampling_rate, whole.n_file_channels, whole.dtype, whole.offset,
                               whole.gain_to_uv, channel_positions=self.channel_positions, channels=self.channel_map)

    def to_sorting(self, max_waveforms_per_unit: int = 200) -> Sorting:
        """A `Sorting` whose units are the clusters, in ascending cluster id.

        `cluster_ids` maps unit index -> cluster id, `unit_groups`
        unit index -> group, and `templates_source` says where the
        templates came from: "templates.npy" (spike-count-weighted mean of the
        templates of each cluster's spikes), "raw data" (mean of up to
        `max_waveforms_per_unit` waveforms), or "none" (zeros, shape (n_units, 1, n_channels)).
        """
        cluster_ids = self.cluster_ids
        spike_units = np.searchsorted(cluster_ids, self.spike_clusters).astype(np.int32)  # (n_spikes,)
        templates, source = self._unit_templates(len(cluster_ids), spike_units, max_waveforms_per_unit)
        if self.amplitudes is not None:
            amplitudes, amplitude_unit = self.amplitudes, self.amplitude_unit
        else:
            # Without amplitudes, each spike gets its unit's peak: flat, in the templates' units
            # (µV in our folders; another tool's templates may be whitened or in raw data units).
            amplitudes = np.abs(templates).max(axis=(1, 2))[spike_units] if len(templates) else np.zeros(0)
            amplitude_unit = "µV" if self.written_by_sparsort else "template peak"
        unit_groups = {
            unit: self.cluster_groups.get(int(cluster), DEFAULT_GROUP) for unit, cluster in enumerate(cluster_ids)
        }
        by_sort = read_sort_labels(self.path) if (self.path / SORT_LABELS_FILE).is_file() else None
        sort_labels = None if by_sort is None else {
            unit: by_sort[int(cluster)] for unit, cluster in enumerate(cluster_ids) if int(cluster) in by_sort}
        return Sorting(
            spike_times=self.spike_times,
            spike_units=spike_units,
            amplitudes=amplitudes,
            templates=templates,
            sampling_rate=self.sampling_rate,
            channel_positions=self.channel_positions,
            cluster_ids=cluster_ids,
            unit_groups=unit_groups,
            sort_labels=sort_labels,
            templates_source=source,
            phy_folder=str(self.path),
            amplitude_unit=amplitude_unit,
        )

    def _unit_templates(self, n_units: int, spike_units: np.ndarray, max_waveforms: int) -> tuple[np.ndarray, str]:
        if self.templates is not None:
            n_templates = len(self.templates)
            if len(self.spike_templates) and self.spike_templates.max() >= n_templates:
                raise PhyFolderError(
                    f"spike_templates.npy refers to template {self.spike_templates.max()}, "
                    f"but templates.npy has {n_templates} templates"
                )
            # (n_units, n_templates) how many spikes of each unit each template found.
            counts = np.bincount(
                spike_units.astype(np.int64) * n_templates + self.spike_templates, minlength=n_units * n_templates
            ).reshape(n_units, n_templates)
            return _mix_templates(counts, self.templates), "templates.npy"
        if self.recording is not None:
            return self._mean_waveforms(n_units, spike_units, max_waveforms), "raw data"
        return np.zeros((n_units, 1, self.n_channels), dtype=np.float32), "none"

    def _mean_waveforms(self, n_units: int, spike_units: np.ndarray, max_waveforms: int) -> np.ndarray:
        half = int(round(MEAN_WAVEFORM_HALF_WIDTH_MS * 1e-3 * self.sampling_rate))
        means = np.zeros((n_units, 2 * half + 1, self.n_channels), dtype=np.float32)
        inside = (self.spike_times >= half) & (self.spike_times + half + 1 <= self.recording.n_samples)
        for unit in range(n_units):
            spikes = np.flatnonzero((spike_units == unit) & inside)
            # Evenly spread over the recording, so drift shows up in the mean as it would in the data.
            chosen = spikes[np.linspace(0, len(spikes) - 1, min(len(spikes), max_waveforms)).astype(np.int64)]
            for spike_time in self.spike_times[chosen]:
                start = spike_time - half
                window = self.recording.get_traces(start, start + 2 * half + 1, self.channel_map)  # (taps, c) µV
                # Raw files may carry a DC offset; the median of the window removes it.
                means[unit] += window - np.median(window, axis=0)
            means[unit] /= max(len(chosen), 1)
        return means


def load_phy(folder: str | os.PathLike) -> PhyFolder:
    """Read a phy / Kilosort / SpikeInterface-export folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhyFolderError(f"{folder} is not a folder")
    missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
    if missing:
        raise PhyFolderError(
            f"{folder} is not a phy folder: {', '.join(missing)} missing "
            f"(a phy folder needs {', '.join(REQUIRED_FILES)}, and usually spike_clusters.npy and channel_map.npy)"
        )
    params = read_params(folder / PARAMS_FILE)
    if "sample_rate" not in params:
        raise PhyFolderError(f"{folder / PARAMS_FILE} does not set sample_rate")

    spike_times = _read_npy(folder, "spike_times.npy").reshape(-1).astype(np.int64)
    spike_templates = _read_spike_vector(folder, "spike_templates.npy", len(spike_times)).astype(np.int32)
    if (folder / "spike_clusters.npy").exists():
        spike_clusters = _read_spike_vector(folder, "spike_clusters.npy", len(spike_times)).astype(np.int32)
        _check_cluster_ids(folder / "spike_clusters.npy", spike_clusters)
    else:
        spike_clusters = spike_templates.copy()
    _check_cluster_ids(folder / "spike_templates.npy", spike_templates)
    if np.any(np.diff(spike_times) < 0):
        raise PhyFolderError(f"spike_times.npy in {folder} is not in ascending order, as phy requires")
    amplitudes = None
    if (folder / "amplitudes.npy").exists():
        amplitudes = _read_spike_vector(folder, "amplitudes.npy", len(spike_times)).astype(np.float64)

    channel_map = _read_channel_map(folder, params)
    if (folder / "channel_positions.npy").exists():
        channel_positions = _read_npy(folder, "channel_positions.npy").astype(np.float64)
        channel_positions = channel_positions.reshape(len(channel_map), -1)
    else:
        channel_positions = linear_positions(len(channel_map))
    recording, missing_data_reason = _open_raw_data(folder, params, channel_map, channel_positions)
    return PhyFolder(
        path=folder.resolve(),
        params=params,
        spike_times=spike_times,
        spike_templates=spike_templates,
        spike_clusters=spike_clusters,
        amplitudes=amplitudes,
        templates=_read_templates(folder, len(channel_map)),
        channel_map=channel_map,
        channel_positions=channel_positions,
        cluster_groups=read_cluster_groups(folder),
        recording=recording,
        missing_data_reason=missing_data_reason,
    )


def _mix_templates(counts: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(n_units, n_taps, n_channels) float32: each unit's templates weighted by how many of its spikes each found.

    counts: (n_units, n_templates). Most units are one template: those are copied, and only the
    others are mixed (a dense einsum over every template took 11 s at 500 units × 384 channels).
    """
    n_units, n_templates = counts.shape
    used = counts > 0
    single = used.sum(axis=1) == 1
    if n_units == n_templates and single.all() and np.array_equal(counts.argmax(axis=1), np.arange(n_units)):
        # Cluster k is template k, as in a folder nobody curated yet: the templates themselves.
        return templates
    mixed = np.zeros((n_units,) + templates.shape[1:], dtype=np.float32)
    mixed[single] = templates[counts[single].argmax(axis=1)]
    for unit in np.flatnonzero(used.sum(axis=1) > 1).tolist():
        present = np.flatnonzero(used[unit])
        mixed[unit] = template_mix(counts[unit, present] / counts[unit, present].sum(), templates[present])
    return mixed


def read_params(path: Path) -> dict:
    """params.py's top-level assignments, parsed (never executed) by engine/io/params_py.py."""
    return read_params_py(path, PhyFolderError)


def _read_npy(folder: Path, name: str, mmap_mode: str | None = None) -> np.ndarray:
    try:
        return np.load(folder / name, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError as error:
        raise PhyFolderError(f"{folder} has no {name}, which a phy folder needs") from error
    except ValueError as error:
        if "allow_pickle" in str(error):
            # numpy's own words advise allow_pickle=True, i.e. running code from the file: not for a person.
            raise PhyFolderError(
                f"{folder / name} holds Python objects (a pickled array), not numbers: it was not written "
                "as a phy folder writes it (or is damaged); write it again from the sorter"
            ) from None
        raise PhyFolderError(f"{folder / name} is not a readable .npy file: {error}") from error
    except OSError as error:
        raise PhyFolderError(f"{folder / name} is not a readable .npy file: {error}") from error


def _read_spike_vector(folder: Path, name: str, n_spikes: int) -> np.ndarray:
    # Kilosort and SpikeInterface save (n_spikes, 1); we save (n_spikes,).
    values = _read_npy(folder, name).reshape(-1)
    if len(values) != n_spikes:
        raise PhyFolderError(f"{name} has {len(values)} entries, spike_times.npy {n_spikes}")
    return values


def _check_cluster_ids(path: Path, ids: np.ndarray) -> None:
    negative = ids < 0
    if negative.any():
        raise PhyFolderError(
            f"{path} gives {int(negative.sum()):,} spikes a negative cluster id ({int(ids[negative].min())}; "
            "some tools mark unassigned spikes with -1), and phy needs an id of 0 or more for every spike. "
            f"Give those spikes a cluster of their own (e.g. {int(ids.max()) + 1}) or remove them, then open the folder again"
        )


def _read_channel_map(folder: Path, params: dict) -> np.ndarray:
    if (folder / "channel_map.npy").exists():
        return _read_npy(folder, "channel_map.npy").reshape(-1).astype(np.int32)
    if "n_channels_dat" in params:
        return np.arange(int(params["n_channels_dat"]), dtype=np.int32)
    raise PhyFolderError(f"{folder} has neither channel_map.npy nor n_channels_dat in {PARAMS_FILE}")


def _read_templates(folder: Path, n_channels: int) -> np.ndarray | None:
    """Dense, un-whitened templates, or None when the folder has none."""
    if not (folder / "templates.npy").exists():
        return None
    # No copy when the file holds float32 already (137 MB at 500 units × 179 taps × 384 channels).
    templates = _read_npy(folder, "templates.npy").astype(np.float32, copy=False)
    if not np.isfinite(templates).all():  # the check alone: nan_to_num copied them all
        templates = np.nan_to_num(templates, copy=False)
    if templates.ndim != 3:
        raise PhyFolderError(f"templates.npy must be (n_templates, n_samples, n_channels), got {templates.shape}")
    # phy's sparse layout (SpikeInterface writes it): template_ind.npy lists the
    # channel of each column, −1 for padding. Kilosort's templates_ind.npy is dense and needs nothing.
    if (folder / "template_ind.npy").exists():
        channel_index = _read_npy(folder, "template_ind.npy").astype(np.int64).reshape(templates.shape[0], -1)
        dense = np.zeros((templates.shape[0], templates.shape[1], n_channels), dtype=np.float32)
        for template, channels in enumerate(channel_index):
            used = channels >= 0
            dense[template][:, channels[used]] = templates[template][:, used]
        templates = dense
    if templates.shape[2] != n_channels:
        raise PhyFolderError(f"templates.npy has {templates.shape[2]} channels, channel_map.npy {n_channels}")
    if (folder / "whitening_mat_inv.npy").exists():
        # Kilosort's templates live in whitened space; this brings them back to the data's. As one
        # (templates × taps, channels) product: the stacked 3-D matmul took 12 s at 500 × 384 channels.
        unwhitening = _read_npy(folder, "whitening_mat_inv.npy").astype(np.float32)
        flat = templates.reshape(-1, templates.shape[2])
        scale = np.diag(unwhitening)
        if np.count_nonzero(unwhitening - np.diag(scale)) == 0:
            # Diagonal (an identity, a per-channel scale): no product needed, and none at all for an identity.
            if not np.all(scale == 1):
                flat = flat * scale
        else:
            flat = flat @ unwhitening
        templates = flat.astype(np.float32, copy=False).reshape(templates.shape)
    return templates


def read_cluster_groups(folder: Path) -> dict[int, str]:
    # phy's own labels first, then its cluster_info export, then Kilosort's automatic labels.
    sources = (("cluster_group.tsv", "group"), ("cluster_info.tsv", "group"), ("cluster_KSLabel.tsv", "KSLabel"))
    for name, column in sources:
        path = folder / name
        if path.exists():
            groups = _read_tsv_column(path, column)
            if groups is not None:
                return groups
            if name == "cluster_group.tsv":
                # Save writes cluster_group.tsv: opening without its labels would overwrite them.
                header = path.read_text(encoding="utf-8").partition("\n")[0].strip()
                raise PhyFolderError(
                    f"{path} has no cluster_id and group columns (its header line is {header!r}), so its labels "
                    "cannot be read. Rename its columns to 'cluster_id<TAB>group' (as phy writes them), "
                    "then open the folder again"
                )
    return {}


def _read_tsv_column(path: Path, column: str) -> dict[int, str] | None:
    """cluster id -> non-empty value of `column`, or None when the file lacks that column.

    A file that cannot be read raises PhyFolderError rather than opening as
    "no labels": a later save would then write over labels never read.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PhyFolderError(
            f"{path} is not a text file (byte {error.object[error.start]:#04x} at position {error.start} is not "
            "UTF-8): it is damaged. Restore it from a backup, or move it away to open the sort without its labels"
        ) from error
    first_line = text.partition("\n")[0]
    delimiter = "\t" if "\t" in first_line else ","
    if _is_number(first_line.split(delimiter)[0]):
        raise PhyFolderError(
            f"{path} has no header line (its first line is {first_line.strip()!r}), so its columns are unknown. "
            f"Add the line 'cluster_id<TAB>{column}' at its top (as phy writes it), then open the folder again"
        )
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    id_column = "cluster_id" if "cluster_id" in (reader.fieldnames or []) else "id"
    if column not in (reader.fieldnames or []) or id_column not in (reader.fieldnames or []):
        return None
    values = {}
    for line_number, row in enumerate(reader, start=2):
        if not (row[id_column] and row[column]):
            continue
        try:
            values[int(float(row[id_column]))] = row[column].strip()
        except ValueError as error:
            raise PhyFolderError(f"{path} line {line_number}: cluster id {row[id_column]!r} is not a number") from error
    return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _open_raw_data(
    folder: Path, params: dict, channel_map: np.ndarray, channel_positions: np.ndarray
) -> tuple[Recording | None, str | None]:
    """(BinaryRecording, None) or (None, why not)."""
    dat_path = params.get("dat_path")
    if isinstance(dat_path, (list, tuple)):
        if len(dat_path) > 1:
            return None, f"{PARAMS_FILE} lists {len(dat_path)} raw data files; only one is supported"
        dat_path = dat_path[0] if dat_path else None
    # SpikeInterface writes the string 'None' when it had no file to point to.
    if dat_path is None or str(dat_path).strip() in ("", "None"):
        return None, f"{PARAMS_FILE} names no raw data file"
    data_file = Path(dat_path)
    if not data_file.is_absolute():
        data_file = folder / data_file
    if not data_file.is_file() and (folder / data_file.name).is_file():
        # Folders moved between machines keep a stale absolute dat_path while
        # the data file itself travelled along inside the folder.
        data_file = folder / data_file.name
    if not data_file.is_file():
        return None, f"raw data file {data_file} not found"
    if "n_channels_dat" not in params:
        return None, f"{PARAMS_FILE} does not set n_channels_dat, needed to read {data_file}"
    n_channels_dat = int(params["n_channels_dat"])
    if len(channel_map) and (channel_map.min() < 0 or channel_map.max() >= n_channels_dat):
        return None, f"channel_map.npy names channel {channel_map.max()}, but the raw file has {n_channels_dat}"
    # Channels the sort left out (sync, reference) keep a default place.
    positions = linear_positions(n_channels_dat)
    positions[channel_map] = channel_positions

    try:
        recording = BinaryRecording(
            data_file,
            sampling_rate=float(params["sample_rate"]),
            n_channels=n_channels_dat,
            dtype=str(params.get("dtype", "int16")),
            offset=int(params.get("offset", 0)),
            gain_to_uv=float(params.get("gain_to_uv", 1.0)),
            channel_positions=positions,
        )
    except (RecordingError, OSError) as error:
        return None, f"raw data file {data_file} cannot be opened: {error}"
    return recording, None
