"""Units that only code what bigger neighbours' spikes leave are labelled noise; real neurons are not."""

import numpy as np

from app.curation_controller import starting_units
from engine.io.output_folder import work_that_would_be_lost
from engine.io.phy import export_phy, load_phy, read_cluster_groups, read_sort_labels
from engine.pipeline.residual_units import RESIDUAL_LABEL, find_residual_units, label_residual_units
from engine.pipeline.sorting import Sorting

RATE = 30_000.0
DURATION = 300 * 30_000
WINDOW = 30  # 1 ms
OFFSETS = (-600, -300, 300, 600)
N_CHANNELS = 8


def poisson_times(rng, rate_hz: float) -> np.ndarray:
    n = rng.poisson(rate_hz * DURATION / RATE)
    times = np.unique(rng.integers(0, DURATION, n))
    # A refractory period, as a neuron has: no two spikes within 1.5 ms.
    keep = np.concatenate([[True], np.diff(times) > 45])
    return times[keep]


def build_sorting(trains: list[np.ndarray], sizes: list[float], rng) -> Sorting:
    times = np.concatenate(trains)
    units = np.concatenate([np.full(len(t), k) for k, t in enumerate(trains)])
    amplitudes = np.concatenate([size * (1 + 0.1 * rng.standard_normal(len(t))) for size, t in zip(sizes, trains)])
    return Sorting(times, units, amplitudes, np.zeros((len(trains), 10, N_CHANNELS), np.float32), RATE,
                   filter_index=np.arange(len(trains)), code_amplitudes=amplitudes)


def probe_with_a_residual_unit(rng):
    """Units 0, 1: big neurons; 2: a filter coding what both leave, 0.7 ms after 0's and 0.5 ms before 1's
    spikes; 3: a small neuron of its own, firing at random, on the same channels; 4: a unit like 2 on channels
    no bigger unit reaches."""
    big_a, big_b = poisson_times(rng, 15), poisson_times(rng, 12)
    residual = np.unique(np.concatenate([big_a[::2] + 21, big_b[::2] - 15]))
    small = poisson_times(rng, 10)
    far = np.unique(big_a[1::2] + 21)
    sorting = build_sorting([big_a, big_b, residual, small, far], [60.0, 45.0, 9.0, 9.0, 9.0], rng)
    mask = np.zeros((5, N_CHANNELS), bool)
    mask[:4, :4] = True
    mask[4, 5:] = True
    return sorting, mask


def test_a_unit_beside_bigger_neighbours_spikes_is_residual_and_a_neuron_of_its_own_is_not():
    sorting, mask = probe_with_a_residual_unit(np.random.default_rng(0))

    residual, near, chance = find_residual_units(sorting, mask, WINDOW, OFFSETS)

    assert residual.tolist() == [2]
    assert near[2] == 1.0 and chance[2] < 0.2
    assert abs(near[3] - chance[3]) < 0.05  # a neuron of its own sits beside bigger spikes by chance only
    assert near[4] == 0.0  # its hosts share no channel with it: nothing to be a residual of


def test_a_small_neuron_on_a_busy_probe_is_beside_bigger_spikes_by_chance_and_stays():
    rng = np.random.default_rng(1)
    # Thirteen big neighbours at 100 Hz: a random time has one within 1 ms 93 % of the time.
    trains = [poisson_times(rng, 100) for _ in range(13)] + [poisson_times(rng, 10)]
    sorting = build_sorting(trains, [50.0] * 13 + [8.0], rng)
    mask = np.ones((14, N_CHANNELS), bool)

    residual, near, chance = find_residual_units(sorting, mask, WINDOW, OFFSETS)

    assert near[13] >= 0.9  # over the bar by chance alone ...
    assert 13 not in residual.tolist()  # ... which the comparison with chance sees


def test_labelled_noise_on_export_and_where_a_curation_starts(tmp_path):
    sorting, mask = probe_with_a_residual_unit(np.random.default_rng(0))

    labelled, note = label_residual_units(sorting, mask, WINDOW, OFFSETS)
    folder = export_phy(labelled, tmp_path / "sorted")

    assert labelled.unit_groups == {2: RESIDUAL_LABEL} and labelled.sort_labels == {2: RESIDUAL_LABEL}
    assert note.startswith("labelled noise 1 residual units (2): 1.00 of their events beside bigger spikes, chance 0.")
    groups = read_cluster_groups(folder)
    assert groups[2] == "noise" and all(groups[u] == "unsorted" for u in (0, 1, 3, 4))
    assert read_sort_labels(folder) == {2: "noise"}
    # The app's curation of a fresh sort starts with the label, as does one of the folder it wrote.
    assert starting_units(labelled)[1] == {2: "noise"}
    reopened = load_phy(folder).to_sorting()
    assert starting_units(reopened)[1] == {2: "noise"} and reopened.sort_labels == {2: "noise"}
    # The sort's own label is not a person's work: sorting again into the folder loses nothing ...
    assert work_that_would_be_lost(folder) == []
    # ... but a person's label, even one the sort could give, is.
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n2\tnoise\n3\tnoise\n")
    assert work_that_would_be_lost(folder) == ["the labels of 1 cluster in cluster_group.tsv"]


def test_labels_a_person_gives_replace_the_sorts_when_exported(tmp_path):
    """A session's save passes the person's labels: a label they cleared does not come back from the sort."""
    sorting, mask = probe_with_a_residual_unit(np.random.default_rng(0))
    labelled, _ = label_residual_units(sorting, mask, WINDOW, OFFSETS)

    folder = export_phy(labelled, tmp_path / "session", cluster_groups={0: "good"})

    assert read_cluster_groups(folder) == {0: "good", 1: "unsorted", 2: "unsorted", 3: "unsorted", 4: "unsorted"}
    assert read_sort_labels(folder) == {2: "noise"}


def test_a_long_sort_is_judged_on_a_sample_of_each_units_events_with_the_same_verdict():
    from engine.pipeline.residual_units import queried_events

    sorting, mask = probe_with_a_residual_unit(np.random.default_rng(0))
    units = sorting.spike_units.astype(np.int64)
    queried = queried_events(units, sorting.n_units, max_per_unit=300)

    assert np.bincount(units[queried], minlength=5).max() == 300
    # Spread over the recording, not its first seconds.
    assert sorting.spike_times[queried[units[queried] == 0]].max() > 0.9 * sorting.spike_times.max()
    whole, near_whole, _ = find_residual_units(sorting, mask, WINDOW, OFFSETS)
    import engine.pipeline.residual_units as residual_units

    original = residual_units.MAX_QUERIED_EVENTS
    try:
        residual_units.MAX_QUERIED_EVENTS = 300
        sampled, near_sampled, _ = find_residual_units(sorting, mask, WINDOW, OFFSETS)
    finally:
        residual_units.MAX_QUERIED_EVENTS = original
    assert sampled.tolist() == whole.tolist() == [2]
    np.testing.assert_allclose(near_sampled, near_whole, atol=0.08)
