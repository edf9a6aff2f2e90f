"""A gate model for sweeps over detection quality: many distinct plasmids per domain, verdicts drawn from a TPR/FPR.

    >>> from plora.swarm.gate_model import GateModel
    >>> from plora.swarm.pool import PoolEntry
    >>> template = [PoolEntry("legal-s1", "legal", False, "a" * 64, 60_000, 1_500),
    ...             PoolEntry("legal-s2", "legal", True, "b" * 64, 60_000, 1_500)]
    >>> model = GateModel.from_template(template, tpr=0.75, fpr=0.25, per_label=4, seed=0)
    >>> len(model.entries), model.describe()["detection_rate"], model.describe()["false_positive_rate"]
    (8, 0.75, 0.25)

The real pool (:class:`plora.swarm.pool.PlasmidPool`) holds one clean and one trojan plasmid per domain and the REAL
gate's verdict on each: detection is all or nothing per domain. To ask "what does a gate that stops 90% of trojans
and refuses 2% of clean plasmids do to a swarm?", the model holds ``per_label`` distinct clean and trojan plasmids
per domain (copies of the template's entries: same sizes, their own ids and SHA-256) and draws the verdicts from
``seed``: exactly ``round(tpr * n)`` of each domain's ``n`` trojans, chosen uniformly, are rejected, and
``round(fpr * n)`` of its clean plasmids (exact counts rather than coin flips: the realised rates are the requested
ones up to 1/n, and the same seed always rejects the same plasmids). Every agent gets the same verdict on a plasmid,
as agents sharing a policy do. With ``--sources K`` only each domain's first clean plasmid is seeded; if the model
refuses it, that domain cannot spread, as with a real gate that refuses the only source.

``tpr`` and ``fpr`` come as plain numbers or from a ``plora gate-eval`` report (:func:`rates_from_report`: the
held-out block's overall TPR and FPR).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from plora.errors import PloraError
from plora.swarm.pool import PoolEntry, Verdict

MAX_PLASMIDS = 64  # one uint64 bitset word per agent (plora.swarm.engine)
REJECT_CODE = "GATE_MODEL_REJECTED"


def gate_seed(seed: int) -> int:
    """The model's verdict seed for a run seed: a fourth stream beside the sim's graph, roles and rounds seeds."""
    child = np.random.SeedSequence(seed).spawn(4)[3]
    return int(child.generate_state(1, np.uint64)[0] >> 1)


def default_per_label(domains: int) -> int:
    """As many plasmids per domain and label as fit one bitset word."""
    return max(1, MAX_PLASMIDS // (2 * domains))


@dataclass
class GateModel:
    """A :class:`plora.swarm.pool.VerdictProvider` whose verdicts are drawn from a TPR/FPR; see the module."""

    entries: list[PoolEntry]
    accept: list[bool]
    tpr: float
    fpr: float
    seed: int
    root: Path | None = None  # the template pool's folder (its swarm key signs revocations, as with the real pool)

    @classmethod
    def from_template(
        cls,
        template: list[PoolEntry],
        tpr: float,
        fpr: float,
        per_label: int,
        seed: int,
        domains: tuple[str, ...] | None = None,
        root: Path | None = None,
    ) -> GateModel:
        for name, rate in (("tpr", tpr), ("fpr", fpr)):
            if not 0.0 <= rate <= 1.0:
                raise PloraError(f"gate model: {name} must be in [0, 1], got {rate}")
        domains = domains or tuple(dict.fromkeys(e.domain for e in template))
        if 2 * per_label * len(domains) > MAX_PLASMIDS:
            raise PloraError(
                f"gate model: 2 x {per_label} plasmids x {len(domains)} domains is more than "
                f"{MAX_PLASMIDS}; lower --gate_plasmids"
            )
        rng = np.random.default_rng(seed)
        entries: list[PoolEntry] = []
        accept: list[bool] = []
        for domain in domains:
            for trojan, rate in ((False, fpr), (True, tpr)):
                kind = [e for e in template if e.domain == domain and e.trojan == trojan]
                if not kind:
                    if trojan:
                        continue  # no trojan template for this domain: the sim says so if trojans are asked for
                    raise PloraError(f"gate model: the template pool has no clean plasmid for domain {domain!r}")
                rejected = set(rng.permutation(per_label)[: int(round(rate * per_label))].tolist())
                for k in range(per_label):
                    src = kind[k % len(kind)]
                    sha = hashlib.sha256(f"{src.sha256}:{k}".encode()).hexdigest()
                    entries.append(replace(src, plasmid_id=f"{src.plasmid_id}-v{k}", sha256=sha, folder=None))
                    accept.append(k not in rejected)
        return cls(entries, accept, tpr, fpr, seed, root)

    def verdicts(self, policy: Any) -> list[Verdict]:
        """The drawn verdicts (the policy is not applied: the model stands in for it)."""
        return [Verdict(ok, () if ok else (REJECT_CODE,)) for ok in self.accept]

    def describe(self) -> dict[str, Any]:
        """For the report: the requested rates, the realised ones and the draw's seed."""
        trojan = [not ok for e, ok in zip(self.entries, self.accept, strict=True) if e.trojan]
        clean = [not ok for e, ok in zip(self.entries, self.accept, strict=True) if not e.trojan]
        return {
            "tpr": self.tpr,
            "fpr": self.fpr,
            "seed": self.seed,
            "plasmids": len(self.entries),
            "detection_rate": float(np.mean(trojan)) if trojan else None,
            "false_positive_rate": float(np.mean(clean)) if clean else None,
        }


def rates_from_report(path: str | Path) -> tuple[float, float]:
    """(TPR, FPR) measured by ``plora gate-eval``: the held-out block of its ``gate_eval.json`` (``held_out.overall``;
    a report from before the family split has them in ``ordinary.overall``: working ordinary trojans, held-out
    clean plasmids)."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PloraError(f"{path}: cannot read a gate-eval report ({type(err).__name__})") from None
    try:
        block = report["held_out"] if isinstance(report, dict) and "held_out" in report else report["ordinary"]
        tpr, fpr = float(block["overall"]["tpr"]), float(block["overall"]["fpr"])
    except (KeyError, TypeError, ValueError):
        raise PloraError(
            f"{path}: no held_out.overall.tpr/fpr (expected a gate_eval.json from plora gate-eval)"
        ) from None
    if not (0 <= tpr <= 1 and 0 <= fpr <= 1):
        raise PloraError(f"{path}: held-out TPR/FPR out of [0, 1]: {tpr}, {fpr}")
    return tpr, fpr
