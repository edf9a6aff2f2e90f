"""`plora swarm net --ray`: agents as Ray actors on a local Ray, against the process driver on the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from plora.swarm.config import NetConfig, make_config
from plora.swarm.net import run_swarm_net


@pytest.fixture()
def trained_pool(legal_pool: Path) -> Path:
    return legal_pool


def test_ray_actors_give_the_process_drivers_coverage_and_gate_totals(
    local_ray, trained_pool: Path, tmp_path: Path
) -> None:
    flags = {
        "agents": 6,
        "rounds": 10,
        "graph_p": 0.5,
        "trojan_rate": 0.3,
        "seed": 3,
        "domains": "legal",
        "pool_dir": str(trained_pool),
        "progress": False,
    }
    procs = run_swarm_net(make_config(NetConfig, **flags, report_dir=str(tmp_path / "p")))
    rounds_seen: list[tuple[int, int]] = []
    onray = run_swarm_net(
        make_config(NetConfig, **flags, report_dir=str(tmp_path / "r"), ray=True),
        on_round=lambda r, actors: rounds_seen.append((r, len(actors))),
    )
    for key in (
        "coverage",
        "coverage_reachable",
        "rounds_to_full_coverage",
        "rounds_run",
        "quiescent",
        "trojan_prevalence",
        "gate",
        "accepted_offers",
        "offers",
    ):
        assert onray["final"][key] == procs["final"][key], key
    for key in ("coverage", "accepted", "offers"):  # round by round: a round's concurrent contacts are order-free
        assert [r[key] for r in onray["rounds"]] == [r[key] for r in procs["rounds"]], key
    assert onray["meta"]["flags"] == procs["meta"]["flags"] and onray["meta"]["pool"] == procs["meta"]["pool"]
    extra = onray["meta"]["extra"]
    assert extra["driver"] == "ray" and procs["meta"]["extra"]["driver"] == "processes"
    assert extra["agents_died"] == {} and rounds_seen == [(r, 6) for r in range(onray["final"]["rounds_run"])]
    node = local_ray.nodes()[0]["NodeManagerAddress"]
    assert set(extra["nodes"].values()) == {node}  # each agent listens on, and advertises, its node's address
    assert all(a.startswith(f"{node}:") for a in onray["meta"]["timings"]["addresses"].values())
    assert Path(onray["meta"]["timings"]["report_path"]).with_suffix(".png").is_file()
