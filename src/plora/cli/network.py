"""`plora offer`, `plora fetch`, `plora agent`: share plasmids over gRPC.

    plora offer --root out/ --port 50051
    plora fetch --from localhost:50051 --id legal --dest received/ --trusted-keys keys/ --policy_file policy.json
    plora agent --listen 127.0.0.1:50061 --peers 127.0.0.1:50062 --root a0/ --rounds 10 --seed 42
"""

from __future__ import annotations

import typer

ROOT = typer.Option(..., "--root", help="folder whose plasmid folders (with plora.yml) are served")
TLS_CERT = typer.Option(None, "--tls-cert", help="PEM certificate (server: its own; client: for mutual TLS)")
TLS_KEY = typer.Option(None, "--tls-key", help="PEM private key matching --tls-cert")


def _split(values: list[str] | None) -> list[str]:
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def offer(
    root: str = ROOT,
    port: int = typer.Option(50051, "--port", help="TCP port (0: the OS picks one, printed)"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (0.0.0.0: all)"),
    tls_cert: str = TLS_CERT,
    tls_key: str = TLS_KEY,
    tls_client_ca: str = typer.Option(None, "--tls-client-ca", help="require client certificates signed by this CA"),
    max_streams: int = typer.Option(64, "--max-streams", help="concurrent fetches; more get RESOURCE_EXHAUSTED"),
    max_streams_per_peer: int = typer.Option(16, "--max-streams-per-peer", help="concurrent fetches per client IP"),
    chunk_kib: int = typer.Option(1024, "--chunk-kib", help="artifact bytes per stream message, KiB"),
    bulk: bool = typer.Option(True, "--bulk/--no-bulk", help="offer the bulk socket (plaintext servers only)"),
) -> None:
    """Serve every plasmid under --root over gRPC until interrupted (the root is rescanned on each request)."""
    import signal
    import threading

    from plora.errors import TransferError
    from plora.grpc.limits import Limits
    from plora.grpc.server import serve
    from plora.grpc.tls import ServerTLS

    if (tls_cert is None) != (tls_key is None):
        raise TransferError("TLS needs both --tls-cert and --tls-key")
    if tls_client_ca and not tls_cert:
        raise TransferError("--tls-client-ca needs --tls-cert and --tls-key")
    if not 1 <= max_streams <= 4096 or not 1 <= max_streams_per_peer <= 4096 or not 16 <= chunk_kib <= 4096:
        raise TransferError("--max-streams and --max-streams-per-peer must be 1..4096 and --chunk-kib 16..4096")
    tls = ServerTLS(tls_cert, tls_key, tls_client_ca) if tls_cert else None
    limits = Limits(max_streams=max_streams, max_streams_per_peer=max_streams_per_peer, chunk_bytes=chunk_kib * 1024,
                    bulk=bulk)
    server = serve(root, port=port, host=host, limits=limits, tls=tls)
    ids = sorted(server.servicer.index.refresh())
    mode = "mutual TLS" if tls_client_ca else "TLS" if tls else "plaintext"
    if server.servicer.bulk is not None:
        mode += f", bulk socket on port {server.servicer.bulk.port}"
    typer.echo(f"offering {len(ids)} plasmid(s) from {root} on {server.address} ({mode}): {', '.join(ids) or '-'}")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(grace=2.0)
    typer.echo("stopped")


def fetch(
    address: str = typer.Option(..., "--from", help="HOST:PORT of an offer server or agent"),
    plasmid_id: str = typer.Option(..., "--id", help="plasmid id to fetch"),
    dest: str = typer.Option("received", "--dest", help="destination folder; the plasmid lands in DEST/<id>"),
    trusted_keys: list[str] = typer.Option(None, "--trusted-keys", help="public key files/folders (repeat or a,b)"),
    policy_file: str = typer.Option(None, "--policy_file", "--policy-file", help="gate policy JSON"),
    allowed_targets_file: str = typer.Option(None, "--allowed_targets_file", "--allowed-targets-file"),
    quorum: int = typer.Option(None, "--quorum", help="distinct trusted signers required (default: the policy's)"),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="run the security gate on the staged plasmid"),
    quarantine: str = typer.Option(None, "--quarantine", help="move refused plasmids here with their reasons"),
    tls_ca: str = typer.Option(None, "--tls-ca", help="CA certificate: connect with TLS and verify the server"),
    tls_cert: str = TLS_CERT,
    tls_key: str = TLS_KEY,
    tls_server_name: str = typer.Option(None, "--tls-server-name", help="name to check in the server certificate"),
    wait_s: float = typer.Option(10.0, "--wait", help="seconds to wait for the server to come up"),
    bulk: bool = typer.Option(True, "--bulk/--no-bulk", help="take the bytes over the bulk socket when offered"),
) -> None:
    """Fetch one plasmid: stream, hash, verify signatures, run the gate, then move it into DEST/<id> atomically.

    Exit 0 when accepted; 1 when refused (each reason printed); 2 on bad input or a transfer failure.
    """
    import math
    from dataclasses import replace
    from pathlib import Path

    import grpc

    from plora.errors import TransferError
    from plora.gate.policy import load_policy
    from plora.grpc import client
    from plora.grpc.checks import Check, gate_check, signature_check
    from plora.grpc.limits import Limits, check_id, parse_address
    from plora.grpc.tls import ClientTLS

    parse_address(address)
    check_id(plasmid_id)
    if not (wait_s >= 0 and math.isfinite(wait_s)):
        raise TransferError(f"--wait must be a number of seconds, 0 or more, got {wait_s:g}")
    keys = _split(trusted_keys)
    policy = load_policy(policy_file, allowed_targets_file, trusted_keys=keys or None, quorum=quorum)
    checks: list[Check] = []
    if policy.signatures:
        if not policy.trusted_keys:
            raise TransferError("the policy requires signatures: give --trusted-keys")
        checks.append(signature_check(policy.trusted_keys, policy.quorum))
    if gate:
        from plora.cli.gate import stage_printer

        checks.append(gate_check(policy, progress=stage_printer()))
    if tls_ca is None and (tls_cert or tls_server_name):
        raise TransferError("--tls-cert/--tls-server-name need --tls-ca")
    tls = ClientTLS(tls_ca, tls_cert, tls_key, tls_server_name) if tls_ca else None
    limits = replace(Limits(), max_artifact_bytes=min(Limits().max_artifact_bytes, policy.max_artifact_bytes),
                     bulk=bulk)
    channel = client.open_channel(address, tls, limits)  # checks the TLS files
    try:
        # a bad --dest or --quarantine fails before any network or gate work ...
        client.prepare_dest(Path(dest), None if quarantine is None else Path(quarantine))
        client.check_replaceable(Path(dest) / plasmid_id)  # ... and so does a DEST/<id> that is not a plasmid
        grpc.channel_ready_future(channel).result(timeout=wait_s)
        result = client.fetch(address, plasmid_id, dest, checks=checks, tls=tls, limits=limits,
                              quarantine=quarantine, channel=channel)
    except grpc.FutureTimeoutError:
        raise TransferError(f"{address}: no answer in {wait_s:g} s (server down or TLS handshake failed)") from None
    finally:
        channel.close()
    size = f"{result.size / 1e6:.2f} MB" if result.size else "?"
    if result.accepted:
        typer.echo(f"accepted {plasmid_id} (sha256 {result.sha256[:12]}, {size}) -> {result.path} "
                   f"[receive {result.receive_s:.2f} s, checks {result.check_s:.2f} s]")
        return
    typer.echo(f"rejected {plasmid_id} (sha256 {result.sha256[:12] or '?'}, {size}) from {address}:", err=True)
    for reason in result.reasons:
        typer.echo(f"  - {reason}", err=True)
    if result.quarantined:
        typer.echo(f"quarantined in {result.quarantined}", err=True)
    raise typer.Exit(1)


def agent(
    listen: str = typer.Option("127.0.0.1:0", "--listen", help="HOST:PORT to serve on (port 0: the OS picks)"),
    advertise: str = typer.Option(None, "--advertise", help="IP:PORT peers reach this agent at (default: --listen)"),
    peers: list[str] = typer.Option(None, "--peers", help="peer addresses h:p,h:p (repeat or comma-separated)"),
    root: str = ROOT,
    keys: list[str] = typer.Option(None, "--keys", "--trusted-keys", help="trusted public keys: signatures required"),
    policy_file: str = typer.Option(None, "--policy_file", "--policy-file", help="gate policy JSON"),
    security: str = typer.Option("on", "--security", help="on: verify + gate every fetch; off: hashes only"),
    rounds: int = typer.Option(10, "--rounds", min=0),
    seed: int = typer.Option(0, "--seed"),
    name: str = typer.Option("", "--name", help="agent name in reports (default: its address)"),
    round_s: float = typer.Option(2.0, "--round-s", help="seconds between rounds"),
    start_at: float = typer.Option(None, "--start-at", help="epoch seconds of round 0 (align agents on machines)"),
    linger_s: float = typer.Option(5.0, "--linger-s", help="keep serving this long after the last round"),
    out: str = typer.Option(None, "--out", help="write this agent's round records (JSON)"),
    max_per_contact: int = typer.Option(8, "--max-per-contact", min=1),
    coordinated: bool = typer.Option(False, "--coordinated", hidden=True, help="rounds come from plora swarm net"),
    ready_file: str = typer.Option(None, "--ready-file", hidden=True, help="write the bound address here"),
    peers_file: str = typer.Option(None, "--peers-file", hidden=True, help="peer addresses, read at round 0"),
    revocation_keys: list[str] = typer.Option(
        None, "--revocation-keys", help="keys trusted to sign revocations (default: policy recall, else trusted keys)"
    ),
    revocations: list[str] = typer.Option(
        None, "--revocation", help="a revocation file (plora revoke) to obey from the start and pass on (repeatable)"
    ),
    recall_dir: str = typer.Option(None, "--recall-dir", help="revocations, rollback marks, quarantine (ROOT.recall)"),
    peer_scoring: str = typer.Option(None, "--peer-scoring", metavar="on|off", help="default: the policy's"),
    live_model: bool = typer.Option(False, "--live-model", help="hot-load accepted plasmids into a live model"),
    domain: str = typer.Option(None, "--domain", help="with --live-model: inject only plasmids of this domain"),
    obey_revocations: str = typer.Option("on", "--obey-revocations", hidden=True, help="off: a simulated trojan agent"),
    step_token_file: str = typer.Option(None, "--step-token-file", hidden=True,
                                        help="the coordinator's token (a mode 0600 file): Step calls must carry it"),
    coordinator_pid: int = typer.Option(None, "--coordinator-pid", hidden=True,
                                        help="with --coordinated: stop once this process is no longer the parent"),
) -> None:
    """Run one swarm agent: serve its store and gossip push-pull with --peers for --rounds rounds."""
    from pathlib import Path

    from plora.errors import PloraError
    from plora.fsio import atomic_write_text
    from plora.swarm.agent import AgentConfig, run_agent

    for flag, value in (("--security", security), ("--peer-scoring", peer_scoring or "on"),
                        ("--obey-revocations", obey_revocations)):
        if value not in {"on", "off"}:
            raise PloraError(f"{flag} must be on or off, got {value!r}")
    token = None
    if step_token_file:
        try:
            token = Path(step_token_file).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise PloraError(f"--step-token-file {step_token_file}: cannot read it ({err})") from None
        if not token:
            raise PloraError(f"--step-token-file {step_token_file} is empty")
    cfg = AgentConfig(listen=listen, root=root, peers=_split(peers), name=name, seed=seed, security=security == "on",
                      policy_file=policy_file, trusted_keys=_split(keys), max_per_contact=max_per_contact,
                      peers_file=peers_file, advertise=advertise, revocation_keys=_split(revocation_keys),
                      revocations=list(revocations or []),
                      recall_dir=recall_dir, peer_scoring=None if peer_scoring is None else peer_scoring == "on",
                      live_model=live_model, domain=domain, obey_revocations=obey_revocations == "on",
                      step_token=token)

    def ready(a) -> None:
        if ready_file:
            atomic_write_text(ready_file, a.address + "\n")
        typer.echo(f"agent {a.name} on {a.address}, {len(a.holdings())} plasmid(s), peers: {', '.join(cfg.peers)}")

    records = run_agent(cfg, rounds, round_s=round_s, start_at=start_at, linger_s=linger_s, out=out,
                        coordinated=coordinated, on_ready=ready, coordinator_pid=coordinator_pid)
    for rec in records:
        got = [e["id"] for e in rec["events"] if e.get("accepted")]
        refused = [f"{e['id']} ({', '.join(e.get('codes', []))})" for e in rec["events"]
                   if not e.get("accepted") and "error" not in e]
        failed = [f"{e['id']}: {e['error']}" for e in rec["events"] if "error" in e] + rec["errors"]
        typer.echo(f"round {rec['round']}: peer {rec['peer']}, accepted {got or '-'}, refused {refused or '-'}"
                   + (f", failed {failed}" if failed else ""))


def register(app: typer.Typer) -> None:
    app.command("offer")(offer)
    app.command("fetch")(fetch)
    app.command("agent")(agent)
