"""The working set's FISTA run block by block solves the same lasso as FISTA over the whole set."""

import numpy as np
import pytest
import scipy.sparse as sparse

from engine.model.block_fista import DENSE_FILL, fista_by_block, independent_blocks
from engine.model.crsae import CRsAE, fista
from engine.model.sparse_gram import coordinate_steps, sparse_gram
from engine.model.working_set import gram_tensor


def problem(seed=5):
    """A working set of three filters' codes in clusters far apart in time: several independent blocks."""
    rng = np.random.default_rng(seed)
    taps = np.arange(24.0)
    shapes = [-(taps - 8) * np.exp(-0.5 * ((taps - 8) / w) ** 2) for w in (2.0, 3.0, 2.5)]
    model = CRsAE(np.stack(shapes)[:, None, :] + 0.1 * rng.standard_normal((3, 1, 24)), 1.0)
    times = np.sort(np.concatenate([c + rng.choice(30, 8, replace=False) for c in (0, 200, 400, 1000, 1030)]))
    filters = rng.integers(0, 3, times.size)
    gram = sparse_gram(gram_tensor(model), filters, times)
    correlation = (gram @ rng.gamma(2.0, 3.0, times.size) * (rng.random(times.size) < 0.4)
                   + 0.3 * rng.standard_normal(times.size)).astype(np.float32)
    steps = coordinate_steps(gram)
    shrink = (np.full(times.size, 1.0) * steps).astype(np.float32)
    return gram, correlation, shrink, steps


def test_blocks_are_the_connected_groups_of_interacting_codes():
    gram = sparse.csr_matrix(np.array([[1, 0, 0.5, 0], [0, 1, 0, 0], [0.5, 0, 1, 0], [0, 0, 0, 1.0]]))
    order, starts = independent_blocks(gram)
    blocks = sorted(sorted(order[a:b].tolist()) for a, b in zip(starts[:-1], starts[1:]))
    assert blocks == [[0, 2], [1], [3]]
    # An entry in one direction only (a rounding's zero on the other side) joins the two as well.
    one_way = sparse.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1e-18, 0, 1.0]]))
    order, starts = independent_blocks(one_way)
    assert sorted(sorted(order[a:b].tolist()) for a, b in zip(starts[:-1], starts[1:])) == [[0], [1, 3], [2]]


def test_blocks_are_scipys_connected_components_on_a_big_sparse_gram():
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(9)
    n = 2_000
    upper = sparse.random(n, n, density=0.0006, random_state=rng, format="csr")
    gram = (upper + upper.T + sparse.identity(n)).tocsr()  # symmetric, as a Gram matrix is
    order, starts = independent_blocks(gram)
    n_blocks, labels = connected_components(gram, directed=False)
    assert len(starts) - 1 == n_blocks and 1 < n_blocks < n
    assert sorted(order.tolist()) == list(range(n))
    for a, b in zip(starts[:-1], starts[1:]):
        members = order[a:b]
        assert np.all(np.diff(members) > 0)  # increasing within a block
        assert np.all(labels[members] == labels[members[0]]) and np.sum(labels == labels[members[0]]) == b - a


# Every block on a dense copy of its Gram rows, every block on the sparse rows, and the default mix.
DENSE_FILLS = (0.0, 2.0, DENSE_FILL)


@pytest.mark.parametrize("dense_fill", DENSE_FILLS)
def test_fixed_steps_without_restart_are_fista_over_the_whole_set(dense_fill):
    """Without restarts the momentum sequence is the same in every block: the iterates must be FISTA's."""
    gram, correlation, shrink, steps = problem()
    start = np.zeros_like(correlation)
    assert len(independent_blocks(gram)[1]) - 1 >= 3  # the problem does split
    for n_steps in (1, 3, 40):
        whole = fista(correlation, lambda codes: gram @ codes, shrink, steps, n_steps, codes=start)
        blocks = fista_by_block(gram, correlation, shrink, steps, start, n_steps, tolerance=0.0, restart=False,
                                dense_fill=dense_fill)
        np.testing.assert_allclose(blocks, whole, atol=1e-4 * np.abs(whole).max())


@pytest.mark.parametrize("dense_fill", DENSE_FILLS)
def test_to_convergence_it_reaches_the_lasso_solution(dense_fill):
    """The converged codes meet the lasso's optimality conditions, as FISTA's run to convergence do."""
    gram, correlation, shrink, steps = problem()
    lambdas = shrink / steps
    codes = fista_by_block(gram, correlation, shrink, steps, np.zeros_like(correlation), 5000, tolerance=1e-6,
                           restart=True, dense_fill=dense_fill)
    gradient = correlation - gram @ codes
    on = codes > 0
    assert on.any() and (~on).any()
    np.testing.assert_allclose(gradient[on], lambdas[on], atol=1e-3)
    assert np.all(gradient[~on] <= lambdas[~on] + 1e-3)
    reference = fista(correlation, lambda c: gram @ c, shrink, steps, 20000, tolerance=1e-7, restart=True)
    np.testing.assert_allclose(codes, reference, atol=1e-3 * np.abs(reference).max())
