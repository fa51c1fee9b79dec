"""`sparsort sort --out` never destroys work, fails before training, and recovers killed exports."""

import errno
import os

import numpy as np
import pytest

import engine.pipeline.run as pipeline_run
from engine.cli import main
from engine.io.output_folder import OutputFolderError, check_output_folder
from engine.io.phy import export_phy, load_phy, recover_interrupted_export
from engine.pipeline.sorting import Sorting


@pytest.fixture
def no_training(monkeypatch):
    """A SortPipeline that fails the test if anything gets as far as building one."""

    class Forbidden:
        def __init__(self, *args, **kwargs):
            raise AssertionError("training started before the output folder was checked")

    monkeypatch.setattr(pipeline_run, "SortPipeline", Forbidden)


def small_sorting(n_spikes=20) -> Sorting:
    return Sorting(
        spike_times=np.arange(n_spikes, dtype=np.int64) * 100,
        spike_units=np.arange(n_spikes) % 2,
        amplitudes=np.ones(n_spikes),
        templates=np.random.default_rng(0).normal(size=(2, 12, 1)).astype(np.float32),
        sampling_rate=10_000.0,
    )


def curated_folder(root):
    folder = export_phy(small_sorting(), root / "sorted")
    (folder / "curation.jsonl").write_text('{"format":"sparsort-curation-journal"}\n{"seq":1,"op":"merge"}\n')
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n0\tgood\n1\tnoise\n")
    (folder / "notes.txt").write_text("unit 3 looks like two neurons")
    return folder


def test_sort_refuses_a_curated_folder_before_training(tmp_path, capsys, no_training):
    folder = curated_folder(tmp_path)
    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}

    assert main(["sort", "--demo", "--out", str(folder), "--quiet"]) == 2

    message = capsys.readouterr().err
    for named in ("curation.jsonl (1 actions)", "labels of 2 clusters in cluster_group.tsv", "notes.txt", "--overwrite"):
        assert named in message
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()} == before


def test_merges_saved_by_phy_count_as_work(tmp_path):
    folder = export_phy(small_sorting(), tmp_path / "sorted")
    np.save(folder / "spike_clusters.npy", np.full(20, 2, dtype=np.int32))  # phy merged 0 and 1 into 2
    with pytest.raises(OutputFolderError, match="merges or splits saved in spike_clusters.npy"):
        check_output_folder(folder)


def test_an_uncurated_sort_is_replaced_and_overwrite_replaces_curation(tmp_path):
    plain = export_phy(small_sorting(), tmp_path / "plain")
    assert check_output_folder(plain) == []
    assert check_output_folder(curated_folder(tmp_path), overwrite=True) == []


def test_the_recording_inside_the_folder_is_not_counted_as_lost(tmp_path):
    folder = export_phy(small_sorting(), tmp_path / "sorted")
    (folder / "continuous.dat").write_bytes(b"\0" * 40)
    check_output_folder(folder, keep=folder / "continuous.dat")
    with pytest.raises(OutputFolderError, match="continuous.dat"):
        check_output_folder(folder)


def test_an_unwritable_place_fails_before_training_naming_it(tmp_path, capsys, monkeypatch, no_training):
    # Tests may run as root, which chmod does not stop: the file system's refusal is simulated.
    target = tmp_path / "readonly" / "out"

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("engine.io.output_folder.tempfile.mkstemp", refuse)
    assert main(["sort", "--demo", "--out", str(target), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert str(target) in message and "Read-only file system" in message and "Choose a folder" in message


def test_sort_writes_its_own_files_before_the_folder_appears(tmp_path, monkeypatch):
    """crsae_checkpoint.pt and sparsort.json are in the folder the moment it is renamed into place."""
    seen = {}
    real_rename = os.rename

    def watching_rename(source, target):
        if str(target).endswith("sorted") and ".partial-" in str(source):
            seen["files"] = sorted(os.listdir(source))
        return real_rename(source, target)

    monkeypatch.setattr("engine.io.phy.os.rename", watching_rename)
    sorting = small_sorting()
    export_phy(sorting, tmp_path / "sorted", before_swap=lambda staging: (staging / "sparsort.json").write_text("{}"))
    assert "sparsort.json" in seen["files"] and "params.py" in seen["files"]


# ---- an export killed at each point, and the next run -------------------------------------------


def make_leftover(folder, role):
    leftover = folder.parent / f".{folder.name}.{role}-{role}1234"
    leftover.mkdir()
    return leftover


def test_killed_between_the_two_renames_the_previous_folder_is_restored(tmp_path):
    folder = export_phy(small_sorting(), tmp_path / "sorted")
    aside = folder.parent / f".{folder.name}.old-1234"
    os.rename(folder, aside)  # the first rename: the previous folder moved aside
    partial = make_leftover(folder, "partial")
    (partial / "params.py").write_text("sample_rate = 1.0\n")

    messages = recover_interrupted_export(folder)

    assert load_phy(folder).spike_times.tolist() == small_sorting().spike_times.tolist()
    assert not aside.exists() and not partial.exists()
    assert any("restored" in m and aside.name in m for m in messages)
    assert any("deleted" in m and partial.name in m for m in messages)


def test_killed_while_deleting_the_previous_folder_the_remains_are_deleted(tmp_path):
    folder = export_phy(small_sorting(), tmp_path / "sorted")
    half_deleted = make_leftover(folder, "old")
    (half_deleted / "templates.npy").write_bytes(b"x")

    messages = recover_interrupted_export(folder)

    assert not half_deleted.exists() and (folder / "params.py").exists()
    assert len(messages) == 1 and half_deleted.name in messages[0]


def test_an_empty_partial_folder_is_deleted_and_the_cli_says_so(tmp_path, capsys, no_training):
    folder = tmp_path / "sorted"
    partial = make_leftover(folder, "partial")
    with pytest.raises(AssertionError, match="training started"):
        main(["sort", "--demo", "--out", str(folder)])
    assert not partial.exists()
    assert f"deleted {partial.name}" in capsys.readouterr().err


def test_export_recovers_leftovers_with_a_warning(tmp_path):
    folder = tmp_path / "sorted"
    partial = make_leftover(folder, "partial")
    with pytest.warns(RuntimeWarning, match="unfinished folder"):
        export_phy(small_sorting(), folder)
    assert not partial.exists() and load_phy(folder).sampling_rate == 10_000.0


def test_a_folder_open_for_curation_is_refused_even_with_overwrite(tmp_path):
    from engine.curation.lock import FolderLock

    folder = export_phy(small_sorting(), tmp_path / "sorted")
    with FolderLock.acquire(folder):
        with pytest.raises(OutputFolderError, match="is open for curation: .* is being curated by process"):
            check_output_folder(folder, overwrite=True)
    assert check_output_folder(folder, overwrite=True) == []
