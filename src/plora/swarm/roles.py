"""Who starts with what: the trojan agents and each agent's first plasmid, drawn from one seed.

    >>> import numpy as np
    >>> from plora.swarm.roles import assign_roles
    >>> roles = assign_roles(8, domain_of=np.array([0, 0, 1, 1]), trojan=np.array([False, True, False, True]),
    ...                      trojan_rate=0.25, seed=3)
    >>> roles.trojan_agents.nonzero()[0].tolist()    # round(0.25 * 8) agents, drawn by the seed
    [0, 5]
    >>> roles.initial.tolist()                       # the pool index each agent starts with (-1: none)
    [1, 2, 0, 2, 0, 3, 0, 2]

Swarm Sim v2 (:func:`plora.swarm.sim.initial_state`) and the networked swarm (:func:`plora.swarm.net.initial_plasmids`)
both call :func:`assign_roles`, so the same seed makes the same agents trojans and seeds the same stores.

The draw: ``round(trojan_rate * agents)`` agents, chosen uniformly, are trojan agents; agent i's domain is
``i mod D``; a trojan agent starts with a trojan plasmid of its domain, and by default each honest agent with a clean
one (the k-th agent of a domain takes the domain's ``k mod count``-th plasmid of that kind, in pool order). With
``sources=K``, K honest agents per domain, chosen uniformly among all honest agents, start with the domain's first
clean plasmid and every other honest agent starts empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from plora.errors import PloraError


@dataclass(frozen=True)
class Roles:
    trojan_agents: np.ndarray  # bool (agents,)
    initial: np.ndarray  # int64 (agents,): pool index of the plasmid each agent starts with; -1 for none

    @property
    def honest(self) -> np.ndarray:
        return ~self.trojan_agents


def assign_roles(
    agents: int,
    domain_of: np.ndarray,
    trojan: np.ndarray,
    trojan_rate: float,
    seed: int,
    sources: int | None = None,
    domains: Sequence[str] | None = None,
) -> Roles:
    """Roles and first plasmids for ``agents`` agents over a pool whose entry j has domain index ``domain_of[j]``
    (-1: a domain not in play) and ground truth ``trojan[j]``; ``domains`` names the D domains in play (errors only;
    default: one per distinct index)."""
    domain_of = np.asarray(domain_of, dtype=np.int64)
    trojan = np.asarray(trojan, dtype=bool)
    ndom = len(domains) if domains is not None else int(domain_of.max(initial=-1)) + 1
    names = list(domains) if domains is not None else [str(d) for d in range(ndom)]
    if ndom < 1:
        raise PloraError("the pool holds no plasmid of any domain in play")
    rng = np.random.default_rng(seed)
    trojan_agents = np.zeros(agents, dtype=bool)
    k = int(round(trojan_rate * agents))
    if k:
        trojan_agents[rng.choice(agents, k, replace=False)] = True
    honest = ~trojan_agents
    clean_ids = [np.flatnonzero((domain_of == d) & ~trojan) for d in range(ndom)]
    trojan_ids = [np.flatnonzero((domain_of == d) & trojan) for d in range(ndom)]
    for d in range(ndom):
        if len(clean_ids[d]) == 0:
            raise PloraError(f"the pool has no clean plasmid for domain {names[d]!r}")
        if k and len(trojan_ids[d]) == 0:
            raise PloraError(f"--trojan_rate > 0 but the pool has no trojan plasmid for domain {names[d]!r}")
    initial = np.full(agents, -1, dtype=np.int64)
    domain = np.arange(agents) % ndom
    copy = np.arange(agents) // ndom
    for d in range(ndom):
        mine = domain == d
        if k:
            t = mine & trojan_agents
            initial[t] = trojan_ids[d][copy[t] % len(trojan_ids[d])]
        if sources is None:
            h = mine & honest
            initial[h] = clean_ids[d][copy[h] % len(clean_ids[d])]
    if sources is not None:
        pick = rng.choice(np.flatnonzero(honest), sources * ndom, replace=False)
        for d in range(ndom):
            initial[pick[d * sources : (d + 1) * sources]] = clean_ids[d][0]
    return Roles(trojan_agents=trojan_agents, initial=initial)
