"""Is `--out` a folder a sort may be written to? Checked before any training.

A sort replaces its output folder whole. That is what a person wants when the
folder holds an earlier sort, and a disaster when it holds their curation
(phy's labels and merges, our journal) or files of their own. So the folder is
looked at first: leftovers of an export that was killed are recovered, the
work that replacing it would lose is named (and refused unless the person
says `overwrite`), and the place is tried for writing, so that a read-only
disk fails now rather than after an hour of training.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from engine.curation.journal import JOURNAL_FILENAME, PAYLOAD_FOLDER
from engine.curation.lock import LOCK_FILENAME, FolderLock, FolderLockedError
from engine.io.phy import (PARAMS_FILE, SORT_LABELS_FILE, PhyFolderError, read_cluster_groups, read_sort_labels,
                           recover_interrupted_export)

# What a sort writes (export_phy, the CLI) and what phy adds: replacing these loses nothing.
REGENERATED = {
    PARAMS_FILE, "spike_times.npy", "spike_templates.npy", "spike_clusters.npy", "amplitudes.npy",
    "templates.npy", "templates_ind.npy", "channel_map.npy", "channel_positions.npy", "similar_templates.npy",
    "whitening_mat.npy", "whitening_mat_inv.npy", "cluster_group.tsv", "cluster_info.tsv", "recording.dat",
    "crsae_checkpoint.pt", "sparsort.json", ".phy", "phy.log", SORT_LABELS_FILE,
}
UNLABELLED = "unsorted"


class OutputFolderError(ValueError):
    """`--out` cannot be written, or writing it would destroy work; the message says which and what to do."""


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool = False, keep: str | os.PathLike | None = None) -> list[str]:
    """Refuse an output folder that cannot be written or holds work; returns what was recovered.

    `keep`: a file inside the folder the new sort carries over (the recording
    being sorted), so not lost. Raises OutputFolderError.
    """
    out_dir = Path(out_dir).resolve()
    notes = recover_interrupted_export(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"--out {out_dir} is a file, not a folder: choose a folder")
    if (out_dir / LOCK_FILENAME).exists():
        # Not even --overwrite: the folder would vanish under a curation still writing to it.
        try:
            FolderLock.acquire(out_dir).release()
        except FolderLockedError as error:
            raise OutputFolderError(f"--out {out_dir} is open for curation: {error}") from error
    if out_dir.is_dir() and not overwrite:
        lost = work_that_would_be_lost(out_dir, keep)
        if lost:
            raise OutputFolderError(
                f"--out {out_dir} holds work that writing the sort there would delete: {'; '.join(lost)}. "
                "Choose another --out folder, or pass --overwrite to replace it anyway."
            )
    _check_writable(out_dir)
    return notes


def work_that_would_be_lost(folder: Path, keep: str | os.PathLike | None = None) -> list[str]:
    """One phrase per kind of work in `folder` that a new sort would not write again."""
    lost = []
    journal = folder / JOURNAL_FILENAME
    if journal.exists():
        n_actions = max(journal.read_bytes().count(b"\n") - 1, 0)
        lost.append(f"the curation journal {JOURNAL_FILENAME} ({n_actions} actions) and {PAYLOAD_FOLDER}/")
    if (folder / "cluster_group.tsv").exists():
        try:
            groups = read_cluster_groups(folder)
        except PhyFolderError:
            lost.append("cluster_group.tsv (unreadable, so its labels cannot be checked)")
        else:
            # The sort's own labels (its residual units as noise) are written again by the next sort.
            by_sort = read_sort_labels(folder)
            labelled = sum(group != UNLABELLED and group != by_sort.get(cluster) for cluster, group in groups.items())
            if labelled:
                lost.append(f"the labels of {labelled} cluster{'s' if labelled != 1 else ''} in cluster_group.tsv")
    if _clusters_differ_from_templates(folder):
        lost.append("merges or splits saved in spike_clusters.npy")
    keep = Path(keep).resolve() if keep is not None else None
    ours = REGENERATED | {JOURNAL_FILENAME, PAYLOAD_FOLDER, "curation_start.npy", LOCK_FILENAME}
    others = sorted(
        entry.name for entry in folder.iterdir()
        if entry.name not in ours and (keep is None or entry.resolve() != keep)
    )
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        lost.append(f"files a sort does not write: {shown}")
    return lost


def _clusters_differ_from_templates(folder: Path) -> bool:
    try:
        clusters = np.load(folder / "spike_clusters.npy", mmap_mode="r", allow_pickle=False)
        templates = np.load(folder / "spike_templates.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return clusters.shape != templates.shape or not np.array_equal(clusters, templates)


def _check_writable(out_dir: Path) -> None:
    # The export builds the new folder beside `out_dir` and renames it in, so
    # it is the parent that must take new entries.
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=f".{out_dir.name}.write-test-", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputFolderError(
            f"cannot write the sort to --out {out_dir}: {parent} does not take new files "
            f"({error.strerror or error}). Choose a folder you can write to."
        ) from error
