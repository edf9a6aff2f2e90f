"""Overlay graphs for the swarm as symmetric CSR adjacency (int32 indices), fast enough for 10^7 agents.

    >>> from plora.swarm.graphs import make_graph, graph_stats
    >>> g = make_graph("er", 1000, p=0.01, seed=0)
    >>> g.n, g.indices.dtype.name
    (1000, 'int32')
    >>> sorted(graph_stats(g))[:3]
    ['components', 'edges', 'isolated']

Generators (each takes a seed; the same seed gives the same graph):

* ``er``: Erdős–Rényi G(n, p). The edge count is drawn as Binomial(n(n-1)/2, p); then that many distinct pairs
  are drawn uniformly (pairs sampled with replacement, sorted, de-duplicated, and the surplus removed at random),
  which is exactly G(n, p) in distribution and costs O(M log M) for M edges, never O(n^2).
  Small graphs (at most 2 million pairs) draw one Bernoulli per pair instead.
* ``ws``: Watts–Strogatz (1998): a ring where each agent links its ``k/2`` nearest neighbours on each side, then
  each edge's far end is rewired with probability ``beta`` to a uniform agent. Self-loops and duplicate edges that
  rewiring creates are dropped (networkx resamples them instead; the difference is O(beta * k / n) edges).
* ``ba``: Barabási–Albert (1999) preferential attachment with ``m`` edges per new agent, by the linear-time
  Batagelj–Brandes (2005) edge-list copying method; repeated edges are merged.

Connected components use scipy.sparse.csgraph (Pearce/Tarjan, O(n + E)). The spectral gap ``1 - lambda_2`` of the
normalised adjacency ``D^-1/2 A D^-1/2`` on the largest component (equal to the second-smallest eigenvalue of the
normalised Laplacian) is computed with ARPACK (``eigsh``) when n <= 20,000 and omitted (None) above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plora.errors import PloraError

MAX_EDGES = 400_000_000  # 3.2 GB of int32 CSR indices: beyond this a flag is almost surely a mistake
SPECTRAL_MAX_N = 20_000
_DENSE_PAIRS = 2_000_000


@dataclass
class Graph:
    """An undirected simple graph as symmetric CSR: the neighbours of agent ``a`` are
    ``indices[indptr[a]:indptr[a + 1]]``, sorted ascending."""

    indptr: np.ndarray  # int64, n + 1
    indices: np.ndarray  # int32, 2 * edges
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    _components: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    @property
    def edges(self) -> int:
        return len(self.indices) // 2

    @property
    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr).astype(np.int32)

    def neighbours(self, a: int) -> np.ndarray:
        return self.indices[self.indptr[a] : self.indptr[a + 1]]

    def edge_list(self) -> np.ndarray:
        """(E, 2) array of edges (u < v)."""
        rows = np.repeat(np.arange(self.n, dtype=np.int32), np.diff(self.indptr))
        keep = rows < self.indices
        return np.stack([rows[keep], self.indices[keep]], axis=1)

    def components(self) -> tuple[int, np.ndarray]:
        """(number of components, int32 label per agent); computed once."""
        if self._components is None:
            self._components = _components(self)
        return self._components

    def to_scipy(self, dtype: Any = np.float64) -> Any:
        import scipy.sparse as sp

        data = np.ones(len(self.indices), dtype=dtype)
        return sp.csr_array((data, self.indices, self.indptr), shape=(self.n, self.n))


def _components(graph: Graph) -> tuple[int, np.ndarray]:
    # scipy's connected_components took 2-6 s at 10^6 agents here; one C breadth-first search from the
    # best-connected agent (which sits in the giant component) takes under 1 s, and the few agents it misses
    # form a small remainder graph
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    n = graph.n
    labels = np.full(n, -1, dtype=np.int32)
    if n == 0:
        return 0, labels
    adj = graph.to_scipy()
    order = breadth_first_order(adj, int(np.argmax(graph.degrees)), directed=True, return_predecessors=False)
    labels[order] = 0
    rest = np.flatnonzero(labels < 0)
    if len(rest) == 0:
        return 1, labels
    count, sub = connected_components(adj[rest][:, rest], directed=True, connection="weak")
    labels[rest] = sub + 1
    return int(count) + 1, labels


def from_edges(n: int, u: np.ndarray, v: np.ndarray, kind: str = "custom", **params: Any) -> Graph:
    """Symmetric CSR from an edge list; self-loops and repeated edges are dropped."""
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    if len(u) and (min(u.min(), v.min()) < 0 or max(u.max(), v.max()) >= n):
        raise PloraError(f"edge endpoints must lie in [0, {n})")
    keys = _unique_sorted(np.minimum(u, v)[u != v] * n + np.maximum(u, v)[u != v])
    return _csr_from_keys(n, keys, kind, params)


def _unique_sorted(keys: np.ndarray) -> np.ndarray:
    # sort + neighbour compare: np.unique on 5e6 int64 keys took 17 s here (hash path), this takes 0.2 s
    keys = np.sort(keys)
    if len(keys) == 0:
        return keys
    keep = np.empty(len(keys), dtype=bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


def _csr_from_keys(n: int, keys: np.ndarray, kind: str, params: dict[str, Any]) -> Graph:
    """CSR from sorted unique keys ``lo * n + hi`` (lo < hi), each an edge seen from both ends.

    Row r lists its smaller neighbours (edges where r is ``hi``) and then its larger ones (edges where r is ``lo``),
    so every row comes out sorted: the keys are already in (lo, hi) order, and one sort of the E reversed keys
    (hi, lo) gives the other half, instead of sorting all 2E directed entries."""
    if 2 * len(keys) >= 2**31:
        raise PloraError(f"{len(keys):,} edges do not fit int32 CSR indices")
    lo = (keys // n).astype(np.int32)
    hi = (keys - lo.astype(np.int64) * n).astype(np.int32)
    rev = hi.astype(np.int64) * n + lo
    rev.sort()
    rev_hi = (rev // n).astype(np.int32)
    rev_lo = (rev - rev_hi.astype(np.int64) * n).astype(np.int32)
    del rev
    n_small = np.bincount(rev_hi, minlength=n)  # per row: neighbours smaller than the row
    n_large = np.bincount(lo, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_small + n_large, out=indptr[1:])
    indices = np.empty(2 * len(keys), dtype=np.int32)
    e = np.arange(len(keys), dtype=np.int64)
    # entry e of a run sorted by row goes to: row start + (skip the other half) + rank of e within its row;
    # the runs are sorted by row, so the per-row offsets expand with one sequential np.repeat
    first_small = np.cumsum(n_small) - n_small
    indices[np.repeat(indptr[:-1] - first_small, n_small) + e] = rev_lo
    first_large = np.cumsum(n_large) - n_large
    indices[np.repeat(indptr[:-1] + n_small - first_large, n_large) + e] = hi
    return Graph(indptr, indices, kind, dict(params))


def erdos_renyi(n: int, p: float, seed: int) -> Graph:
    """G(n, p); see the module docstring for the sampler. O(n + p n^2 log(p n^2))."""
    if not 0.0 <= p <= 1.0:
        raise PloraError(f"--graph_p must lie in [0, 1], got {p}")
    rng = np.random.default_rng(seed)
    pairs = n * (n - 1) // 2
    expected = p * pairs
    if expected > MAX_EDGES:
        raise PloraError(
            f"--graph_p {p} on {n:,} agents means about {expected:,.0f} edges (limit {MAX_EDGES:,}); "
            f"for a mean degree d use --graph_p d/(N-1), e.g. {10 / max(n - 1, 1):.3g} for degree 10"
        )
    if pairs <= _DENSE_PAIRS:
        iu, ju = np.triu_indices(n, k=1)
        hit = rng.random(pairs) < p
        keys = iu[hit].astype(np.int64) * n + ju[hit]
        return _csr_from_keys(n, keys, "er", {"p": p})
    m = int(rng.binomial(pairs, p))
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < m:
        deficit = m - len(keys)
        # expected duplicates among m draws from `pairs` are about m^2 / (2 pairs): over-draw a little
        draw = int(deficit * (1.0 + m / pairs) + 64 + 3 * math.sqrt(deficit))
        idx_dtype = np.int32 if n < 2**31 else np.int64
        u = rng.integers(0, n, draw, dtype=idx_dtype)
        v = rng.integers(0, n, draw, dtype=idx_dtype)
        lo, hi = np.minimum(u, v), np.maximum(u, v)
        del u, v
        ok = lo != hi
        new = lo[ok].astype(np.int64) * n + hi[ok]
        del lo, hi, ok
        keys = _unique_sorted(np.concatenate([keys, new]))
    surplus = len(keys) - m
    if surplus:
        keys = np.delete(keys, rng.choice(len(keys), surplus, replace=False))
    return _csr_from_keys(n, keys, "er", {"p": p})


def watts_strogatz(n: int, k: int, beta: float, seed: int) -> Graph:
    """Watts–Strogatz small world (ring of even degree ``k``, rewiring probability ``beta``). O(n k)."""
    if k < 2 or k % 2 or k >= n:
        raise PloraError(f"--ws_k must be even, at least 2 and below the number of agents, got {k}")
    if not 0.0 <= beta <= 1.0:
        raise PloraError(f"--ws_beta must lie in [0, 1], got {beta}")
    rng = np.random.default_rng(seed)
    base = np.arange(n, dtype=np.int64)
    u = np.concatenate([base] * (k // 2))
    v = np.concatenate([(base + j) % n for j in range(1, k // 2 + 1)])
    rewire = rng.random(len(v)) < beta
    v[rewire] = rng.integers(0, n, int(rewire.sum()), dtype=np.int64)
    g = from_edges(n, u, v, "ws", k=k, beta=beta)
    return g


def barabasi_albert(n: int, m: int, seed: int) -> Graph:
    """Barabási–Albert with ``m`` edges per arriving agent (Batagelj & Brandes 2005, O(n m))."""
    if m < 1 or m >= n:
        raise PloraError(f"--ba_m must lie in [1, agents), got {m}")
    rng = np.random.default_rng(seed)
    # agents 0..m-1 form the seed; each later agent v draws m endpoints from the list of all edge ends so far
    total = (n - m) * m
    ends = np.empty(2 * total, dtype=np.int64)
    src = np.repeat(np.arange(m, n, dtype=np.int64), m)
    ends[0::2] = src
    uniform = rng.random(total)
    first = src[0]
    for i in range(total):
        v = src[i]
        if v == first:
            # the first arrival links to the m seed agents, as in networkx
            ends[2 * i + 1] = i
            continue
        ends[2 * i + 1] = ends[int(uniform[i] * (2 * m * (v - first)))]
    return from_edges(n, ends[0::2], ends[1::2], "ba", m=m)


def make_graph(
    kind: str, n: int, *, p: float = 0.25, ws_k: int = 4, ws_beta: float = 0.1, ba_m: int = 2, seed: int = 0
) -> Graph:
    """The overlay named by ``--graph`` (er | ws | ba)."""
    if n < 1:
        raise PloraError(f"--agents must be at least 1, got {n}")
    if kind == "er":
        return erdos_renyi(n, p, seed)
    if kind == "ws":
        return watts_strogatz(n, ws_k, ws_beta, seed)
    if kind == "ba":
        return barabasi_albert(n, ba_m, seed)
    raise PloraError(f"--graph must be er, ws or ba, got {kind!r}")


def spectral_gap(graph: Graph, max_n: int = SPECTRAL_MAX_N) -> float | None:
    """``1 - lambda_2`` of the normalised adjacency on the largest component; None when n > max_n."""
    if graph.n > max_n:
        return None
    count, labels = graph.components()
    giant = np.flatnonzero(labels == np.bincount(labels).argmax())
    if len(giant) < 2:
        return None
    adj = graph.to_scipy(np.float64)[giant][:, giant]
    deg = np.asarray(adj.sum(axis=1)).ravel()
    scale = 1.0 / np.sqrt(deg)
    import scipy.sparse as sp

    norm = sp.diags_array(scale) @ adj @ sp.diags_array(scale)
    if len(giant) <= 200:
        eig = np.linalg.eigvalsh(norm.toarray())
        lam2 = float(np.sort(eig)[-2])
    else:
        from scipy.sparse.linalg import eigsh

        vals = eigsh(norm, k=2, which="LA", return_eigenvectors=False, tol=1e-6, v0=np.ones(len(giant)))
        lam2 = float(np.sort(vals)[0])
    return round(1.0 - lam2, 6)


def graph_stats(graph: Graph, spectral: bool = True) -> dict[str, Any]:
    """N, edges, mean/max degree, isolated agents, components, largest component size, spectral gap."""
    deg = graph.degrees
    count, labels = graph.components()
    sizes = np.bincount(labels)
    return {
        "kind": graph.kind,
        "params": graph.params,
        "n": graph.n,
        "edges": graph.edges,
        "mean_degree": round(float(deg.mean()), 6) if graph.n else 0.0,
        "max_degree": int(deg.max()) if graph.n else 0,
        "isolated": int(np.count_nonzero(deg == 0)),
        "components": count,
        "largest_component": int(sizes.max()) if graph.n else 0,
        "spectral_gap": spectral_gap(graph) if spectral else None,
    }
