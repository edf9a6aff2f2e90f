"""One networked swarm agent: its own store, keys and gate, serving over gRPC and gossiping push-pull with peers.

    >>> import json, shutil
    >>> from plora.swarm.agent import Agent, AgentConfig
    >>> _ = open("quick.json", "w").write(json.dumps({"probes": False}))   # the gate's cheap stages only
    >>> _ = shutil.copytree("out/legal", "a0/store/legal")
    >>> a0 = Agent(AgentConfig(listen="127.0.0.1:0", root="a0/store", name="a0", policy_file="quick.json"))
    >>> a1 = Agent(AgentConfig(listen="127.0.0.1:0", root="a1/store", name="a1", peers=[a0.address],
    ...                        policy_file="quick.json"))
    >>> [(e["via"], e["id"], e["accepted"]) for e in a1.step(0)["events"]]   # a1 pulls from a0, screened by its gate
    [('pull', 'legal', True)]
    >>> sorted(a1.holdings())
    ['legal']
    >>> a1.stop(); a0.stop()

A round (``step``): pick one peer uniformly at random (seeded by seed, agent name and round), PULL (get its
inventory, fetch what this agent lacks, at most ``max_per_contact``), then PUSH (send an Offer carrying this agent's
inventory; the peer fetches what it lacks from this agent's server). Every fetch, pulled or pushed, goes through
:func:`plora.grpc.client.fetch`: staged in a hidden folder of the store, hashed while received, signatures checked
against the agent's keyring, screened by the agent's gate, renamed into ``root/<id>`` only when accepted. A refused
(id, sha256) is remembered and not fetched again. Within round r an agent serves (lists, and lets peers fetch) only
what it held when the round began (:mod:`plora.swarm.agent_round`): what it receives in round r is passed on from
round r+1, as in the Swarm Sim v2 engine, whatever order the round's concurrent contacts run in.

Gate verdicts go through the swarm's one verdict cache (:class:`plora.swarm.verdicts.VerdictCache`, shared with Swarm
Sim v2): one plasmid costs one screen per policy, whoever screens it first (the simulation, or any agent), and an
agent that never screens first never imports torch. Inside :func:`plora.grpc.client.fetch` the staged folder has just
been hashed against its manifest, and the cache's key hashes that folder's bytes, so a verdict names exactly the
bytes it judged.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from plora.errors import TransferError
from plora.fsio import atomic_write_json
from plora.grpc.checks import Check, format_reason, reason_code, signature_check
from plora.grpc.client import RemoteEntry, fetch, open_channel
from plora.grpc.index import Entry, PlasmidIndex
from plora.grpc.limits import Limits, check_id, parse_address
from plora.grpc.proto import pb2, pb2_grpc
from plora.grpc.server import OfferServer, PlasmidServicer, StreamSlots, format_address, peer_ip
from plora.swarm.agent_recall import AgentRecall
from plora.swarm.agent_round import RoundSnapshot
from plora.swarm.offer_source import ip_literal, offer_refusal, offer_sender
from plora.swarm.verdicts import VerdictCache

STEP_TOKEN_HEADER = "plora-step-token"  # gRPC metadata key of a Step call's token


@dataclass
class AgentConfig:
    listen: str  # HOST:PORT to serve on; port 0 lets the OS pick
    root: str | Path  # the agent's store: one plasmid folder per id
    peers: list[str] = field(default_factory=list)
    peers_file: str | None = None  # read at the first round when set (plora swarm net writes it once all listen)
    advertise: str | None = None  # IP:PORT peers reach this agent at; default the listen address (and bound port)
    name: str = ""
    seed: int = 0
    security: bool = True  # off: accept whatever arrives intact (hash and size still checked)
    policy_file: str | None = None
    trusted_keys: list[str] = field(default_factory=list)  # non-empty: signatures required (policy quorum)
    max_per_contact: int = 8
    contact_timeout_s: float = 300.0  # an Offer waits while the peer fetches and screens
    limits: Limits = field(default_factory=Limits)
    # recall (plora.swarm.agent_recall): revocations, rollback protection, peer scores, the live model
    recall_dir: str | Path | None = None  # default: <root>.recall beside the store
    revocation_keys: list[str] = field(default_factory=list)  # default: policy recall.revocation_keys, else trusted
    revocations: list[str] = field(default_factory=list)  # revocation files the operator hands this agent at start
    obey_revocations: bool = True  # off only for simulated trojan agents: they ignore revocations
    peer_scoring: bool | None = None  # None: the policy's recall.peer_scoring
    live_model: bool = False  # hot-load accepted plasmids (of ``domain``) into a live model; unload revoked ones
    domain: str | None = None
    step_token: str | None = None  # Step calls must carry it (plora swarm net's, per run); None: Step is refused


def _recall_policy(cfg: AgentConfig) -> Any:
    """The policy whose ``recall`` section (and trusted keys) the agent's recall uses; None with security off."""
    if not cfg.security:
        return None
    from plora.gate.policy import load_policy

    return load_policy(cfg.policy_file, trusted_keys=cfg.trusted_keys or None)


def build_checks(cfg: AgentConfig) -> list[Check]:
    """Signature check (when the policy asks for signatures) then the cached gate; nothing when security is off."""
    if not cfg.security:
        return []
    from plora.gate.policy import load_policy

    policy = load_policy(cfg.policy_file, trusted_keys=cfg.trusted_keys or None)
    checks: list[Check] = []
    if policy.signatures:
        checks.append(signature_check(policy.trusted_keys, policy.quorum))
    checks.append(VerdictCache(policy, by="agent"))
    return checks


class AgentServicer(PlasmidServicer):
    def __init__(self, agent: Agent, index: PlasmidIndex, limits: Limits) -> None:
        super().__init__(index, limits)
        self.agent = agent
        self.offer_slots = StreamSlots(limits.max_offers, limits.max_offers_per_peer, what="offers")

    # a round is served from the agent's snapshot of it (plora.swarm.agent_round)
    def listed(self) -> dict[str, Entry]:
        return {i: e for i, e in super().listed().items() if self.serves(e)}

    def serves(self, entry: Entry) -> bool:
        return self.agent.snapshot.serves(entry.id, entry.manifest.artifact.sha256)

    def revocation_ids(self) -> list[str]:
        return [rid for rid in super().revocation_ids() if self.agent.snapshot.lists(rid)]

    def GetInventory(self, request: pb2.InventoryRequest, context: grpc.ServicerContext) -> pb2.Inventory:
        if request.HasField("round"):
            self.agent.begin_round(int(request.round), by_peer=True)
        return super().GetInventory(request, context)

    def Offer(self, request: pb2.OfferRequest, context: grpc.ServicerContext) -> pb2.OfferReply:
        inv = request.inventory
        try:
            # an offer may only point back at its sender: never make this agent connect to a third party
            refusal = offer_refusal(inv.agent, peer_ip(context), self.agent.peers())
            entries = [RemoteEntry(check_id(e.id), e.domain, e.sha256, e.size, b"")
                       for e in inv.entries[: self.limits.max_inventory_entries]]
        except TransferError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if refusal is not None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        slot = self.offer_slots.acquire(offer_sender(inv.agent, peer_ip(context), self.agent.peers()))
        if isinstance(slot, str):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, slot)
        try:  # held until the fetches end, even when the sender cancels: they go on in this thread
            return self._take_offer(inv, entries, int(request.round))
        finally:
            slot.release()

    def _take_offer(self, inv: pb2.Inventory, entries: list[RemoteEntry], round_: int) -> pb2.OfferReply:
        self.agent.begin_round(round_, by_peer=True)  # before anything of this round arrives here
        # the sender's revocations first (they may revoke what it offers), then its plasmids
        self.agent.recall.take_revocations(self.agent._channel(inv.agent), inv.agent, list(inv.revocations),
                                           round_, self.limits, self.agent.index)
        entries = self.agent.recall.offered(inv.agent, entries, round_)
        events = self.agent.take_from(inv.agent, entries, round_, via="push")
        return pb2.OfferReply(
            accepted=[e["id"] for e in events if e.get("accepted")],
            rejected=[f"{e['id']}: {'; '.join(e.get('reasons') or [e.get('error', '')])}"
                      for e in events if not e.get("accepted")],
            bytes_received=sum(e["manifest_bytes"] + e["artifact_bytes"] for e in events),
        )

    def Step(self, request: pb2.StepRequest, context: grpc.ServicerContext) -> pb2.StepReply:
        # only the coordinator that started this agent drives its rounds: anyone else could trigger contacts or
        # drain its events (collect) before the coordinator sees them
        expected = self.agent.cfg.step_token
        given = dict(context.invocation_metadata()).get(STEP_TOKEN_HEADER, "")
        if not expected:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "this agent runs its own rounds: it takes no Step calls")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "Step needs the token of the coordinator that started "
                                                             "this agent")
        if not request.collect:
            self.agent.begin_round(int(request.round))
        for data in request.revocations:  # issued at this agent by the swarm operator: verified like any other
            receipt = self.agent.recall.apply(bytes(data), int(request.round), "operator", self.agent.index)
            if receipt is not None and receipt.ok and receipt.id is not None:
                self.agent.snapshot.add_revocation(receipt.id)  # issued before its contact: served this round
        record = self.agent.collect(int(request.round)) if request.collect else self.agent.step(int(request.round))
        return pb2.StepReply(json=json.dumps(record))


class Agent:
    """A running agent (its server starts in the constructor); drive it with :meth:`step` or :func:`run_agent`."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.root = Path(cfg.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.limits = cfg.limits
        self.recall = AgentRecall(
            cfg.root, _recall_policy(cfg), folder=cfg.recall_dir, revocation_keys=cfg.revocation_keys,
            obey=cfg.obey_revocations, peer_scoring=cfg.peer_scoring, live_model=cfg.live_model, domain=cfg.domain,
        )
        self.checks = self.recall.checks() + build_checks(cfg)  # REVOKED / VERSION_ROLLBACK before the gate
        self.index = PlasmidIndex(self.root, self.limits)
        self.recall.import_revocations(cfg.revocations)
        self.recall.purge_held(self.index)  # before anything is served or loaded
        self.recall.start_live(self.index.refresh())
        self.servicer = AgentServicer(self, self.index, self.limits)
        self.servicer.revocations = self.recall.store if cfg.obey_revocations else None
        host, port = parse_address(cfg.listen)
        if not cfg.advertise and host in {"0.0.0.0", "::"}:
            raise TransferError(f"listening on {cfg.listen}: give --advertise IP:PORT, the address peers can reach")
        if ip_literal(parse_address(cfg.advertise)[0] if cfg.advertise else host) is None:
            raise TransferError(f"{cfg.advertise or cfg.listen}: an agent advertises an IP address, not a name "
                                "(peers take only offers that point back at the sender's own IP)")
        self.server = OfferServer(self.servicer, host=host, port=port)
        self.address = cfg.advertise or format_address(host, self.server.port)
        self.servicer.advertise = self.address
        self.name = cfg.name or self.address
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self._channels: dict[str, grpc.Channel] = {}
        self.refused: set[tuple[str, str]] = set()
        self._events: list[dict[str, Any]] = []
        self.snapshot = RoundSnapshot()  # what this agent serves during the current round
        self._stepped: int | None = None  # the last round this agent stepped itself (Step or its own timer)

    def begin_round(self, round_: int, by_peer: bool = False) -> None:
        """Freeze what this agent serves in ``round_`` at its first sight of that round (no-op afterwards). A peer
        (GetInventory, Offer) may only open the round after the last one this agent stepped itself: a round number
        it makes up (2**32 - 1) must not freeze what the agent serves until its own rounds catch up."""
        if by_peer and round_ > (self._stepped if self._stepped is not None else 0) + 1:
            return
        held = self.servicer.revocations  # all held (the servicer's revocation_ids() reads the snapshot: its lock)
        self.snapshot.begin(round_, lambda: (self.holdings(), held.ids() if held is not None else []))

    def peers(self) -> list[str]:
        if self.cfg.peers_file and not self.cfg.peers:
            with contextlib.suppress(OSError):
                self.cfg.peers = [p for p in Path(self.cfg.peers_file).read_text().split() if p]
        return list(self.cfg.peers)  # graph order, not port order: the same seed picks the same neighbours

    def holdings(self) -> dict[str, str]:
        """id -> artifact sha256 of every plasmid in the store."""
        return {i: e.manifest.artifact.sha256 for i, e in sorted(self.index.refresh().items())}

    def _channel(self, peer: str) -> grpc.Channel:
        with self._lock:
            if peer not in self._channels:
                self._channels[peer] = open_channel(peer, limits=self.limits)
            return self._channels[peer]

    def _claim(self, entries: list[RemoteEntry]) -> list[RemoteEntry]:
        held = self.holdings()
        wanted: list[RemoteEntry] = []
        with self._lock:
            for e in entries:
                if len(wanted) >= self.cfg.max_per_contact:
                    break
                if e.id in held or e.id in self._inflight or (e.id, e.sha256) in self.refused:
                    continue
                self._inflight.add(e.id)
                wanted.append(e)
        return wanted

    def take_from(self, peer: str, entries: list[RemoteEntry], round_: int, via: str) -> list[dict[str, Any]]:
        """Fetch from ``peer`` what this agent lacks among ``entries``; one event per attempt."""
        events: list[dict[str, Any]] = []
        for e in self._claim(entries):
            event: dict[str, Any] = {"round": round_, "via": via, "peer": peer, "id": e.id, "sha256": e.sha256,
                                     "domain": e.domain, "accepted": False, "manifest_bytes": 0, "artifact_bytes": 0}
            try:
                r = fetch(peer, e.id, self.root, checks=self.checks, limits=self.limits, expect_sha256=e.sha256,
                          size_hint=e.size, channel=self._channel(peer))
                event.update(accepted=r.accepted, reasons=r.reasons, codes=[reason_code(x) for x in r.reasons],
                             manifest_bytes=r.manifest_bytes, artifact_bytes=r.bytes_received - r.manifest_bytes,
                             seconds=round(r.receive_s + r.check_s, 4))
                if not r.accepted:
                    with self._lock:
                        self.refused.add((e.id, e.sha256))
                self.recall.fetched(peer, event, r.path, round_, self.index)
            except TransferError as err:
                event["error"] = str(err)
            except Exception as err:  # noqa: BLE001 - a broken check must not kill the agent; it is reported
                event["error"] = f"{type(err).__name__}: {format_reason(err)}"
            finally:
                with self._lock:
                    self._inflight.discard(e.id)
            events.append(event)
        with self._lock:
            self._events.extend(events)
        return events

    def step(self, round_: int) -> dict[str, Any]:
        """One gossip round: contact one random peer, pull then push. Never raises for a dead or bad peer."""
        self._stepped = round_ if self._stepped is None else max(self._stepped, round_)
        self.begin_round(round_)
        rng = random.Random(f"{self.cfg.seed}:{self.name}:{round_}")
        peers = self.peers()
        peer = rng.choice(peers) if peers else None
        errors: list[str] = []
        inventory_bytes = 0  # inventories as sent: the one pulled and the one pushed (Offer)
        if peer is not None:
            stub = pb2_grpc.PlasmidExchangeStub(self._channel(peer))
            inv, relist = None, False
            try:
                inv = stub.GetInventory(pb2.InventoryRequest(round=round_), timeout=self.limits.inventory_timeout_s)
                inventory_bytes += inv.ByteSize()
                # revocations ahead of plasmids: take the peer's first; if it lacks some of ours, push first (it
                # takes ours from the Offer) and list its inventory again before pulling
                self.recall.take_revocations(self._channel(peer), peer, list(inv.revocations), round_, self.limits,
                                             self.index)
                relist = self.recall.obey and not set(self.servicer.revocation_ids()) <= {r.id for r in inv.revocations}
                if not relist:
                    self._pull(peer, inv, round_)
            except grpc.RpcError as err:
                errors.append(f"pull {peer}: {err.code().name}: {err.details()}")
            try:
                offer = pb2.OfferRequest(inventory=self.servicer.inventory(), round=round_)
                inventory_bytes += offer.ByteSize()
                _push(stub, offer, self.cfg.contact_timeout_s, self.limits.busy_wait_s)
            except grpc.RpcError as err:
                errors.append(f"push {peer}: {err.code().name}: {err.details()}")
            if relist:
                try:
                    inv = stub.GetInventory(pb2.InventoryRequest(round=round_),
                                            timeout=self.limits.inventory_timeout_s)
                    inventory_bytes += inv.ByteSize()
                    self._pull(peer, inv, round_)
                except grpc.RpcError as err:
                    errors.append(f"pull {peer}: {err.code().name}: {err.details()}")
        record = self.collect(round_)
        record.update(peer=peer, errors=errors, inventory_bytes=inventory_bytes)
        return record

    def _pull(self, peer: str, inv: pb2.Inventory, round_: int) -> None:
        entries = [RemoteEntry(x.id, x.domain, x.sha256, x.size, b"") for x in inv.entries]
        entries = self.recall.offered(peer, [e for e in entries if _valid_id(e.id)], round_)
        self.take_from(peer, entries, round_, "pull")

    def collect(self, round_: int) -> dict[str, Any]:
        """What happened since the last call (pulls, and pushes other agents made to this one), and holdings."""
        with self._lock:
            events, self._events = self._events, []
        return {"agent": self.name, "address": self.address, "round": round_, "events": events,
                "holdings": self.holdings(), "peer": None, "errors": [], "inventory_bytes": 0,
                "recall": self.recall.record(round_)}

    def stop(self, grace: float = 1.0) -> None:
        self.server.stop(grace)
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()


def _push(stub: pb2_grpc.PlasmidExchangeStub, offer: pb2.OfferRequest, timeout: float, busy_wait_s: float) -> None:
    """Send an Offer; a peer busy with other Offers (RESOURCE_EXHAUSTED) is asked again for up to ``busy_wait_s``."""
    busy_until, pause = time.monotonic() + busy_wait_s, 0.05
    while True:
        try:
            stub.Offer(offer, timeout=timeout)
            return
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() + pause > busy_until:
                raise
        time.sleep(pause)
        pause = min(1.0, 2 * pause)


def _valid_id(plasmid_id: str) -> bool:
    try:
        check_id(plasmid_id)
    except TransferError:
        return False
    return True


class WallClock:
    """Round times on the wall clock (epoch seconds), so agents on different machines agree through --start-at."""

    def now(self) -> float:
        return time.time()

    def wait_until(self, t: float) -> None:
        if (delay := t - time.time()) > 0:
            time.sleep(delay)


def run_agent(cfg: AgentConfig, rounds: int, round_s: float = 2.0, start_at: float | None = None,
              linger_s: float = 5.0, out: str | Path | None = None, coordinated: bool = False,
              on_ready: Any = None, clock: Any = None, coordinator_pid: int | None = None) -> list[dict[str, Any]]:
    """Run one agent by itself: a round every ``round_s`` seconds from ``start_at`` (epoch; default now).

    With ``coordinated`` the agent only serves, and rounds come as Step calls (``plora swarm net``) until the
    coordinator stops it, or dies: the agent stops within a second once it is no longer the child of
    ``coordinator_pid`` (default: its parent at start), so a coordinator killed with SIGKILL leaves no agent behind.
    ``linger_s`` keeps serving after the last round so slower peers can still fetch.
    ``clock`` (``now()``, ``wait_until(t)``; default :class:`WallClock`) decides when each round starts.
    """
    clock = clock or WallClock()
    parent = coordinator_pid or os.getppid()
    agent = Agent(cfg)
    records: list[dict[str, Any]] = []
    try:
        if on_ready is not None:
            on_ready(agent)
        if coordinated:
            while os.getppid() == parent:  # an orphan is re-parented (to init or a subreaper): never back to it
                time.sleep(0.5)
            return records
        t0 = start_at if start_at is not None else clock.now()
        for r in range(rounds):
            clock.wait_until(t0 + r * round_s)
            records.append(agent.step(r))
        clock.wait_until(clock.now() + max(0.0, linger_s))
        records.append(agent.collect(rounds))
        if out is not None:
            atomic_write_json(out, {"agent": agent.name, "address": agent.address, "peers": cfg.peers,
                                    "seed": cfg.seed, "records": records})
        return records
    finally:
        agent.stop()
