"""The project's own tooling: CI calls what the README says, the README-commands check follows the README, and the
type-checker allowlist only shrinks."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

# mypy's allowlist (pyproject.toml, ignore_errors) as first written; a module may leave it, never join it.
MYPY_ALLOWLIST_BASELINE = {
    "plora.cli.runtime",
    "plora.data.domains.science",
    "plora.data.loaders",
    "plora.experiments.value_add",
    "plora.gate.cohort",
    "plora.gate.evaluate",
    "plora.gate.policy",
    "plora.grpc.client",
    "plora.grpc.server",
    "plora.importer",
    "plora.training.config",
    # arrived with the recall merge (2026-11-27)
    "plora.recall.record",
    "plora.recall.store",
    "plora.swarm.agent_recall",
    "plora.swarm.reference",
    "plora.swarm.revoke",
    "plora.loader.hotload",
    "plora.loader.latency",
    "plora.loader.merge",
    "plora.loader.source",
    "plora.manifest",
    "plora.models.gguf",
    "plora.models.registry",
    "plora.signer",
    "plora.swarm.engine",
    "plora.swarm.summary",
    "plora.training.lora",
}


def _readme_commands() -> Any:
    spec = importlib.util.spec_from_file_location("readme_commands", REPO / ".ci" / "readme_commands.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_commands"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _make_targets(lines: list[str]) -> list[str]:
    return [m.group(1) for line in lines for m in [re.match(r"\s*make ([\w-]+)\s*$", line)] if m]


def _workflow() -> dict[str, Any]:
    return yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())


def _workflow_targets() -> list[str]:
    runs = [step["run"] for job in _workflow()["jobs"].values() for step in job["steps"] if "run" in step]
    return _make_targets([line for run in runs for line in run.splitlines()])


def test_workflow_and_ci_run_call_the_same_make_targets() -> None:
    ci_run = _make_targets((REPO / ".ci" / "run").read_text().splitlines())
    # the README's set-up, lint and test commands, then the check that runs every README command as written
    assert ci_run == ["setup", "lint", "test", "readme-commands"]
    # the workflow runs the same targets (the README-commands check in a job of its own, in parallel)
    assert sorted(set(_workflow_targets())) == sorted(ci_run)
    makefile = (REPO / "Makefile").read_text()
    assert all(re.search(rf"^{t}:", makefile, re.M) for t in ci_run)


def test_workflow_steps_are_readme_commands() -> None:
    readme = (REPO / "README.md").read_text()
    for target in set(_workflow_targets()):
        assert re.search(rf"^\s+make {target}\b", readme, re.M), f"make {target} is not a README command"


def test_workflow_installs_cpu_torch_with_a_pip_cache_and_timeouts() -> None:
    wf = _workflow()
    assert set(wf[True]) >= {"push", "pull_request"}  # YAML 1.1 reads the key `on` as True
    assert wf["env"]["PIP_EXTRA_INDEX_URL"].endswith("/whl/cpu")
    assert re.search(r"^torch==[\d.]+$", (REPO / "requirements" / "runtime.txt").read_text(), re.M)
    for job in wf["jobs"].values():
        assert job["timeout-minutes"] <= 45 and job["runs-on"].startswith("ubuntu")
        python = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
        assert python["with"]["cache"] == "pip" and python["with"]["cache-dependency-path"] == "requirements/*.txt"
    test_step = next(s for s in wf["jobs"]["lint-and-test"]["steps"] if s.get("run") == "make test")
    assert test_step["timeout-minutes"] <= 15


def test_mypy_allowlist_only_shrinks() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    allowlist = {m for o in config["overrides"] if o.get("ignore_errors") for m in o["module"]}
    allowlist -= {"plora.grpc.plasmid_pb2", "plora.grpc.plasmid_pb2_grpc"}  # generated code, never checked
    assert allowlist <= MYPY_ALLOWLIST_BASELINE, f"joined the mypy allowlist: {allowlist - MYPY_ALLOWLIST_BASELINE}"


def test_readme_commands_config_follows_the_readme() -> None:
    rc = _readme_commands()
    steps, problems = rc.plan(rc.parse_readme(REPO / "README.md"), rc.load_config())
    assert problems == []
    assert len(steps) >= 40
    # every long command that runs smaller says why
    assert all(s.entry.get("why") for s in steps if s.entry.get("set") or s.action != "run")


def test_readme_commands_parser_and_rewrites(tmp_path: Path) -> None:
    rc = _readme_commands()
    readme = tmp_path / "README.md"
    readme.write_text(
        "# T\n\n```bash\nmake offer &   # a server\nplora fetch --id legal \\\n    --dest received/\n```\n\n"
        "Text.\n\n    from plora import x\n    print(x)\n\n```text\nout/legal/\n```\n\n"
        "    plora gate-eval --quick   # small\n    plora agent --listen hostA:1 ...\n"
    )
    commands = rc.parse_readme(readme)
    assert [(c.kind, c.text.split("#")[0].strip()) for c in commands] == [
        ("shell", "make offer &"),
        ("shell", "plora fetch --id legal --dest received/"),
        ("python", "from plora import x\nprint(x)"),
        ("shell", "plora gate-eval --quick"),
        ("shell", "plora agent --listen hostA:1 ..."),
    ]
    config = {
        "command": [
            {"match": "^make offer", "ready_port": 1},
            {"match": "gate-eval", "set": {"--seeds": "1", "--quick": ""}},
            {"match": "^plora agent", "replace": {"hostA": "127.0.0.1", "...": "--rounds 2"}},
            {"match": "never in this README", "why": "stale"},
        ]
    }
    steps, problems = rc.plan(commands, config)
    assert problems == ["entry 'never in this README' matches no README command (the README changed: update it)"]
    work = tmp_path / "w"
    assert rc.is_server(steps[0]) and rc.command_to_run(steps[0], work) == "make offer"
    assert rc.command_to_run(steps[3], work) == "plora gate-eval --quick --seeds 1"
    assert rc.command_to_run(steps[4], work) == "plora agent --listen 127.0.0.1:1 --rounds 2"
