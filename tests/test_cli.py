"""The command line as a user meets it: output folders, keys, base-model names, help at 80 columns, options that
come from their configs, the gate's stages shown as they run, and seed shims without parsers of their own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from plora.cli.main import app
from plora.cli.options import as_typed, field_spec
from plora.errors import PloraError
from plora.executor import ExecutorConfig
from plora.experiments.value_add import ValueAddConfig
from plora.gate.policy import Policy
from plora.manifest import read_manifest
from plora.outputs import OutputError
from plora.swarm.config import NetConfig, SimConfig, SwarmConfig
from plora.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
TRAIN_FAST = ["train", "--domain", "legal", "--samples", "8", "--dev-size", "0", "--quiet"]


def plora(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "plora", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env=env)  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------------ output folders
def test_train_out_keeps_other_files_unless_force(tmp_path: Path) -> None:
    out = tmp_path / "legal"
    res = runner.invoke(app, [*TRAIN_FAST, "--out", str(out)])
    assert res.exit_code == 0, res.output
    first = read_manifest(out).artifact.sha256
    # a folder holding only a plasmid is the previous run's output: re-running replaces it
    res = runner.invoke(app, [*TRAIN_FAST, "--seed", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert read_manifest(out).artifact.sha256 != first
    (out / "plora.sig.json").write_text("{}")  # signatures are a plasmid's files too (void once it is replaced)
    assert runner.invoke(app, [*TRAIN_FAST, "--out", str(out)]).exit_code == 0 and not (out / "plora.sig.json").exists()
    # anything else in it is the user's: refused before training, nothing touched
    (out / "notes.txt").write_text("mine")
    (out / "runs").mkdir()
    before = sorted(p.name for p in out.iterdir())
    res = runner.invoke(app, [*TRAIN_FAST, "--out", str(out)])
    assert isinstance(res.exception, OutputError) and "notes.txt, runs/" in str(res.exception)
    assert sorted(p.name for p in out.iterdir()) == before and (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder was made
    res = runner.invoke(app, [*TRAIN_FAST, "--out", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "plora.yml"]


def test_train_out_dot_and_bad_places_fail_before_training(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    (tmp_path / "a_file").write_text("x")
    cases = {
        ".": "working directory",
        str(tmp_path / "a_file"): "exists and is not a folder",
        str(tmp_path / "a_file" / "sub"): "not a writable folder",
        "/proc/plora-out": "not a writable folder",
    }
    for out, message in cases.items():
        start = time.perf_counter()
        proc = plora(*TRAIN_FAST, "--out", out, "--force", cwd=tmp_path)
        assert message in one_error_line(proc), out
        assert time.perf_counter() - start < 60  # refused before any model is loaded (training would add more)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "keep.txt"]


def test_other_outputs_are_checked_before_the_work(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep")
    cases = [
        (["base", "build", "--out", "a_file", "--steps", "1"], "exists and is not a folder"),
        (["base", "build", "--out", "notes", "--steps", "1"], "already holds mine.txt"),  # not an earlier build
        (["gate-eval", "--quick", "--out", "a_file"], "exists and is not a folder"),
    ]
    for args, message in cases:
        start = time.perf_counter()
        assert message in one_error_line(plora(*args, cwd=tmp_path)), args
        assert time.perf_counter() - start < 60  # before any training
    assert (tmp_path / "a_file").read_text() == "x" and [p.name for p in notes.iterdir()] == ["mine.txt"]


def test_gate_eval_contradictory_options_are_refused_before_the_work(tmp_path: Path) -> None:
    """Before, --quick silently beat --cohort real-model and --calibration silently beat --shipped, after a torch
    import and into minutes of cohort training; now one line, exit 2, in about the time of the CLI's start."""
    cal = tmp_path / "cal.json"
    cal.write_text("{}")
    for args, message in ((["--calibration", str(cal), "--shipped"], "give --calibration FILE or --shipped, not both"),
                          (["--quick", "--cohort", "real-model"], "give --quick or --cohort real-model, not both")):
        start = time.perf_counter()
        proc = plora("gate-eval", "--out", str(tmp_path / "g"), *args, cwd=tmp_path)
        assert proc.returncode == 2 and message in one_error_line(proc), args
        assert time.perf_counter() - start < 15, args
    assert not (tmp_path / "g").exists()


def test_files_a_user_names_are_read_bounded(tmp_path: Path) -> None:
    """A device, a FIFO or a huge file named as a policy, calibration or key is refused in one line, never read
    whole (``/dev/zero`` once filled 24 GB) and never waited on."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (17 << 20))
    for path, why in (("/dev/zero", "not a regular file"), (str(fifo), "not a regular file"),
                      (str(huge), "too large")):  # fmt: skip
        for args in (["policy", "--policy_file", path], ["calibration", "install", path],
                     ["verify", str(tmp_path), "--trusted-keys", path]):  # fmt: skip
            assert why in one_error_line(plora(*args, cwd=tmp_path)), args


def test_seeds_and_ranks_out_of_range_are_refused(tmp_path: Path, legal_plasmid: Path) -> None:
    legal = str(legal_plasmid)
    proc = plora(*TRAIN_FAST, "--seed", "-1", "--out", "t", cwd=tmp_path)
    assert "seed must be in [0, 2**32)" in one_error_line(proc)
    for extra, message in ((["--method", "svd", "--svd-rank", "0"], "--svd-rank must be a positive integer"),
                           (["--method", "dare_ties", "--density", "0.5", "--seed", str(2**64)], "--seed must be")):
        proc = plora("merge", "--plasmids", f"{legal},{legal}", "--out", str(tmp_path / "m"), *extra, cwd=tmp_path)
        assert message in one_error_line(proc), extra
    assert not (tmp_path / "m").exists()


def test_keygen_makes_at_most_the_key_folder(tmp_path: Path) -> None:
    line = one_error_line(plora("keygen", "--algo", "ed25519", "--out", str(tmp_path / "no" / "such" / "k")))
    assert "no such folder" in line and not (tmp_path / "no").exists()
    proc = plora("keygen", "--algo", "ed25519", "--out", str(tmp_path / "keys" / "alice"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["alice", "alice.pub"]


# ------------------------------------------------------------------------------------------------ base models
@pytest.mark.parametrize("offline", [True, False])
def test_mistyped_base_model_fails_fast_with_one_line(tmp_path: Path, offline: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    start = time.perf_counter()
    proc = plora("base", "info", "--base-model", "plora-tinyy", cwd=tmp_path, env=env)
    seconds = time.perf_counter() - start
    line = one_error_line(proc)
    assert "plora-tinyy" in line and "did you mean plora-tiny?" in line
    assert seconds < 30, seconds  # it used to retry the hub for about 50 s (22 warning lines)


# ------------------------------------------------------------------------------------------------ help
def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under a click group (typer vendors click, so groups are told by their ``commands``)."""
    out = []
    for name, cmd in group.commands.items():
        out.append(((*path, name), cmd))
        if hasattr(cmd, "commands"):
            out.extend(_commands(cmd, (*path, name)))
    return out


def test_help_is_readable_at_80_columns() -> None:
    root = typer.main.get_command(app)
    commands = _commands(root)
    assert len(commands) >= 17
    for path, cmd in commands:
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert res.exit_code == 0, (path, res.output)
        text = res.output
        assert "…" not in text and "<bool>" not in text, (path, text)
        assert max(len(line) for line in text.splitlines()) <= 80, path
        for param in (p for p in cmd.params if not getattr(p, "hidden", False)):
            for flag in [*param.opts, *param.secondary_opts]:
                if flag.startswith("-"):
                    assert flag in text, (path, flag)  # every option name in full


# ------------------------------------------------------------------------------------------------ one source of truth
CONFIGS = {
    ("swarm", "sim"): (SimConfig, set()),
    ("swarm", "net"): (NetConfig, set()),
    ("train",): (TrainConfig, {"force", "quiet"}),
    ("gate",): (Policy, {"folder", "as_json", "policy_file", "allowed_targets_file"}),
    ("policy",): (Policy, {"policy_file", "allowed_targets_file"}),
    ("value-add",): (ValueAddConfig, set()),
}
EXECUTOR_OPTIONS = {("value-add",)}  # commands whose --jobs / --ray-address come from ExecutorConfig


def _cli_command(path: tuple[str, ...]) -> Any:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path", list(CONFIGS))
def test_every_option_takes_default_and_help_from_its_config(path: tuple[str, ...]) -> None:
    config, cli_only = CONFIGS[path]
    for param in _cli_command(path).params:
        if param.name in cli_only or param.name == "help":
            continue
        if path in EXECUTOR_OPTIONS and param.name in ExecutorConfig.model_fields:
            config = ExecutorConfig
        else:
            config = CONFIGS[path][0]
        spec = field_spec(config, param.name)  # an option that belongs to no config field fails here
        assert param.param_type_name == "option" and (param.help or "").startswith(spec.help), (path, param.name)
        if path == ("train",) and param.name == "out":
            assert param.default is None and "default: out/<domain>" in param.help  # computed by the command
        elif spec.default is ...:
            assert param.required, (path, param.name)
        elif config is Policy or spec.policy_field:
            assert param.default is None, (path, param.name)  # unset unless given: a file keeps its value
            if spec.default not in (None, [], ()):
                assert "[default: " in param.help, (path, param.name)
        else:
            on_off = (param.metavar or "") == "on|off"
            assert param.default == as_typed(spec.default, on_off), (path, param.name)


def test_sim_and_net_share_their_defaults() -> None:
    for name in SwarmConfig.model_fields:
        assert field_spec(SimConfig, name) == field_spec(NetConfig, name) == field_spec(SwarmConfig, name)
    sim, net = SimConfig(), NetConfig()
    assert (net.seed, net.trojan_rate, net.rounds, net.agents) == (sim.seed, sim.trojan_rate, sim.rounds, sim.agents)
    assert sim.allowed_ranks is None and Policy().allowed_ranks == [4, 8, 16]  # the ranks are written in Policy only


def test_seed_shims_hold_no_parser() -> None:
    for shim in [*sorted((ROOT / "scripts").glob("*.py")), ROOT / "swarm_v2" / "__main__.py"]:
        text = shim.read_text()
        assert "argparse" not in text and "typer.Option" not in text and "add_argument" not in text, shim


def test_policy_command_equals_the_seed_shim(tmp_path: Path) -> None:
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"allowed_ranks": [8], "quorum": 2}))
    res = runner.invoke(app, ["policy", "--policy_file", str(pf), "--tau_norm_z", "4", "--no-probes"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["allowed_ranks"] == [8] and got["quorum"] == 2 and got["tau_norm_z"] == 4.0 and got["probes"] is False
    shim = subprocess.run([sys.executable, "-m", "scripts.dump_policy", "--policy_file", str(pf), "--tau_norm_z", "4",
                           "--no-probes"], cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shim.returncode == 0 and json.loads(shim.stdout) == got


# ------------------------------------------------------------------------------------------------ gate stages
def test_fetch_shows_each_gate_stage_as_it_runs(legal_plasmid: Path, tmp_path: Path) -> None:
    from plora.gate import load_policy, screen
    from plora.grpc.server import serve

    root = tmp_path / "root"
    shutil.copytree(legal_plasmid, root / "legal")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"weight_check": False, "probes": False}))
    calls: list[tuple[str, bool]] = []
    result = screen(root / "legal", load_policy(policy), progress=lambda s, r: calls.append((s, r is None)))
    assert result.accepted
    assert calls[:2] == [("schema", True), ("schema", False)]  # a start, then the record
    assert [s for s, started in calls if not started] == [c.name for c in result.checks]
    assert ("probes", True) not in calls  # a stage that is off never starts
    server = serve(root, port=0)
    try:
        res = runner.invoke(app, ["fetch", "--from", server.address, "--id", "legal", "--dest",
                                  str(tmp_path / "received"), "--policy_file", str(policy)])  # fmt: skip
    finally:
        server.stop(0)
    assert res.exit_code == 0, res.output
    assert "gate: schema      ... pass" in res.stderr
    assert "gate: probes      skip (probes off in the policy)" in res.stderr


def test_errors_from_configs_name_the_flag() -> None:
    with pytest.raises(PloraError, match="--security: must be on or off"):
        runner.invoke(app, ["swarm", "sim", "--security", "maybe"], catch_exceptions=False)


def test_swarm_report_folders_are_checked_before_the_pool(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for cmd in (["swarm", "sim"], ["swarm", "net"]):
        res = runner.invoke(app, [*cmd, "--report_dir", str(blocker)])
        assert isinstance(res.exception, OutputError) and "not a folder" in str(res.exception), res.output
    res = runner.invoke(app, ["swarm", "summarise", "--reports", str(tmp_path), "--out", str(blocker / "s.json")])
    assert isinstance(res.exception, OutputError)
