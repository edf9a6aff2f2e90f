"""What rumour-spreading theory predicts for push-pull gossip, to print beside what the simulation observed.

    >>> import numpy as np
    >>> from plora.swarm.theory import mean_field_rounds, complete_graph_rounds
    >>> deg = np.full(10_000, 10)
    >>> mean_field_rounds(deg, start_fraction=1e-4) < complete_graph_rounds(10_000)["push"]
    True

Two predictions:

* Complete-graph classics, as orders of magnitude: push alone informs all n nodes in
  ``log2 n + ln n + O(1)`` rounds (Frieze & Grimmett 1985; Pittel, "On spreading a rumor", SIAM J. Appl. Math. 1987);
  push-pull in ``log3 n + O(log log n)`` rounds (Karp, Schindelhauer, Shenker & Vöcking, "Randomized rumor
  spreading", FOCS 2000). On graphs with conductance phi, push-pull needs O(log n / phi) rounds (Giakkoumis,
  Sauerwald & Sun 2011 bound it by O(log n / phi); Chierichetti, Lattanzi & Panconesi, STOC 2010 first showed
  O(log^4 n / phi^6)).
* A mean-field (degree-based, locally tree-like) recursion for push-pull on the overlay's own degree
  distribution p_k. With y_k(t) the informed fraction of degree-k agents, x(t) = sum_k p_k y_k(t) the informed
  fraction, theta(t) = sum_k k p_k y_k(t) / <k> the chance that the far end of a random edge is informed, and
  E[1/k'] = 1/<k> for the degree k' at the far end of a random edge, an uninformed degree-k agent stays
  uninformed in a round iff its own pull fails and none of its k neighbours pushes to it::

      1 - y_k(t+1) = (1 - y_k(t)) * (1 - theta(t)) * (1 - x(t) / <k>)^k

  iterated from y_k(0) = the seeded fraction until fewer than half an agent of the reachable population is left
  uninformed. This is the standard heterogeneous mean-field treatment of epidemic/rumour processes
  (Pastor-Satorras & Vespignani, Phys. Rev. Lett. 86, 2001; for push-pull on random graphs see Fountoulakis,
  Panagiotou & Sauerwald, SODA 2012). It ignores fetch caps and gate rejections and assumes the overlay is
  locally tree-like (ER, BA; not a WS ring at small beta, where spreading is diffusive and much slower).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_ROUNDS = 10_000


def complete_graph_rounds(n: int) -> dict[str, float]:
    """Leading terms on the complete graph: push ``log2 n + ln n``, push-pull ``log3 n``."""
    if n < 2:
        return {"push": 0.0, "push_pull": 0.0}
    return {"push": round(math.log2(n) + math.log(n), 3), "push_pull": round(math.log(n, 3), 3)}


def mean_field_rounds(degrees: np.ndarray, start_fraction: float, max_rounds: int = MAX_ROUNDS) -> int | None:
    """Rounds until fewer than 0.5 of the ``len(degrees)`` agents remain uninformed (see the module docstring).

    ``degrees`` are the degrees of the agents the plasmid can reach; None when the recursion cannot finish
    (no edges, nothing seeded) within ``max_rounds``.
    """
    degrees = np.asarray(degrees)
    n = len(degrees)
    if n == 0 or start_fraction <= 0:
        return None
    if start_fraction >= 1:
        return 0
    counts = np.bincount(degrees)
    ks = np.flatnonzero(counts)
    pk = counts[ks] / n
    mean_k = float((ks * pk).sum())
    if mean_k == 0:
        return None
    y = np.full(len(ks), float(start_fraction))
    for t in range(max_rounds + 1):
        if n * float((pk * (1 - y)).sum()) < 0.5:
            return t
        x = float((pk * y).sum())
        theta = float((ks * pk * y).sum()) / mean_k
        y = 1 - (1 - y) * (1 - theta) * (1 - x / mean_k) ** ks
    return None


def predict(degrees_reachable: list[np.ndarray], start_fractions: list[float], domains: list[str]) -> dict[str, Any]:
    """The report's ``final.theory`` block: mean-field rounds per domain and the complete-graph classics."""
    n_max = max((len(d) for d in degrees_reachable), default=0)
    return {
        "model": "push-pull, mean-field recursion on the degree distribution of the reachable agents",
        "references": [
            "Karp, Schindelhauer, Shenker, Vocking. Randomized rumor spreading. FOCS 2000 (push-pull: log3 n)",
            "Pittel. On spreading a rumor. SIAM J. Appl. Math. 47(1), 1987 (push: log2 n + ln n)",
            "Pastor-Satorras, Vespignani. Epidemic spreading in scale-free networks. PRL 86, 2001 (mean field)",
        ],
        "mean_field_rounds": {
            name: mean_field_rounds(deg, frac)
            for name, deg, frac in zip(domains, degrees_reachable, start_fractions, strict=True)
        },
        "complete_graph_rounds": complete_graph_rounds(n_max),
    }


def recall_curves(degrees: np.ndarray, attackers: float, revoke_at: int | None, honest: int,
                  rounds: int) -> dict[str, list[float]]:
    """Mean-field recursion of the two competing epidemics: a trojan that every agent accepts, spread push-pull
    from a share ``attackers`` of agents that always offer it and ignore revocations, and, from the start of round
    ``revoke_at``, a revocation spread push-pull among the ``honest`` agents only (one of them starts it).

    Per degree class k (p_k the degree distribution, a the attackers' share, h = 1 - a): z_k is the share of honest
    agents that know the revocation, y_k the share of the others that hold the trojan. Each round, with
    ``theta_Z = sum k p_k h z_k / <k>`` and ``x_Z = sum p_k h z_k`` (far end of an edge, and an agent, informed),
    an uninformed agent learns the revocation with ``q_k = 1 - (1 - theta_Z)(1 - x_Z / <k>)^k`` and, if it does not,
    receives the trojan from a holder that does not know it (an attacker, or an uninformed honest holder:
    ``theta_T``, ``x_T`` likewise) with ``r_k = 1 - (1 - theta_T)(1 - x_T / <k>)^k``; learning purges it. So
    ``z_k <- z_k + (1 - z_k) q_k`` and ``y_k <- y_k + (1 - y_k) r_k``, and the honest holders' share is
    ``sum p_k (1 - z_k) y_k``. It is the push-pull recursion of :func:`mean_field_rounds`, twice, coupled.

    Returns, per round 0..rounds, ``holding`` (share of honest agents holding the trojan) and ``revocation`` (share
    knowing the revocation).
    """
    degrees = np.asarray(degrees)
    counts = np.bincount(degrees) if len(degrees) else np.zeros(1, dtype=np.int64)
    ks = np.flatnonzero(counts)
    pk = counts[ks] / max(len(degrees), 1)
    mean_k = float((ks * pk).sum())
    h = 1.0 - attackers
    y = np.zeros(len(ks))
    z = np.zeros(len(ks))
    holding, revocation = [0.0], [0.0]
    for t in range(1, rounds + 1):
        if revoke_at is not None and t == revoke_at and honest:
            z = np.maximum(z, 1.0 / honest)
        if mean_k > 0:
            held = h * (1 - z) * y + attackers  # agents that hold the trojan and offer it
            theta_t, x_t = float((ks * pk * held).sum()) / mean_k, float((pk * held).sum())
            theta_z, x_z = float((ks * pk * h * z).sum()) / mean_k, float((pk * h * z).sum())
            q = 1 - (1 - theta_z) * (1 - x_z / mean_k) ** ks
            r = 1 - (1 - theta_t) * (1 - x_t / mean_k) ** ks
            z = z + (1 - z) * q
            y = y + (1 - y) * r
        holding.append(float((pk * (1 - z) * y).sum()))
        revocation.append(float((pk * z).sum()))
    return {"holding": holding, "revocation": revocation}


def recall_prediction(degrees: np.ndarray, attackers: float, revoke_at: int | None, honest: int,
                      rounds: int) -> dict[str, Any]:
    """The report's ``final.recall.theory``: :func:`recall_curves`, and from them the rounds the trojan takes to
    reach every honest agent (fewer than half an agent left), the rounds from ``revoke_at`` until fewer than half an
    agent holds it, its peak share and the exposure (agent-rounds holding it)."""
    curves = recall_curves(degrees, attackers, revoke_at, honest, rounds)
    plain = recall_curves(degrees, attackers, None, honest, rounds)["holding"]
    spread = next((t for t, v in enumerate(plain) if honest * (1 - v) < 0.5), None)
    purge = None
    if revoke_at is not None:
        purge = next((t - revoke_at + 1 for t, v in enumerate(curves["holding"]) if t >= revoke_at and
                      honest * v < 0.5), None)
    peak = max(curves["holding"])
    return {
        "model": "push-pull mean field, two coupled recursions (trojan from non-obeying attackers; revocation "
                 "among honest agents from one origin); peer scoring and fetch caps ignored",
        "spread_rounds": spread,
        "time_to_purge": purge,
        "peak_prevalence": round(peak, 6),
        "peak_round": curves["holding"].index(peak),
        "exposure": round(honest * sum(curves["holding"]), 1),
        "curves": {k: [round(v, 6) for v in vals] for k, vals in curves.items()},
    }
