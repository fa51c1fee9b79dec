"""The curation model: merge, split, recluster, label and annotate units, with undo/redo.

Qt-free, after phy's clustering model: every action returns a small
`ChangeRecord` saying which units appeared, disappeared or were relabelled, and
views redraw from that record. Unit ids are never reused, so an id always
names the same set of spikes. That is what makes undo and redo cheap (they
swap sets of ids in and out; no spike set is ever recomputed) and lets caches
such as `engine.curation.metrics.MetricsCache` keep whatever they computed for an id.

A `Curation` made with `Curation.open` writes every action to an on-disk
journal (engine.curation.journal) *before* applying it, so a closed or killed session
reopens with its state and its full undo/redo history.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.curation.grouping import group_by_unit
from engine.curation.journal import Journal, JournalCorruptError, JournalMismatchError, journal_path
from engine.io.phy import write_cluster_groups, write_cluster_info, write_spike_clusters

GROUPS = ("good", "mua", "noise", "unsorted")
DEFAULT_GROUP = "unsorted"
RECLUSTER_SEED = 0


class CurationError(ValueError):
    """An action that cannot be done: unknown unit, bad label, empty split, ..."""


@dataclass(frozen=True)
class ChangeRecord:
    """What one action, or the undo or redo of one, changed."""

    op: str  # the action: "merge", "split", "recluster", "label", "labels", "note" or "reject"
    added: list[int]  # units that now exist and did not before
    deleted: list[int]  # units that existed before and no longer do
    relabelled: list[int]  # surviving units whose label or note changed
    description: str  # for people, e.g. "Merged 4 + 7 → 12"
    undone: bool = False  # this record reports the undo of `op`
    redone: bool = False  # this record reports the redo of `op`


@dataclass(frozen=True)
class _Step:
    """One entry of the undo stack: the unit sets it swaps, the metadata it changes."""

    op: str
    added: tuple[int, ...]
    deleted: tuple[int, ...]
    label_changes: dict[int, tuple[str, str]]  # unit -> (before, after)
    note_changes: dict[int, tuple[str, str]]  # unit -> (before, after)
    description: str
    rejections: tuple[tuple[int, int], ...] = ()  # merge suggestions this step rejects

    @property
    def touched(self) -> list[int]:
        return sorted(set(self.label_changes) | set(self.note_changes))


@dataclass(frozen=True)
class _NewUnit:
    unit_id: int
    spikes: np.ndarray  # (n_unit_spikes,) int64 spike indices, ascending
    parents: tuple[int, ...]  # the units its spikes came from


class Curation:
    """Which unit each spike belongs to, unit labels and notes, and the history.

    `Curation(spike_units, labels)` keeps everything in memory;
    `Curation.open(session_folder, ...)` also journals every action to disk.
    """

    def __init__(
        self,
        spike_units: np.ndarray,
        labels: Mapping[int, str] | None = None,
        *,
        min_new_unit_id: int = 0,
    ) -> None:
        """`spike_units`: (n_spikes,) non-negative integer unit of each spike.

        `labels` maps unit -> group; units absent from it are "unsorted", and
        labels of units that own no spike are ignored. New units get ids above
        every id seen in `spike_units` and `labels`, and at least
        `min_new_unit_id` (pass `Sorting.n_units` so that a new unit can never
        take the id of a template whose unit found no spike).
        """
        units = np.asarray(spike_units)
        if units.ndim != 1 or not (units.size == 0 or np.issubdtype(units.dtype, np.integer)):
            raise CurationError(f"spike_units must be a 1-D integer array, got {units.dtype} {units.shape}")
        if units.size and units.min() < 0:
            raise CurationError("unit ids must be non-negative")
        labels = dict(labels or {})
        for group in labels.values():
            _check_group(group)

        self._spike_clusters = units.astype(np.int64)  # (n_spikes,) int64 current unit of each spike
        # Every unit ever created, alive or not, -> its spikes. Immutable arrays:
        # an id always means the same spikes.
        self._spikes_by_unit: dict[int, np.ndarray] = _index_by_unit(self._spike_clusters)
        self._alive: set[int] = set(self._spikes_by_unit)
        # Labels and notes are kept for retired units too, so that undoing a
        # merge brings its parents back exactly as they were.
        self._labels: dict[int, str] = {int(u): g for u, g in labels.items() if int(u) in self._alive}
        self._notes: dict[int, str] = {}
        self._rejected: set[tuple[int, int]] = set()  # (smaller, larger) unit pairs not to suggest merging
        highest_seen = max([int(units.max()) if units.size else -1, *map(int, labels)], default=-1)
        self._next_unit_id = max(highest_seen + 1, int(min_new_unit_id))
        self._min_new_unit_id = int(min_new_unit_id)
        self._undo_stack: list[_Step] = []
        self._redo_stack: list[_Step] = []
        self._listeners: list[Callable[[ChangeRecord], None]] = []
        self._journal: Journal | None = None
        self._read_only_reason: str | None = None  # why actions are refused, when opened read-only
        self._closed = False
        self._sorted_unit_ids: np.ndarray | None = None

    # ------------------------------------------------------------------ persistence

    @classmethod
    def open(
        cls,
        session_folder: str | os.PathLike,
        initial_spike_units: np.ndarray,
        initial_labels: Mapping[int, str] | None = None,
        *,
        min_new_unit_id: int = 0,
        keep_first: int | None = None,
        read_only_reason: str | None = None,
    ) -> Curation:
        """Start journaling in `session_folder`, or replay the journal found there.

        On a replay, the initial labels and `min_new_unit_id` recorded when the
        journal was created are used, not the ones passed now, so that the
        replay reproduces the same ids; the spike units must be the same as
        then (checked by count and by checksum).

        Raises JournalMismatchError for a journal of another sort,
        JournalCorruptError (with the file, line and number of intact actions)
        for a damaged one, and engine.curation.lock.FolderLockedError when
        another curation holds the folder. `keep_first`: replay only the first
        so many actions (see Journal.resume). `read_only_reason`: open
        without the lock and write nothing; every action is refused with this reason.
        """
        session_folder = Path(session_folder)
        if read_only_reason is not None:
            curation = cls(initial_spike_units, initial_labels, min_new_unit_id=min_new_unit_id)
            curation._read_only_reason = read_only_reason
            if journal_path(session_folder).exists():
                journal, metadata, entries = Journal.read_only(session_folder, n_spikes=len(initial_spike_units))
                curation = cls._replayed(journal, metadata, entries, initial_spike_units, session_folder)
                curation._read_only_reason = read_only_reason
            return curation
        if not journal_path(session_folder).exists():
            curation = cls(initial_spike_units, initial_labels, min_new_unit_id=min_new_unit_id)
            metadata = {
                "spike_units_digest": _digest(curation._spike_clusters),
                "initial_labels": {str(u): g for u, g in sorted(curation._labels.items())},
                "min_new_unit_id": curation._min_new_unit_id,
            }
            curation._journal = Journal.create(session_folder, curation.n_spikes, metadata)
            return curation

        journal, metadata, entries = Journal.resume(
            session_folder, n_spikes=len(initial_spike_units), keep_first=keep_first
        )
        return cls._replayed(journal, metadata, entries, initial_spike_units, session_folder)

    @classmethod
    def _replayed(cls, journal: Journal, metadata: dict, entries: list[dict], initial_spike_units, session_folder: Path) -> Curation:
        try:
            curation = cls(
                initial_spike_units,
                {int(u): g for u, g in metadata["initial_labels"].items()},
                min_new_unit_id=metadata["min_new_unit_id"],
            )
            if _digest(curation._spike_clusters) != metadata["spike_units_digest"]:
                raise JournalMismatchError(
                    f"{journal_path(session_folder)} was written for a sorting with the same "
                    "number of spikes but different units; it belongs to a different sort"
                )
            curation._replay(entries, journal)
        except BaseException:
            journal.close()
            raise
        curation._journal = journal
        return curation

    @property
    def read_only_reason(self) -> str | None:
        """Why this curation refuses actions (another holds its folder), or None."""
        return self._read_only_reason

    @property
    def lock_note(self) -> str:
        """What was said about a stale lock taken over on opening, or ""."""
        return self._journal.lock_note if self._journal is not None else ""

    def close(self) -> None:
        """Close the journal; later actions are refused rather than silently unsaved."""
        if self._journal is not None:
            self._journal.close()
        self._closed = True

    def __enter__(self) -> Curation:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def save_phy(
        self, folder: str | os.PathLike, extra_columns: Mapping[str, Mapping[int, object]] | None = None
    ) -> None:
        """Save the curation into the phy folder `folder`, the way phy does.

        Writes spike_clusters.npy, cluster_group.tsv and cluster_info.tsv,
        each atomically (engine.io.phy); the folder must already hold the
        spike_times.npy of the same spikes. `extra_columns` maps a column name
        (e.g. "fr", "snr"; see `engine.curation.metrics.metrics_to_phy_columns`) to
        unit -> value; they go in cluster_info.tsv between n_spikes and group,
        blank for a unit without a value.
        """
        if self._read_only_reason is not None:
            raise CurationError(f"not saved: {self._read_only_reason}")
        extra_columns = dict(extra_columns or {})
        clashes = set(extra_columns) & {"cluster_id", "n_spikes", "group", "note"}
        if clashes:
            raise CurationError(f"extra columns may not replace the built-in ones: {sorted(clashes)}")
        unit_ids = [int(u) for u in self.unit_ids]
        write_spike_clusters(folder, self._spike_clusters)
        write_cluster_groups(folder, self.labels)
        rows = [
            {
                "cluster_id": u,
                "n_spikes": self.spike_count(u),
                **{name: column.get(u, "") for name, column in extra_columns.items()},
                "group": self.label_of(u),
                "note": self.note_of(u),
            }
            for u in unit_ids
        ]
        write_cluster_info(folder, rows)

    # ------------------------------------------------------------------ queries

    @property
    def n_spikes(self) -> int:
        return len(self._spike_clusters)

    @property
    def spike_clusters(self) -> np.ndarray:
        """(n_spikes,) int64 current unit of each spike; a read-only view."""
        view = self._spike_clusters.view()
        view.flags.writeable = False
        return view

    @property
    def next_unit_id(self) -> int:
        return self._next_unit_id

    @property
    def unit_ids(self) -> np.ndarray:
        """(n_units,) int64 current unit ids, ascending."""
        if self._sorted_unit_ids is None:
            ids = np.array(sorted(self._alive), dtype=np.int64)
            ids.flags.writeable = False
            self._sorted_unit_ids = ids
        return self._sorted_unit_ids

    def spike_count(self, unit_id: int) -> int:
        return len(self._spikes_by_unit[self._existing_unit(unit_id)])

    def spikes_of(self, unit_ids: int | Iterable[int]) -> np.ndarray:
        """(n,) int64 ascending indices of the spikes of one unit or of several."""
        if _is_single_id(unit_ids):
            return self._spikes_by_unit[self._existing_unit(unit_ids)]
        units = self._existing_units(unit_ids)
        return np.sort(np.concatenate([self._spikes_by_unit[u] for u in units]))

    def label_of(self, unit_id: int) -> str:
        return self._labels.get(self._existing_unit(unit_id), DEFAULT_GROUP)

    def note_of(self, unit_id: int) -> str:
        return self._notes.get(self._existing_unit(unit_id), "")

    @property
    def labels(self) -> dict[int, str]:
        """Current unit -> group, for every current unit."""
        return {int(u): self._labels.get(int(u), DEFAULT_GROUP) for u in self.unit_ids}

    @property
    def notes(self) -> dict[int, str]:
        """Current unit -> note, for current units that have one."""
        return {u: self._notes[u] for u in map(int, self.unit_ids) if self._notes.get(u)}

    @property
    def rejected_pairs(self) -> frozenset[tuple[int, int]]:
        """Pairs of units (smaller id first) whose merge suggestion the person rejected."""
        return frozenset(self._rejected)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo_stack)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo_stack)

    @property
    def undo_descriptions(self) -> list[str]:
        """Actions that `undo` would revert, oldest first (the last is undone next)."""
        return [step.description for step in self._undo_stack]

    @property
    def redo_descriptions(self) -> list[str]:
        """Actions that `redo` would re-apply, the next one first."""
        return [step.description for step in reversed(self._redo_stack)]

    def on_change(self, callback: Callable[[ChangeRecord], None]) -> Callable[[], None]:
        """Call `callback(record)` after every action, undo and redo; returns an unsubscriber."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    # ------------------------------------------------------------------ actions

    def merge(self, unit_ids: Iterable[int]) -> ChangeRecord:
        """Make one new unit of the spikes of `unit_ids`; `record.added[0]` is its id."""
        units = self._existing_units(unit_ids)
        if len(units) < 2:
            raise CurationError(f"merging needs at least two different units, got {units}")
        spikes = np.sort(np.concatenate([self._spikes_by_unit[u] for u in units]))
        new_unit = _NewUnit(self._next_unit_id, spikes, tuple(units))
        description = f"Merged {' + '.join(map(str, units))} → {new_unit.unit_id}"
        return self._do_topology("merge", [new_unit], units, description, {"units": units})

    def split(self, spike_indices: np.ndarray) -> ChangeRecord:
        """Move the given spikes into one new unit.

        Like phy, every unit that loses spikes but keeps some also gets a NEW
        id for what it keeps, because its spike set changed: an id always
        means one set of spikes. So splitting part of unit 4 deletes 4 and
        adds two units, the split-off spikes (`record.added[0]`) and the rest.
        """
        selected = np.asarray(spike_indices)
        if selected.ndim != 1 or not (selected.size == 0 or np.issubdtype(selected.dtype, np.integer)):
            raise CurationError(
                f"split takes a 1-D array of spike indices, got {selected.dtype} {selected.shape}"
            )
        if selected.size == 0:
            raise CurationError("split needs at least one spike")
        selected = np.unique(selected.astype(np.int64))  # (n_selected,) ascending
        if selected[0] < 0 or selected[-1] >= self.n_spikes:
            raise CurationError(f"spike indices must lie in [0, {self.n_spikes})")
        sources = [int(u) for u in np.unique(self._spike_clusters[selected])]
        if len(sources) == 1 and len(selected) == self.spike_count(sources[0]):
            raise CurationError(f"the selection is all of unit {sources[0]}: nothing to split")

        new_units = [_NewUnit(self._next_unit_id, selected, tuple(sources))]
        for source in sources:
            source_spikes = self._spikes_by_unit[source]
            kept = source_spikes[~np.isin(source_spikes, selected, assume_unique=True)]
            if kept.size:
                new_units.append(_NewUnit(self._next_unit_id + len(new_units), kept, (source,)))
        rest = ", ".join(f"{u.parents[0]} → {u.unit_id}" for u in new_units[1:])
        sources_text = ", ".join(map(str, sources))
        description = f"Split {len(selected)} spikes off {sources_text} → {new_units[0].unit_id}"
        if rest:
            description += f" (rest: {rest})"
        return self._do_topology("split", new_units, sources, description, {}, payload=selected)

    def recluster(self, unit_id: int, k: int, features: np.ndarray) -> ChangeRecord:
        """Split one unit into `k` new units by k-means on its spikes' features.

        `features`: (n_unit_spikes, n_features), rows in the order of
        `spikes_of(unit_id)`. The seed is fixed, so the same call gives the
        same units. Fewer than `k` units come out if k-means leaves clusters
        empty (e.g. on duplicated points).
        """
        unit = self._existing_unit(unit_id)
        features = np.asarray(features, dtype=np.float64)
        n_unit_spikes = self.spike_count(unit)
        if features.ndim != 2 or features.shape[0] != n_unit_spikes:
            raise CurationError(
                f"features must have shape (n_unit_spikes={n_unit_spikes}, n_features), got {features.shape}"
            )
        if not 2 <= int(k) <= n_unit_spikes:
            raise CurationError(f"k must lie in [2, {n_unit_spikes}] for unit {unit}, got {k}")
        from sklearn.cluster import KMeans  # scikit-learn takes a second to import: only re-clustering needs it

        assignment = KMeans(n_clusters=int(k), n_init=10, random_state=RECLUSTER_SEED).fit_predict(features)
        return self._recluster_with_assignment(unit, assignment)

    def label(self, unit_ids: int | Iterable[int], group: str) -> ChangeRecord:
        """Set the group ("good", "mua", "noise" or "unsorted") of one or more units."""
        units = self._existing_units(unit_ids)
        _check_group(group)
        step = _Step(
            op="label",
            added=(),
            deleted=(),
            label_changes={u: (self._labels.get(u, DEFAULT_GROUP), group) for u in units},
            note_changes={},
            description=f"Labelled {', '.join(map(str, units))} as {group}",
        )
        return self._do(step, [], {"op": "label", "units": units, "group": group})

    def set_labels(self, labels: Mapping[int, str], description: str | None = None) -> ChangeRecord:
        """Set the groups of many units in one action (one undo), e.g. accepting suggested labels."""
        changes = {}
        for unit, group in labels.items():
            _check_group(group)
            unit = self._existing_unit(unit)
            changes[unit] = (self._labels.get(unit, DEFAULT_GROUP), group)
        if not changes:
            raise CurationError("no unit given")
        units = sorted(changes)
        step = _Step(
            op="labels",
            added=(),
            deleted=(),
            label_changes=changes,
            note_changes={},
            description=description or f"Labelled {len(units)} units: {_short_list(np.array(units))}",
        )
        entry = {"op": "labels", "labels": {str(u): changes[u][1] for u in units}, "description": step.description}
        return self._do(step, [], entry)

    def reject_suggestion(self, unit_a: int, unit_b: int) -> ChangeRecord:
        """Remember that units `unit_a` and `unit_b` are not to be suggested for merging (undoable)."""
        units = self._existing_units([unit_a, unit_b])
        if len(units) != 2:
            raise CurationError(f"a suggestion pairs two different units, got {unit_a} and {unit_b}")
        pair = (units[0], units[1])
        if pair in self._rejected:
            raise CurationError(f"the suggestion to merge {pair[0]} and {pair[1]} was rejected already")
        step = _Step(
            op="reject",
            added=(),
            deleted=(),
            label_changes={},
            note_changes={},
            description=f"Rejected merging {pair[0]} and {pair[1]}",
            rejections=(pair,),
        )
        return self._do(step, [], {"op": "reject", "units": list(pair)})

    def set_note(self, unit_id: int, text: str) -> ChangeRecord:
        """Attach a free-text note to a unit; an empty text clears it."""
        unit = self._existing_unit(unit_id)
        if not isinstance(text, str):
            raise CurationError(f"a note must be a string, got {type(text).__name__}")
        description = f"Note on {unit}: {text!r}" if text else f"Cleared the note on {unit}"
        step = _Step(
            op="note",
            added=(),
            deleted=(),
            label_changes={},
            note_changes={unit: (self._notes.get(unit, ""), text)},
            description=description,
        )
        return self._do(step, [], {"op": "note", "unit": unit, "text": text})

    def undo(self) -> ChangeRecord:
        if not self._undo_stack:
            raise CurationError("nothing to undo")
        self._write_journal({"op": "undo"})
        step = self._undo_stack.pop()
        self._apply(step, forward=False)
        self._redo_stack.append(step)
        return self._notify(
            ChangeRecord(
                op=step.op,
                added=list(step.deleted),
                deleted=list(step.added),
                relabelled=step.touched,
                description=f"Undid: {step.description}",
                undone=True,
            )
        )

    def redo(self) -> ChangeRecord:
        if not self._redo_stack:
            raise CurationError("nothing to redo")
        self._write_journal({"op": "redo"})
        step = self._redo_stack.pop()
        self._apply(step, forward=True)
        self._undo_stack.append(step)
        return self._notify(
            ChangeRecord(
                op=step.op,
                added=list(step.added),
                deleted=list(step.deleted),
                relabelled=step.touched,
                description=f"Redid: {step.description}",
                redone=True,
            )
        )

    # ------------------------------------------------------------------ internals

    def _recluster_with_assignment(self, unit: int, assignment: np.ndarray) -> ChangeRecord:
        unit = self._existing_unit(unit)
        spikes = self._spikes_by_unit[unit]
        if len(assignment) != len(spikes):
            raise CurationError(f"unit {unit} has {len(spikes)} spikes but {len(assignment)} assignments")
        # Renumber clusters 0..n-1, dropping any that k-means left empty.
        clusters, assignment = np.unique(assignment, return_inverse=True)
        if len(clusters) < 2:
            raise CurationError(f"every spike of unit {unit} fell in one cluster: nothing to split")
        new_units = [
            _NewUnit(self._next_unit_id + i, spikes[assignment == i], (unit,)) for i in range(len(clusters))
        ]
        new_ids = ", ".join(str(u.unit_id) for u in new_units)
        description = f"Reclustered {unit} into {len(new_units)}: {new_ids}"
        return self._do_topology(
            "recluster", new_units, [unit], description, {"unit": unit}, payload=assignment.astype(np.int32)
        )

    def _do_topology(
        self,
        op: str,
        new_units: list[_NewUnit],
        deleted: list[int],
        description: str,
        entry_fields: dict,
        payload: np.ndarray | None = None,
    ) -> ChangeRecord:
        step = _Step(
            op=op,
            added=tuple(u.unit_id for u in new_units),
            deleted=tuple(deleted),
            label_changes={},
            note_changes={},
            description=description,
        )
        entry = {"op": op, **entry_fields, "added": list(step.added)}
        return self._do(step, new_units, entry, payload)

    def _do(
        self, step: _Step, new_units: list[_NewUnit], entry: dict, payload: np.ndarray | None = None
    ) -> ChangeRecord:
        # Journal first: if the disk write fails, memory is left untouched.
        self._write_journal(entry, payload)
        for new_unit in new_units:
            new_unit.spikes.flags.writeable = False
            self._spikes_by_unit[new_unit.unit_id] = new_unit.spikes
            self._labels[new_unit.unit_id] = self._inherited_label(new_unit.parents)
            self._next_unit_id = max(self._next_unit_id, new_unit.unit_id + 1)
        self._apply(step, forward=True)
        self._undo_stack.append(step)
        self._redo_stack.clear()
        return self._notify(
            ChangeRecord(
                op=step.op,
                added=list(step.added),
                deleted=list(step.deleted),
                relabelled=step.touched,
                description=step.description,
            )
        )

    def _apply(self, step: _Step, forward: bool) -> None:
        retired, revived = (step.deleted, step.added) if forward else (step.added, step.deleted)
        self._alive.difference_update(retired)
        for unit in revived:
            # The revived units own exactly the spikes of the retired ones.
            self._spike_clusters[self._spikes_by_unit[unit]] = unit
            self._alive.add(unit)
        for unit, (before, after) in step.label_changes.items():
            self._labels[unit] = after if forward else before
        for unit, (before, after) in step.note_changes.items():
            self._notes[unit] = after if forward else before
        if forward:
            self._rejected.update(step.rejections)
        else:
            self._rejected.difference_update(step.rejections)
        self._sorted_unit_ids = None

    def _inherited_label(self, parents: tuple[int, ...]) -> str:
        """A new unit keeps the label its parents agree on, else it is unsorted."""
        parent_labels = {self._labels.get(p, DEFAULT_GROUP) for p in parents}
        return parent_labels.pop() if len(parent_labels) == 1 else DEFAULT_GROUP

    def _write_journal(self, entry: dict, payload: np.ndarray | None = None) -> None:
        if self._closed:
            raise CurationError("this curation is closed; reopen the session to continue")
        if self._read_only_reason is not None:
            raise CurationError(f"read-only: {self._read_only_reason}")
        if self._journal is not None:
            self._journal.append(entry, payload)

    def _notify(self, record: ChangeRecord) -> ChangeRecord:
        for listener in list(self._listeners):
            listener(record)
        return record

    def _replay(self, entries: list[dict], journal: Journal) -> None:
        """Redo the journaled actions in memory (nothing is written meanwhile)."""
        for entry in entries:
            op = entry["op"]
            try:
                if op == "merge":
                    record = self.merge(entry["units"])
                elif op == "split":
                    record = self.split(journal.load_payload(entry))
                elif op == "recluster":
                    record = self._recluster_with_assignment(entry["unit"], journal.load_payload(entry))
                elif op == "label":
                    record = self.label(entry["units"], entry["group"])
                elif op == "labels":
                    labels = {int(u): g for u, g in entry["labels"].items()}
                    record = self.set_labels(labels, entry.get("description"))
                elif op == "reject":
                    record = self.reject_suggestion(*entry["units"])
                elif op == "note":
                    record = self.set_note(entry["unit"], entry["text"])
                elif op == "undo":
                    record = self.undo()
                elif op == "redo":
                    record = self.redo()
                else:
                    raise _unreplayable(journal, entry, f"unknown action {op!r}")
            except (CurationError, KeyError) as exc:
                raise _unreplayable(journal, entry, f"it cannot be replayed: {exc!r}") from exc
            if "added" in entry and record.added != entry["added"]:
                raise _unreplayable(
                    journal, entry, f"it recorded new units {entry['added']} but replaying it made {record.added}"
                )


    def _existing_unit(self, unit_id: int) -> int:
        if not _is_single_id(unit_id):
            raise CurationError(f"a unit id must be an integer, got {unit_id!r}")
        unit = int(unit_id)
        if unit not in self._alive:
            raise CurationError(
                f"unit {unit} does not exist (now); current units: {_short_list(self.unit_ids)}"
            )
        return unit

    def _existing_units(self, unit_ids: int | Iterable[int]) -> list[int]:
        """Sorted, de-duplicated current unit ids; refuses an empty list."""
        if not isinstance(unit_ids, Iterable):
            unit_ids = [unit_ids]
        units = sorted({self._existing_unit(u) for u in unit_ids})
        if not units:
            raise CurationError("no unit given")
        return units


def _unreplayable(journal: Journal, entry: dict, why: str) -> JournalCorruptError:
    seq = entry["seq"]
    path = journal_path(journal.session_folder)
    return JournalCorruptError(
        f"{path} line {seq + 1}, action {seq} ({entry.get('op')}): {why}. "
        f"The {seq - 1} actions before it are intact.",
        path, seq + 1, seq - 1,
    )


def _index_by_unit(spike_clusters: np.ndarray) -> dict[int, np.ndarray]:
    """unit -> (n_unit_spikes,) int64 ascending spike indices, read-only views."""
    order, units, bounds = group_by_unit(spike_clusters)  # order: grouped by unit, ascending within
    order.flags.writeable = False
    return {unit: order[a:b] for unit, a, b in zip(units.tolist(), bounds[:-1].tolist(), bounds[1:].tolist())}


def _is_single_id(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise CurationError(f"unknown label {group!r}; use one of {', '.join(GROUPS)}")


def _digest(spike_units: np.ndarray) -> str:
    return hashlib.blake2b(spike_units.astype("<i8").tobytes(), digest_size=16).hexdigest()


def _short_list(ids: np.ndarray, limit: int = 12) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f", … ({len(ids)} in all)" if len(ids) > limit else "")
