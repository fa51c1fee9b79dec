"""SpikeInterface's curation format: export a curation as its JSON, import one as curation actions.

SpikeInterface's format (spikeinterface.curation.curation_model, version 2)
describes labels, removed units, merges and splits relative to a sort's
units, and `spikeinterface.curation.apply_curation` replays it. A curation
here is a history of merges and splits that may build on each other (a unit
split, then one half merged elsewhere), which one SpikeInterface step cannot
say, so the export compares where every spike started with where it is now
and writes up to three steps, a list that apply_curation runs in order:

1. splits: every starting unit whose spikes now lie in several units;
2. merges: every current unit made of spikes from several starting units;
3. labels (one exclusive "quality" label per unit) and, if asked, removal of
   the units labelled noise.

A single step is written as a plain object. New ids are written explicitly,
so SpikeInterface's units carry our ids; the one exception is a unit whose
spikes all came back together under a new id (split, then merged back): it
is one starting unit, unchanged, and keeps that unit's id.

Importing applies a file's steps to a `Curation` as ordinary, journaled
actions (labels, then merges, then splits, as apply_curation orders them);
"removed" units are labelled noise, since a curation here never deletes
spikes. Ids in the file name the curation's current units.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from engine.curation.model import DEFAULT_GROUP, GROUPS, ChangeRecord, Curation, CurationError
from engine.io.atomic import write_text_atomic

FORMAT_VERSION = "2"
LABEL_KEY = "quality"  # the label definition our groups are written under


class CurationFormatError(ValueError):
    """A SpikeInterface curation file that cannot be applied to this curation."""


# ---- export ------------------------------------------------------------------------------------
def export_spikeinterface_curation(
    curation: Curation, starting_units: np.ndarray, remove_noise: bool = False
) -> dict | list[dict]:
    """The curation as SpikeInterface curation steps, relative to `starting_units`.

    `starting_units`: (n_spikes,) the unit of each spike in the sort the file
    will be applied to (the phy folder's clusters before this curation).
    """
    start = np.asarray(starting_units, dtype=np.int64)
    now = np.asarray(curation.spike_clusters, dtype=np.int64)
    if start.shape != now.shape:
        raise CurationFormatError(f"the starting units cover {len(start)} spikes, the curation {len(now)}")
    start_ids = np.unique(start)
    # Each (starting unit, current unit) piece of the sort, and its spikes' positions in the starting unit.
    pieces: dict[int, dict[int, np.ndarray]] = {}
    for unit in start_ids.tolist():
        spikes = np.flatnonzero(start == unit)  # ascending = the unit's spike train order
        destinations = now[spikes]
        pieces[unit] = {int(f): np.flatnonzero(destinations == f) for f in np.unique(destinations)}
    sources: dict[int, list[int]] = {}
    for unit, destinations in pieces.items():
        for final in destinations:
            sources.setdefault(final, []).append(unit)

    next_free = int(max(start_ids.max(initial=-1), now.max(initial=-1))) + 1
    piece_id: dict[tuple[int, int], int] = {}  # (starting unit, current unit) -> its id after the splits
    splits = []
    for unit, destinations in pieces.items():
        if len(destinations) == 1:
            piece_id[unit, next(iter(destinations))] = unit
            continue
        new_ids = []
        for final in destinations:
            if sources[final] == [unit]:
                piece_id[unit, final] = final
            else:
                piece_id[unit, final] = next_free
                next_free += 1
            new_ids.append(piece_id[unit, final])
        splits.append({
            "unit_id": unit,
            "mode": "indices",
            "indices": [positions.tolist() for positions in destinations.values()],
            "new_unit_ids": new_ids,
        })
    after_splits = sorted(piece_id.values())

    merges = []
    exported_id: dict[int, int] = {}  # current unit -> its id in SpikeInterface after every step
    for final, units in sorted(sources.items()):
        members = [piece_id[unit, final] for unit in units]
        if len(members) > 1:
            merges.append({"unit_ids": members, "new_unit_id": final})
            exported_id[final] = final
        else:
            exported_id[final] = members[0]
    final_ids = sorted(exported_id.values())

    labels = curation.labels
    manual_labels = [
        {"unit_id": exported_id[unit], "labels": {LABEL_KEY: [group]}}
        for unit, group in sorted(labels.items())
        if group != DEFAULT_GROUP
    ]
    removed = sorted(exported_id[u] for u, g in labels.items() if g == "noise") if remove_noise else []
    steps = []
    if splits:
        steps.append(_step(start_ids.tolist(), splits=splits))
    if merges:
        steps.append(_step(after_splits if splits else start_ids.tolist(), merges=merges))
    label_step = _step(final_ids, manual_labels=manual_labels, removed=removed)
    if not steps or manual_labels or removed:
        steps.append(label_step)
    return steps[0] if len(steps) == 1 else steps


def _step(unit_ids, merges=(), splits=(), manual_labels=(), removed=()) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "unit_ids": [int(u) for u in unit_ids],
        "label_definitions": {LABEL_KEY: {"name": LABEL_KEY, "label_options": list(GROUPS), "exclusive": True}},
        "manual_labels": list(manual_labels),
        "merges": list(merges),
        "splits": list(splits),
        "removed": [int(u) for u in removed],
    }


def write_curation_json(path: str | os.PathLike, curation_steps: dict | list) -> Path:
    path = Path(path)
    write_text_atomic(path, json.dumps(curation_steps, indent=1) + "\n")
    return path


# ---- import -----------------------------------------------------------------------------------------
def read_curation_json(path: str | os.PathLike) -> list[dict]:
    """The steps of a SpikeInterface curation file (one object, or a list of them)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CurationFormatError(f"{path} is not a readable JSON file: {error}") from error
    steps = data if isinstance(data, list) else [data]
    for number, step in enumerate(steps, start=1):
        if not isinstance(step, Mapping) or str(step.get("format_version")) not in ("1", "2"):
            raise CurationFormatError(
                f"{path}: step {number} is not a SpikeInterface curation (format_version 1 or 2 expected, "
                f"got {step.get('format_version') if isinstance(step, Mapping) else type(step).__name__})"
            )
        if str(step["format_version"]) == "1":
            raise CurationFormatError(
                f"{path} uses SpikeInterface's old curation format 1; load and save it with "
                "spikeinterface.curation (which converts it to format 2) first"
            )
    return steps


def apply_spikeinterface_curation(curation: Curation, steps: list[dict] | dict) -> list[ChangeRecord]:
    """Apply SpikeInterface curation steps to `curation` as journaled actions; returns their records.

    The whole file is first tried on a copy, so a file that does not fit
    (an unknown unit, a bad split) changes nothing and says what is wrong.
    """
    steps = steps if isinstance(steps, list) else [steps]
    trial = Curation(curation.spike_clusters.copy(), curation.labels, min_new_unit_id=curation.next_unit_id)
    try:
        _apply(trial, steps)
    except (CurationError, KeyError, TypeError, ValueError, IndexError) as error:
        raise CurationFormatError(f"the curation file does not fit this sort: {error}") from error
    return _apply(curation, steps)


def _apply(curation: Curation, steps: list[dict]) -> list[ChangeRecord]:
    records = []
    ours = {int(u): int(u) for u in curation.unit_ids}  # the file's unit ids -> ours
    for step in steps:
        current = set(curation.unit_ids.tolist())
        unknown = [u for u in step["unit_ids"] if ours.get(int(u)) not in current]
        if unknown:
            raise CurationError(f"units {unknown[:10]} of the file are not current units of this curation")
        labels = {}
        for entry in step.get("manual_labels") or []:
            groups = [value for values in entry["labels"].values() for value in values if value in GROUPS]
            if groups:
                labels[ours[int(entry["unit_id"])]] = groups[0]
        for unit in step.get("removed") or []:
            labels[ours[int(unit)]] = "noise"
        if labels:
            records.append(curation.set_labels(labels, f"Imported labels of {len(labels)} units"))
        for merge in step.get("merges") or []:
            record = curation.merge([ours[int(u)] for u in merge["unit_ids"]])
            records.append(record)
            if merge.get("new_unit_id") is not None:
                ours[int(merge["new_unit_id"])] = record.added[0]
        for split in step.get("splits") or []:
            records.extend(_split(curation, split, ours))
    return records


def _split(curation: Curation, split: Mapping, ours: dict[int, int]) -> list[ChangeRecord]:
    unit = ours[int(split["unit_id"])]
    spikes = curation.spikes_of(unit)  # in the unit's spike train order
    if split.get("mode", "indices") == "labels":
        assignment = np.asarray(split["labels"])
        if len(assignment) != len(spikes):
            raise CurationError(f"the split of unit {split['unit_id']} labels {len(assignment)} spikes, it has {len(spikes)}")
        groups = [np.flatnonzero(assignment == label) for label in np.unique(assignment)]
    else:
        groups = [np.asarray(indices, dtype=np.int64) for indices in split["indices"]]
        rest = np.setdiff1d(np.arange(len(spikes)), np.concatenate(groups) if groups else [])
        if len(rest):
            groups.append(rest)
    new_ids = list(split.get("new_unit_ids") or [])
    new_ids += [None] * (len(groups) - len(new_ids))
    records = []
    for number, group in enumerate(groups[:-1]):
        record = curation.split(spikes[group])
        records.append(record)
        if new_ids[number] is not None:
            ours[int(new_ids[number])] = record.added[0]
    if records and new_ids[-1] is not None:
        # What the last split left is the last group.
        ours[int(new_ids[-1])] = records[-1].added[-1]
    return records
