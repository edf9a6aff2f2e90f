"""Swarm Sim v2: the vectorised engine against the slow reference, protocol invariants, report, CLI and shims.

Engine-level tests use verdicts fixed by hand (``FixedVerdicts``): they test the gossip and the accounting, not the
gate. The real pool and the real gate are exercised in test_swarm_pool.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plora.swarm import make_config, run_simulation
from plora.swarm.engine import EngineInput, PoolView, run_engine
from plora.swarm.graphs import from_edges, make_graph, spectral_gap
from plora.swarm.pool import FixedVerdicts, PoolEntry
from plora.swarm.reference import run_reference
from plora.swarm.theory import mean_field_rounds

DOMAINS = ("arithmetic", "legal", "medical")
REPO = Path(__file__).resolve().parents[1]


def fixed_pool(domains=DOMAINS, trojan_ok: bool = False) -> FixedVerdicts:
    entries, accept = [], []
    for i, d in enumerate(domains):
        entries.append(PoolEntry(f"clean-{d}", d, False, f"{2 * i:064x}", 20_000 + i, 1_500 + i))
        entries.append(PoolEntry(f"trojan-{d}", d, True, f"{2 * i + 1:064x}", 30_000 + i, 1_600 + i))
        accept += [True, trojan_ok]
    reasons = [() if ok else ("TRIGGER_SUSPECT", "WEIGHT_ANOMALY") for ok in accept]
    return FixedVerdicts(entries, accept, reasons)


def engine_input(kind: str, n: int, seed: int, max_fetch: int | None, policies: int = 1) -> EngineInput:
    g = make_graph(kind, n, p=0.08, ws_k=4, ws_beta=0.2, ba_m=2, seed=seed)
    width = 6
    pool = PoolView(
        domains=list(DOMAINS),
        domain_of=np.repeat(np.arange(3), 2),
        trojan=np.tile([False, True], 3),
        artifact_bytes=np.arange(1, width + 1) * 1000,
        manifest_bytes=np.arange(1, width + 1) * 10,
    )
    rng = np.random.default_rng(seed)
    trojan_agents = rng.random(n) < 0.2
    dom = np.arange(n) % 3
    held = np.where(trojan_agents, 1 << (2 * dom + 1), 1 << (2 * dom)).astype(np.uint8)
    held[rng.random(n) < 0.5] = 0  # some agents start empty
    accept = np.array([[True, False, True, True, True, False], [True, True, False, True, True, True]])[:policies]
    policy = rng.integers(0, policies, n).astype(np.uint8) if policies > 1 else None
    return EngineInput(g, pool, accept, held, ~trojan_agents, rounds=40, seed=seed, max_fetch=max_fetch, policy=policy)


def as_sets(words: np.ndarray, width: int = 6) -> list[set[int]]:
    return [{p for p in range(width) if (int(w) >> p) & 1} for w in words]


@pytest.mark.parametrize(
    "kind,max_fetch,policies",
    [("er", None, 1), ("er", 1, 1), ("ws", 2, 1), ("ba", None, 2), ("er", 1, 2)],
)
def test_fast_engine_equals_reference(kind: str, max_fetch: int | None, policies: int) -> None:
    for seed in range(3):
        inp = engine_input(kind, 70, seed, max_fetch, policies)
        fast, ref = run_engine(inp), run_reference(inp)
        assert as_sets(fast.holdings) == ref.holdings
        assert as_sets(fast.rejected) == ref.rejected
        assert fast.rounds_run == ref.rounds_run
        assert [r["offers"] for r in fast.series[1:]] == ref.offers_per_round
        assert fast.bytes_inventory + fast.bytes_manifest + fast.bytes_artifact == ref.bytes_total
        for g in range(policies):
            for p in range(6):
                assert fast.accepted[g, p] == ref.accepted.get((g, p), 0)
                assert fast.refused[g, p] == ref.refused.get((g, p), 0)


def test_no_agent_holds_what_it_never_received() -> None:
    inp = engine_input("er", 80, 5, None)
    ref = run_reference(inp)
    initial = as_sets(inp.holdings)
    nbrs = [set(inp.graph.neighbours(a).tolist()) for a in range(inp.graph.n)]
    for a, held in enumerate(ref.holdings):
        for p in held - initial[a]:
            assert ref.received_from[a][p] in nbrs[a]  # came over an overlay edge
            assert inp.accept[0, p]  # and passed the receiver's gate
        assert not held & ref.rejected[a]
    fast = run_engine(inp)
    union_of_neighbours = np.zeros(inp.graph.n, dtype=np.uint8)
    for a in range(inp.graph.n):
        for v in inp.graph.neighbours(a):
            union_of_neighbours[a] |= fast.holdings[v]
    gained = fast.holdings & ~inp.holdings
    assert np.all(gained & ~union_of_neighbours == 0)
    assert np.all(fast.holdings & fast.rejected == 0)


def test_fetch_cap_is_respected() -> None:
    inp = engine_input("er", 60, 2, 1)
    fast = run_engine(inp)
    for row in fast.series[1:]:
        assert row["offers"] <= 2 * row["contacts"]


def run(tmp_path: Path, provider=None, **flags) -> dict:
    base = {"agents": 300, "graph_p": 0.03, "trojan_rate": 0.1, "domains": DOMAINS, "report_dir": str(tmp_path)}
    report = run_simulation(make_config(**{**base, **flags}), provider or fixed_pool())
    path = Path(report["meta"]["timings"]["report_path"])
    assert path.exists() and path.with_suffix(".png").exists()
    assert json.loads(path.read_text()) == report
    return report


def test_bytes_add_up_and_gate_counts_are_consistent(tmp_path: Path) -> None:
    report = run(tmp_path, max_fetch_per_contact=2)
    f, rounds, pool = report["final"], report["rounds"], report["meta"]["pool"]
    b = f["bytes_breakdown"]
    assert f["bytes_on_wire"] == b["inventory"] + b["manifest"] + b["artifact"] == sum(r["bytes"] for r in rounds)
    contacts = sum(r["contacts"] for r in rounds)
    assert b["inventory"] >= 2 * 16 * contacts  # two inventory headers per contact, plus 32 bytes per entry
    assert (b["inventory"] - 2 * 16 * contacts) % 32 == 0
    gate = f["gate"]
    accepted = gate["accepted_clean"] + gate["accepted_trojan"]
    assert f["accepted_offers"] == accepted == sum(r["accepted"] for r in rounds)
    assert f["offers"] == f["accepted_offers"] + gate["rejected_clean"] + gate["rejected_trojan"]
    assert all(r["offers"] == r["accepted"] + r["rejected"] for r in rounds)
    assert gate["false_negatives"] == gate["accepted_trojan"] == 0  # the fixed verdicts reject every trojan
    assert gate["false_positives"] == gate["rejected_clean"] == 0
    rejected = gate["rejected_trojan"]
    assert gate["rejection_reasons"] == {"TRIGGER_SUSPECT": rejected, "WEIGHT_ANOMALY": rejected}
    # every transfer costs its own plasmid's manifest and artifact bytes (sizes differ per plasmid here)
    per_plasmid = [(e["transfers"]["accepted"] + e["transfers"]["rejected"], e) for e in pool]
    assert sum(n for n, _ in per_plasmid) == f["offers"]
    assert b["manifest"] == sum(n * e["manifest_bytes"] for n, e in per_plasmid)
    assert b["artifact"] == sum(n * e["artifact_bytes"] for n, e in per_plasmid)
    assert all(e["transfers"]["rejected"] == 0 for e in pool if e["verdict"]["accepted"])
    assert all(e["transfers"]["accepted"] == 0 for e in pool if not e["verdict"]["accepted"])


def test_security_off_covers_every_reachable_agent(tmp_path: Path) -> None:
    report = run(tmp_path, security=False)
    f = report["final"]
    assert f["quiescent"]
    assert all(v == 1.0 for v in f["coverage_reachable"].values())
    assert all(r is not None for r in f["rounds_to_full_coverage"].values())
    assert f["gate"]["rejected_clean"] == f["gate"]["rejected_trojan"] == 0
    assert f["trojan_prevalence"] > 0.5  # nothing stops the trojans either
    assert report["meta"]["policy"] is None


def test_security_on_stops_what_the_gate_rejects(tmp_path: Path) -> None:
    report = run(tmp_path, security=True)
    f = report["final"]
    assert f["trojan_prevalence"] == 0.0 and f["gate"]["accepted_trojan"] == 0
    assert f["gate"]["rejected_trojan"] > 0
    assert all(v == 1.0 for v in f["coverage_reachable"].values())
    # a gate that lets trojans through: they spread like clean ones and are counted as false negatives
    leaky = run(tmp_path / "leaky", provider=fixed_pool(trojan_ok=True), security=True)
    assert leaky["final"]["gate"]["false_negatives"] == leaky["final"]["gate"]["accepted_trojan"] > 0
    assert leaky["final"]["trojan_prevalence"] > 0.5


def test_same_seed_same_report_except_timings(tmp_path: Path) -> None:
    a = run(tmp_path / "a", seed=3, sources=2)
    b = run(tmp_path / "b", seed=3, sources=2)
    c = run(tmp_path / "c", seed=4, sources=2)
    for r in (a, b, c):
        r["meta"].pop("timings")
        r["meta"]["flags"].pop("report_dir")
    assert a == b
    assert a != c


def test_sources_mode_matches_rumour_theory_order(tmp_path: Path) -> None:
    report = run(tmp_path, agents=2000, graph_p=10 / 1999, trojan_rate=0.0, sources=1, security=False)
    f = report["final"]
    predicted = f["theory"]["mean_field_rounds"]
    for d in DOMAINS:
        observed = f["rounds_to_full_coverage"][d]
        assert observed is not None and predicted[d] is not None
        assert 0.5 * predicted[d] <= observed <= 2.5 * predicted[d]  # same order as the mean-field recursion
    assert report["meta"]["graph"]["spectral_gap"] is not None


def test_graphs_are_simple_symmetric_and_seeded() -> None:
    for kind in ("er", "ws", "ba"):
        g = make_graph(kind, 500, p=0.02, seed=1)
        assert g.indices.dtype == np.int32
        e = g.edge_list()
        assert np.all(e[:, 0] < e[:, 1]) and len(np.unique(e, axis=0)) == len(e) == g.edges
        for a in (0, 7, 499):
            assert all(a in g.neighbours(v) for v in g.neighbours(a))
        again = make_graph(kind, 500, p=0.02, seed=1)
        assert np.array_equal(g.indices, again.indices)
    big = make_graph("er", 200_000, p=10 / 199_999, seed=0)  # the sparse sampler (no n^2 anywhere)
    assert abs(big.degrees.mean() - 10) < 0.1
    ring = from_edges(4, np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0]))
    assert spectral_gap(ring) == pytest.approx(1.0)  # C4: eigenvalues of D^-1/2 A D^-1/2 are 1, 0, 0, -1
    assert mean_field_rounds(np.full(1000, 10), 1.0) == 0


def test_cli_sim_and_summarise(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from plora.cli.main import app

    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["swarm", "summarise", "--reports", str(empty)])
    assert res.exit_code != 0
    res = runner.invoke(app, ["swarm", "sim", "--agents", "6", "--security", "maybe"])
    assert res.exit_code != 0
    run(tmp_path / "r", seed=1)
    run(tmp_path / "r", seed=2, security=False)
    out = tmp_path / "summary.json"
    res = runner.invoke(app, ["swarm", "summarise", "--reports", str(tmp_path / "r"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(out.read_text())
    assert len(summary["runs"]) == 2 and {a["security"] for a in summary["aggregates"]} == {True, False}
    assert "coverage_mean" in res.output
    for _ in range(2):  # the default output lies in the reports folder: a rerun does not read (or list) its own
        res = runner.invoke(app, ["swarm", "summarise", "--reports", str(tmp_path / "r")])
        assert res.exit_code == 0, res.output
        again = json.loads((tmp_path / "r" / "summary_v2.json").read_text())
        assert again["skipped"] == [] and len(again["runs"]) == 2 and "skipped" not in res.output


def test_shim_empty_folder_is_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.evaluate_v2", "--reports", str(tmp_path), "--out", str(tmp_path / "s.json")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no swarm reports") and len(proc.stderr.strip().splitlines()) == 1


def test_policy_file_keeps_what_the_flags_do_not_give(tmp_path: Path, monkeypatch) -> None:
    """``--policy_file`` wins over the sim's defaults; a gate flag overrides it only when given."""
    from typer.testing import CliRunner

    from plora.cli.main import app
    from plora.swarm import sim

    real = sim.run_simulation
    monkeypatch.setattr(sim, "run_simulation", lambda cfg, **kw: real(cfg, fixed_pool(), **kw))  # no trained pool
    pf = tmp_path / "policy.json"
    pf.write_text(json.dumps({"allowed_ranks": [8], "allowed_targets": ["all"], "signatures": True,
                              "trusted_keys": [str(tmp_path / "k.pub")], "tau_norm_z": 3.5}))  # fmt: skip
    args = ["swarm", "sim", "--agents", "30", "--rounds", "3", "--domains", ",".join(DOMAINS), "--policy_file", str(pf)]

    def policy(*extra: str) -> dict:
        out = tmp_path / f"r{len(extra)}"
        res = CliRunner().invoke(app, [*args, *extra, "--report_dir", str(out)])
        assert res.exit_code == 0, res.output
        return json.loads(next(out.glob("*.json")).read_text())["meta"]["policy"]

    kept = policy()
    assert kept["allowed_ranks"] == [8] and kept["signatures"] is True and kept["tau_norm_z"] == 3.5
    assert set(kept["allowed_targets"]) == {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}  # "all"
    assert kept["trusted_keys"] == [str(tmp_path / "k.pub")]
    given = policy("--allowed_ranks", "4,16", "--signatures", "off")
    assert given["allowed_ranks"] == [4, 16] and given["signatures"] is False
    assert set(given["allowed_targets"]) == set(kept["allowed_targets"]) and given["tau_norm_z"] == 3.5


def test_rounds_after_full_coverage_only_screen_and_are_reported(tmp_path: Path) -> None:
    from plora.swarm import format_summary

    report = run(tmp_path, agents=2000, graph_p=10 / 1999, trojan_rate=0.05, security=True, rounds=500)
    f = report["final"]
    last = max(f["rounds_to_full_coverage"].values())
    assert f["quiescent"] and f["rounds_run"] > last  # the run goes on until nothing is left to screen
    tail = [r for r in report["rounds"] if r["round"] > last]
    assert all(min(r["coverage_reachable"].values()) == 1.0 for r in tail)
    refused, accepted = sum(r["rejected"] for r in tail), sum(r["accepted"] for r in tail)
    assert refused > 0
    line = f"full coverage at round {last}; rounds {last + 1}-{f['rounds_run']} screened what was still on offer: "
    assert line + f"{refused:,} refused, {accepted:,} accepted" in format_summary(report)
    stopped = run(tmp_path / "stop", agents=2000, graph_p=10 / 1999, trojan_rate=0.05, security=True, rounds=last)
    assert stopped["final"]["coverage_reachable"] == f["coverage_reachable"]  # --rounds N stops at full coverage


# ------------------------------------------------------------------------------------------------------ recall
def with_recall(inp: EngineInput, seed: int, scoring=None, revoke: bool = True) -> EngineInput:
    """Two revocation records (trojans the gate accepts) entering at honest agents at rounds 3 and 5; trojan agents
    ignore them. ``scoring``: peer-scoring parameters or None."""
    import dataclasses

    from plora.swarm.recall import RevocationPlan

    honest = np.flatnonzero(inp.honest)
    rng = np.random.default_rng(100 + seed)
    plan = RevocationPlan(masks=[0b001000, 0b000010], issue_round=[3, 5],
                          origin=[int(rng.choice(honest)), int(rng.choice(honest))], record_bytes=[1500, 1700],
                          obey=inp.honest)
    return dataclasses.replace(inp, revocations=plan if revoke else None, scoring=scoring)


@pytest.mark.parametrize("kind,max_fetch,policies", [("er", None, 1), ("er", 1, 1), ("ws", 2, 1), ("ba", None, 2)])
@pytest.mark.parametrize("scoring", [None, (1.0, 4.0, 0.9, -3.0), (0.7, 2.3, 0.77, -1.1)])
def test_fast_engine_equals_reference_with_revocations_and_peer_scores(kind, max_fetch, policies, scoring) -> None:
    from plora.recall.scoring import Scoring

    for seed in range(3):
        for revoke in (True, False):
            inp = with_recall(engine_input(kind, 70, seed, max_fetch, policies), seed,
                              Scoring(*scoring) if scoring else None, revoke)
            fast, ref = run_engine(inp), run_reference(inp)
            assert as_sets(fast.holdings) == ref.holdings and as_sets(fast.rejected) == ref.rejected
            assert fast.rounds_run == ref.rounds_run
            assert [r["offers"] for r in fast.series[1:]] == ref.offers_per_round
            total = fast.bytes_inventory + fast.bytes_manifest + fast.bytes_artifact + fast.bytes_revocation
            assert total == ref.bytes_total
            assert fast.purged == ref.purged and fast.graylisted == ref.graylisted
            if revoke:
                assert as_sets(fast.revocations_held, 2) == ref.revocations
                assert fast.purged > 0
            if scoring:
                g = inp.graph
                rows = np.repeat(np.arange(g.n), np.diff(g.indptr))
                got = {(int(r), int(c)): float(s) for r, c, s in zip(rows, g.indices, fast.scores, strict=True) if s}
                assert got == ref.scores  # every score, bit for bit
    # revoked plasmids are gone from every obeying agent that got the revocation, and never fetched again
    inp = with_recall(engine_input("er", 70, 0, None, 1), 0)
    fast = run_engine(inp)
    revoked = np.array([sum(inp.revocations.masks[r] for r in range(2) if (int(w) >> r) & 1) for w in
                        fast.revocations_held], dtype=np.uint8)
    assert np.all(fast.holdings & revoked == 0)
    assert np.all(fast.revocations_held[~inp.honest] == 0)  # trojan agents neither keep nor forward them


def test_sim_revocation_purges_the_accepted_trojan_and_reports_it(tmp_path: Path) -> None:
    report = run(tmp_path, provider=fixed_pool(trojan_ok=True), agents=400, trojan_rate=0.01, revoke_at=12,
                 compare_peer_scoring=True)
    f, rec = report["final"], report["final"]["recall"]
    rows = [r["recall"] for r in report["rounds"]]
    assert rec["revoke_at"] == 12 and all(r["verified"] for r in rec["records"]) and rec["records"]
    assert rec["spread_rounds"] is not None and rec["spread_rounds"] < 12
    assert rec["time_to_purge"] == rec["purge_round"] - 12 + 1 and rec["holding_at_end"] == 0
    assert rows[rec["purge_round"]]["holders_reachable"] == 0 < rows[rec["purge_round"] - 1]["holders_reachable"]
    assert rec["exposure"] == sum(r["holders"] for r in rows) and rec["injecting_exposure"] <= rec["exposure"]
    assert rec["peak_prevalence"] == max(r["holding"] for r in rows) and rec["peak_injecting"] <= 1
    assert all(r["revocation"] == 0 for r in rows[:12]) and rows[-1]["revocation"] > 0.99
    assert f["bytes_breakdown"]["revocation"] == rec["revocation_bytes"] == sum(r["revocation_bytes"] for r in rows)
    assert f["bytes_on_wire"] == sum(f["bytes_breakdown"].values()) == sum(r["bytes"] for r in report["rounds"])
    theory = rec["theory"]
    assert theory["spread_rounds"] and theory["time_to_purge"] and len(theory["curves"]["holding"]) > 12
    arms = rec["arms"]
    assert set(arms) == {"peer_scoring_on", "peer_scoring_off"}
    assert arms["peer_scoring_off"]["bytes_on_wire"] == f["bytes_on_wire"]  # the policy's arm is the report's
    assert arms["peer_scoring_on"]["graylisted"] > 0 == arms["peer_scoring_off"]["graylisted"]
    png = Path(report["meta"]["timings"]["report_path"]).with_name(
        Path(report["meta"]["timings"]["report_path"]).stem + "-recall.png")
    assert png.stat().st_size > 1000
    again = run(tmp_path, provider=fixed_pool(trojan_ok=True), agents=400, trojan_rate=0.01, revoke_at=12,
                compare_peer_scoring=True)
    for r in (report, again):
        r["meta"].pop("timings")
    assert again == report  # the same seed gives the same report (records are signed afresh, ids are the same)


def test_compared_arms_count_trojan_holders_without_a_revocation_too(tmp_path: Path) -> None:
    """--compare_peer_scoring without --revoke_at: the arm without scoring keeps no recall state of its own, yet its
    exposure is what its rounds' trojan prevalence says (it read 0)."""
    report = run(tmp_path, provider=fixed_pool(trojan_ok=True), agents=200, trojan_rate=0.05,
                 compare_peer_scoring=True)
    arms = report["final"]["recall"]["arms"]
    honest = round(report["rounds"][-1]["recall"]["trojan_holders"] / report["rounds"][-1]["trojan_prevalence"])
    own = [round(r["trojan_prevalence"] * honest) for r in report["rounds"]]  # the report's run: scoring off
    assert arms["peer_scoring_off"]["trojan_holding"] == own and sum(own) > 0
    assert arms["peer_scoring_off"]["trojan_exposure"] == sum(own)
    assert arms["peer_scoring_on"]["trojan_exposure"] > 0


def test_revoke_at_needs_an_accepted_trojan_in_play(tmp_path: Path) -> None:
    from plora.errors import PloraError

    with pytest.raises(PloraError, match="no trojan in play is accepted"):
        run(tmp_path, revoke_at=3)  # the fixed pool's gate refuses every trojan
    res = subprocess.run([sys.executable, "-m", "plora", "swarm", "sim", "--agents", "10", "--revoke_at", "0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "--revoke_at" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sim", "--seed", "-1"], "--seed: Input should be greater than or equal to 0"),
        (["net", "--seed", "-1"], "--seed: Input should be greater than or equal to 0"),
        (["sweep", "--seeds", "1,-1", "--agents", "100"], "--seeds: Input should be greater than or equal to 0"),
        (["sim", "--domains", "legal,foo"], "unknown domain(s) foo"),
        (["net", "--domains", "foo"], "unknown domain(s) foo"),
        (["sweep", "--domains", "foo", "--agents", "100"], "unknown domain(s) foo"),
        (["sim", "--security", "off", "--policy_file", "{missing}"], "cannot read policy file"),
        (["sim", "--security", "off", "--policy_file", "{garbage}"], "malformed JSON"),
        (["net", "--security", "off", "--policy_file", "{missing}"], "cannot read policy file"),
        (["net", "--work_dir", "{garbage}"], "exists and is not a folder"),
        (["net", "--agents", "10000000"], "GB available: use at most"),
        (["sweep", "--graph", "ws", "--ws_k", "200", "--agents", "100"], "--ws_k must be even and below the number"),
        # nothing to simulate, a gate flag no policy can hold, a quorum the one-signature pool never meets: before,
        # each trained the pool (minutes) first
        (["sim", "--rounds", "0"], "--rounds: Input should be greater than or equal to 1"),
        (["sweep", "--rounds", "0", "--agents", "100"], "--rounds: Input should be greater than or equal to 1"),
        (["sim", "--agents", "1"], "--agents 1: a swarm needs at least 2 agents"),
        (["sweep", "--agents", "1,100"], "--agents 1: a swarm needs at least 2 agents"),
        (["sim", "--tau_norm_z", "-1"], "--tau_norm_z: Input should be greater than or equal to 0"),
        (["sweep", "--tau_norm_z", "none,-2", "--agents", "100"], "--tau_norm_z: Input should be greater than or"),
        (["sim", "--allowed_ranks", "0,8"], "--allowed_ranks: rank 0 outside 1..1024"),
        (["sim", "--policy_file", "{quorum2}"], "quorum 2 can never be met: each pool plasmid carries one signature"),
        (["net", "--policy_file", "{quorum2}"], "quorum 2 can never be met"),
        (["sweep", "--policy_file", "{quorum2}", "--agents", "100"], "quorum 2 can never be met"),
    ],
)
def test_bad_swarm_input_is_one_line_error_before_any_work(tmp_path: Path, args: list[str], expected: str) -> None:
    """Refused up front (exit 2, one line): a cold pool is never trained for a run that cannot go through."""
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    quorum2 = tmp_path / "quorum2.json"
    quorum2.write_text('{"signatures": true, "quorum": 2}')
    args = [a.format(missing=tmp_path / "nonexistent.json", garbage=garbage, quorum2=quorum2) for a in args]
    out = ["--out" if args[0] == "sweep" else "--report_dir", str(tmp_path / "results")]
    proc = subprocess.run([sys.executable, "-m", "plora", "swarm", *args, *out], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert expected in proc.stderr
    assert not (tmp_path / "results").exists()
