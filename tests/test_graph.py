"""Graph components in numpy (:mod:`slidemask.kernels.graph`) against scipy's."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from slidemask.kernels.graph import graph_components


def _scipy(n: int, u: np.ndarray, v: np.ndarray) -> tuple[int, np.ndarray]:
    graph = coo_matrix((np.ones(len(u), np.int8), (u, v)), shape=(n, n))
    count, comp = connected_components(graph, directed=False)
    return int(count), comp


@st.composite
def graphs(draw: st.DrawFn) -> tuple[int, np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 60))
    if n == 0:
        return 0, np.zeros(0, np.int64), np.zeros(0, np.int64)
    kind = draw(st.sampled_from(["random", "path", "star"]))
    if kind == "path":  # a chain in a drawn order: the longest run of hooks
        order = np.array(draw(st.permutations(range(n))), np.int64)
        return n, order[:-1], order[1:]
    if kind == "star":
        centre = draw(st.integers(0, n - 1))
        leaves = np.arange(n, dtype=np.int64)
        return n, np.full(n, centre, np.int64), leaves
    edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                          max_size=2 * n))
    u = np.array([a for a, _ in edges], np.int64)
    v = np.array([b for _, b in edges], np.int64)
    return n, u, v


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_graph_components_equal_scipy_with_its_numbering(
    graph: tuple[int, np.ndarray, np.ndarray],
) -> None:
    n, u, v = graph
    count, comp = graph_components(n, u, v)
    expected_count, expected = _scipy(n, u, v)
    assert count == expected_count
    np.testing.assert_array_equal(comp, expected)
    assert comp.dtype == np.int64


def test_graph_components_on_a_large_shuffled_chain() -> None:
    rng = np.random.default_rng(7)
    order = rng.permutation(200_000)
    count, comp = graph_components(200_001, order[:-1], order[1:])
    assert count == 2  # the chain, and node 200000 alone
    assert comp[200_000] == 1 and not comp[:200_000].any()
