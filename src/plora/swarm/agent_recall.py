"""What a networked agent does about recall: obey revocations, refuse rollbacks, score peers, unload from its model.

    >>> from plora.swarm.agent_recall import AgentRecall
    >>> recall = AgentRecall(root="a0/store", policy=None, revocation_keys=["keys/alice.pub"])
    >>> recall.store.ids(), recall.checks()[0]("out/legal")        # nothing revoked: the check lets it through
    ([], [])

Used by :class:`plora.swarm.agent.Agent`; every step below runs in the agent's own process:

* **Revocations ahead of plasmids.** A contact starts with the peer's inventory, which lists the revocation ids it
  obeys; the agent fetches the ones it lacks (``GetRevocations``), verifies each against its revocation keys and
  quorum (:class:`plora.recall.store.RecallStore`; a copy that fails is refused, and not asked of that peer again
  until its copy changes), and applies each new
  one at once: every plasmid it names is taken out of the live model (:class:`plora.recall.live.LiveModel`,
  ``plora.loader.remove``, weights checked bit for bit), moved from the store into quarantine (one rename: it is
  no longer offered), and refused forever, under any id (the recall check runs first in every fetch: REVOKED).
  The agent's own inventory lists its revocations, so the peer does the same with them.
* **Rollback protection**: the same check refuses an older version of a lineage than one accepted from the same
  signer (VERSION_ROLLBACK); each accepted plasmid's version is recorded.
* **Peer scoring** (policy ``recall.peer_scoring``): a peer loses score for each plasmid of its that the gate refuses
  and each revoked plasmid it still offers once both sides' revocations are exchanged; while its score is below the
  threshold it is graylisted: nothing is fetched from it (its revocations are still taken).
* **A trojan agent** in a simulated swarm runs with ``obey_revocations=False``: it neither keeps, lists, applies nor
  forwards revocations.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from plora.grpc.checks import Check
from plora.grpc.client import RemoteEntry, get_revocations
from plora.recall.record import MAX_REVOCATION_BYTES, PEER_GRAYLISTED, REVOKED
from plora.recall.scoring import PeerScores
from plora.recall.store import MAX_REFUSED, RecallStore, Receipt, listed_signers


def recall_dir_for(root: str | os.PathLike[str]) -> Path:
    """The default recall folder: beside the store, never inside it (a quarantined plasmid must not be served)."""
    root = Path(root)
    return root.with_name(root.name + ".recall")


class AgentRecall:
    """One agent's recall state and actions (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], policy: Any, *, folder: str | os.PathLike[str] | None = None,
                 revocation_keys: list[str] | None = None, obey: bool = True, peer_scoring: bool | None = None,
                 live_model: bool = False, domain: str | None = None) -> None:
        from plora.recall.policy import RecallPolicy
        from plora.signer import Keyring

        recall = policy.recall if policy is not None else RecallPolicy()
        if peer_scoring is not None:
            recall = recall.model_copy(update={"peer_scoring": peer_scoring})
        keys = list(revocation_keys or recall.revocation_keys or (policy.trusted_keys if policy is not None else []))
        plasmid_keys = Keyring.load(policy.trusted_keys) if policy is not None and policy.signatures else None
        self.obey = obey
        self.store = RecallStore(folder or recall_dir_for(root), Keyring.load(keys) if keys else Keyring(),
                                 recall.revocation_quorum, plasmid_keys, policy.quorum if policy is not None else 1)
        scoring = recall.scoring()
        self.scores = PeerScores(scoring) if scoring is not None else None
        self.domain = domain
        self.live = None
        self._base_model = policy.base_model if policy is not None else None
        self._want_live = live_model
        self.lock = threading.RLock()  # store and live model: rounds and incoming Offers run in different threads
        self._refused_copies: dict[tuple[str, str, int], None] = {}  # (peer, revocation id, size) refused
        self.log: list[dict[str, Any]] = []

    # --------------------------------------------------------------------------------------------- set-up
    def checks(self) -> list[Check]:
        """Fetch checks that run before the gate: REVOKED / VERSION_ROLLBACK (none for a non-obeying agent)."""
        return [self.store.check] if self.obey else []

    def start_live(self, held: dict[str, Any]) -> None:
        """Load the live model and inject the plasmids the agent starts with (those of its domain)."""
        if not self._want_live:
            return
        from plora.recall.live import LiveModel

        self.live = LiveModel(self._base_model)
        for pid, entry in sorted(held.items()):
            self._maybe_inject(entry.folder, pid, entry.manifest.domain, 0)

    # ------------------------------------------------------------------------------------------ revocations
    def take_revocations(self, channel: Any, peer: str, refs: list[Any], round_: int, limits: Any,
                         index: Any) -> None:
        """Fetch from ``peer`` the revocations it lists that this agent lacks, and apply the valid new ones."""
        if not self.obey:
            return
        # a peer whose copy of a record was refused is not asked for it again until its copy changes (a cosigned
        # envelope is longer); other peers still are: a garbled copy never blocks the valid one of the same id
        sizes = {r.id: r.size for r in refs if len(r.id) == 64 and not self.store.has(r.id) and
                 0 < r.size <= MAX_REVOCATION_BYTES and (peer, r.id, r.size) not in self._refused_copies}
        if not sizes:
            return
        try:
            envelopes = get_revocations(channel, list(sizes), limits)
        except Exception as err:  # noqa: BLE001 - a peer that cannot serve them is logged; the contact goes on
            self._log({"round": round_, "kind": "revocation", "peer": peer, "error": str(err)[:300]})
            return
        for data in envelopes:
            receipt = self.apply(data, round_, peer, index)
            if receipt is not None and not receipt.ok and receipt.id in sizes:
                if len(self._refused_copies) >= MAX_REFUSED:
                    self._refused_copies.pop(next(iter(self._refused_copies)))
                self._refused_copies[(peer, receipt.id, sizes[receipt.id])] = None

    def import_revocations(self, paths: list[str]) -> None:
        """Obey the revocation files an operator hands this agent (``plora agent --revocation``); one that does
        not verify with the revocation keys and quorum is a one-line error, before the agent serves anything."""
        from plora.errors import PloraError
        from plora.fsio import read_bounded

        if paths and not self.obey:
            raise PloraError("--revocation: this agent does not obey revocations")
        for path in paths:
            try:
                data = read_bounded(path, MAX_REVOCATION_BYTES, "a revocation (plora revoke writes one)")
            except OSError as err:
                raise PloraError(str(err)) from None
            receipt = self.store.receive(data)
            if not receipt.ok:
                why = "; ".join(f"{c}: {m}" for c, m in receipt.reasons) or "not verified"
                raise PloraError(f"--revocation {path}: refused ({why})")
            self._log({"round": 0, "kind": "revocation", "peer": "operator", "id": receipt.id, "ok": True,
                       "new": receipt.new, "bytes": len(data), "reasons": []})

    def purge_held(self, index: Any) -> None:
        """Purge what the saved revocations name from the store (at start-up, before anything is served or
        loaded: an agent stopped between keeping a revocation and its purge must not offer the plasmid again)."""
        if self.obey:
            for rid in self.store.ids():
                self._purge(rid, 0, index)

    def apply(self, data: bytes, round_: int, via: str, index: Any) -> Receipt | None:
        """Verify one revocation; a valid new one purges what it names (unload, quarantine) at once."""
        if not self.obey:
            return None
        with self.lock:
            receipt = self.store.receive(data)
            self._log({"round": round_, "kind": "revocation", "peer": via, "id": receipt.id, "ok": receipt.ok,
                       "new": receipt.new, "bytes": len(data),
                       "reasons": [f"{c}: {m}" for c, m in receipt.reasons]})
            if receipt.ok and receipt.new and receipt.id is not None:
                self._purge(receipt.id, round_, index)
        return receipt

    def _purge(self, rid: str, round_: int, index: Any) -> None:
        entries = index.refresh()
        keys = self.store.known_keys()
        held = {pid: (e.manifest.artifact.sha256, listed_signers(e.folder, keys)) for pid, e in entries.items()}
        for pid in self.store.revoked_ids(rid, held):
            entry = entries[pid]
            live = self.live.unload(pid) if self.live is not None and pid in self.live.injected() else None
            dest = self.store.quarantine(entry.folder, rid)
            self._log({"round": round_, "kind": "purge", "id": pid, "sha256": entry.manifest.artifact.sha256,
                       "revocation": rid, "quarantined": str(dest), "live": live})
        index.refresh()

    # ------------------------------------------------------------------------------------------- plasmids
    def offered(self, peer: str, entries: list[RemoteEntry], round_: int) -> list[RemoteEntry]:
        """What may be fetched from ``peer``'s (up to date) inventory: nothing from a graylisted peer; never a
        revoked plasmid, each of which costs the peer ``penalty_revoked``."""
        if self.scores is not None and self.scores.graylisted(peer, round_):
            self._log({"round": round_, "kind": "graylisted", "peer": peer, "code": PEER_GRAYLISTED,
                       "score": round(self.scores.score(peer, round_), 4)})
            return []
        if not self.obey:
            return entries
        keep = [e for e in entries if self.store.revoked_by(e.sha256) is None]
        if self.scores is not None and len(keep) < len(entries):
            self.scores.penalise(peer, round_, revoked=len(entries) - len(keep))
        return keep

    def fetched(self, peer: str, event: dict[str, Any], path: Path | None, round_: int, index: Any) -> None:
        """After a fetch: score a gate refusal; record an accepted plasmid's version, inject it into the live model
        (its domain), and purge it at once if a revocation that names it arrived while it was being fetched."""
        codes = event.get("codes") or []
        if not event.get("accepted"):
            if self.scores is not None and "error" not in event:
                revoked = REVOKED in codes
                self.scores.penalise(peer, round_, rejected=0 if revoked else 1, revoked=1 if revoked else 0)
            return
        if path is None:
            return
        with self.lock:
            if self.obey:
                self.store.accept(path)
                rid = self.store.revoked_by(event["sha256"], listed_signers(path, self.store.known_keys()))
                if rid is not None:
                    self._purge(rid, round_, index)
                    return
            self._maybe_inject(path, event["id"], event.get("domain", ""), round_)

    def _maybe_inject(self, folder: Any, pid: str, domain: str, round_: int) -> None:
        if self.live is None or (self.domain is not None and domain != self.domain):
            return
        try:
            self.live.inject(folder, pid)
            self._log({"round": round_, "kind": "inject", "id": pid})
        except Exception as err:  # noqa: BLE001 - a plasmid the loader refuses is not served by this model
            self._log({"round": round_, "kind": "inject", "id": pid, "error": str(err)[:300]})

    # -------------------------------------------------------------------------------------------- records
    def _log(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(event)

    def record(self, round_: int) -> dict[str, Any]:
        """This agent's recall state for a round record (and the events since the last one)."""
        with self.lock:
            events, self.log = self.log, []
        return {
            "revocations": self.store.ids() if self.obey else [],
            "injected": self.live.injected() if self.live is not None else None,
            "events": events,
            "scores": self.scores.snapshot(round_) if self.scores is not None else None,
        }
