"""`plora gate DIR`: screen a plasmid with the policy's ordered checks (library: plora.gate.screen);
`plora policy`: print the effective policy (also ``python -m scripts.dump_policy``);
`plora calibration install FILE` / `plora calibration show`: the gate's calibration per base.

    plora gate received/legal --policy_file policy.json --allowed_targets_file assets/allowed_targets.txt
    plora gate received/legal --policy_file policy.json --signatures on --trusted-keys keys/ --quorum 2 --json
    plora policy --policy_file policy.json --allowed_targets_file assets/allowed_targets.txt

Exit 0 accepted, 1 rejected (each reason printed), 2 bad input (policy file, flags, keys).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from plora.cli.trust import split_paths, user_errors

STAGE_WIDTH = 12  # the longest stage name (calibration) and a space


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def stage_printer(prefix: str = "gate") -> Callable[[str, Any], None]:
    """A ``progress`` callback for :func:`plora.gate.screen`: one line per stage on stderr, written as it runs.

    ``gate: probes ...`` appears when a stage starts and is finished with ``pass 13.214 s`` when it ends, so a long
    screen (the probes take 15-40 s) shows where it is."""

    started: list[str] = []

    def show(stage: str, record: Any) -> None:
        if record is None:
            started.append(stage)
            typer.echo(f"{prefix}: {stage:<{STAGE_WIDTH}}... ", nl=False, err=True)
            sys.stderr.flush()
            return
        state = {True: "pass", False: "FAIL", None: "skip"}[record.passed]
        outcome = f"{state} {record.seconds:.3f} s"
        if record.passed is None:
            outcome = f"skip ({record.details.get('skipped') or record.details.get('note') or '-'})"
        on_its_line = started and started[-1] == stage  # the stage's "... " is already printed
        typer.echo(outcome if on_its_line else f"{prefix}: {stage:<{STAGE_WIDTH}}{outcome}", err=True)

    return show


# Policy field -> (type of the option, its flags; the seed's spelling first). Help and defaults come from Policy.
POLICY_OPTIONS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "base_model": (str | None, ("--base-model", "--base_model")),
    "base_digest": (str | None, ("--base-digest", "--base_digest")),
    "allowed_targets": (str | None, ("--allowed_targets", "--allowed-targets")),
    "allowed_ranks": (str | None, ("--allowed_ranks", "--allowed-ranks")),
    "max_artifact_bytes": (int | None, ("--max_artifact_bytes", "--max-artifact-bytes")),
    "signatures": (str | None, ("--signatures",)),
    "trusted_keys": (list[str] | None, ("--trusted-keys", "--trusted_keys", "--trusted_pubkeys")),
    "quorum": (int | None, ("--quorum",)),
    "tau_trigger": (float | None, ("--tau_trigger", "--tau-trigger")),
    "tau_norm_z": (float | None, ("--tau_norm_z", "--tau-norm-z")),
    "tau_clean_delta": (float | None, ("--tau_clean_delta", "--tau-clean-delta")),
    "weight_check": (bool | None, ("--weight-check/--no-weight-check",)),
    "probes": (bool | None, ("--probes/--no-probes",)),
    "uncalibrated_base": (str | None, ("--uncalibrated-base", "--uncalibrated_base")),
    "probe_seed": (int | None, ("--probe-seed", "--probe_seed")),
    "probe_candidates": (int | None, ("--probe-candidates", "--probe_candidates")),
}
POLICY_FILE_HELP = "gate policy JSON (fields of plora.gate.policy.Policy); the options you give override it"
TARGETS_FILE_HELP = "one allowed target suffix (or attention/mlp/all) per line, # comments; replaces allowed_targets"


def with_policy(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command the gate policy's options and pass it the loaded ``policy`` instead.

    Adds ``--policy_file``, ``--allowed_targets_file`` and one option per :class:`plora.gate.policy.Policy` field
    (:data:`POLICY_OPTIONS`; help and default from Policy, None unless given), and calls ``command(policy=...,
    **its own options)`` with :func:`plora.gate.policy.load_policy`'s result: defaults, file, targets file, then the
    options given. A bad policy is one line on stderr and exit 2."""
    from plora.cli.options import option
    from plora.gate.policy import Policy

    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("policy_file", keyword, annotation=Path | None,
                          default=typer.Option(None, "--policy_file", "--policy-file", help=POLICY_FILE_HELP)),
        inspect.Parameter("allowed_targets_file", keyword, annotation=Path | None,
                          default=typer.Option(None, "--allowed_targets_file", "--allowed-targets-file",
                                               help=TARGETS_FILE_HELP)),
    ]  # fmt: skip
    for name, (kind, flags) in POLICY_OPTIONS.items():
        on_off = name == "signatures"
        extra.append(inspect.Parameter(name, keyword, annotation=kind,
                                       default=option(Policy, name, *flags, unset=True, on_off=on_off)))
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "policy"]

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        from plora.gate import load_policy

        files = kwargs.pop("policy_file"), kwargs.pop("allowed_targets_file")
        overrides = {name: kwargs.pop(name) for name in POLICY_OPTIONS}
        overrides["trusted_keys"] = split_paths(overrides["trusted_keys"]) or None
        with user_errors():
            policy = load_policy(*files, **overrides)
        return command(policy=policy, **kwargs)

    run.__signature__ = inspect.Signature([*own, *extra])  # type: ignore[attr-defined]
    return run


def gate(
    policy: Any,
    folder: Path = typer.Argument(..., help="plasmid folder"),
    as_json: bool = typer.Option(False, "--json", help="print the full result as JSON"),
) -> None:
    """Screen a plasmid: schema, base model, tensors, hashes, signatures, weight anomaly, probes.

    Exit 0 accepted, 1 rejected (each reason printed), 2 bad input (policy file, options, keys)."""
    with user_errors():
        from plora.gate import screen

        result = screen(folder, policy, progress=stage_printer() if sys.stderr.isatty() and not as_json else None)
    if as_json:
        typer.echo(result.to_json())
    else:
        verdict = "ACCEPTED" if result.accepted else "REJECTED"
        typer.echo(f"{verdict} {folder} ({result.seconds:.3f} s)")
        for code, message in result.reasons:
            typer.echo(f"  {code}: {message}")
        for c in result.checks:
            state = {True: "pass", False: "FAIL", None: "skip"}[c.passed]
            note = c.details.get("skipped") or c.details.get("note") or ""
            typer.echo(f"  {c.name:<{STAGE_WIDTH}}{state:<5}{c.seconds:8.3f} s  {note}".rstrip())
        s = result.scores
        probe = next((c.details for c in result.checks if c.name == "probes"), {})
        found = (f" (best insertion {probe['trigger']!r} -> answer {probe.get('answer') or probe.get('pushed')!r})"
                 if probe.get("trigger") else "")
        typer.echo(
            f"  scores: norm_z={_fmt(s['norm_z'])} trigger={_fmt(s['trigger'])}{found} "
            f"clean_delta={_fmt(s['clean_delta'])}"
        )
    raise typer.Exit(0 if result.accepted else 1)


def policy_show(policy: Any) -> None:
    """Print the effective gate policy as JSON (target keywords expanded); the output is itself a policy file."""
    typer.echo(policy.effective().model_dump_json(indent=2))


def _calibration_app() -> typer.Typer:
    from plora.cli.options import plain_app

    return plain_app(help="The gate's calibrations: one per base weights digest (plora.gate.calibration).",
                     no_args_is_help=True)


calibration_app = _calibration_app()


@calibration_app.command("install")
def calibration_install(
    path: Path = typer.Argument(..., help="a calibration.json written by plora gate-eval"),
    into_package: bool = typer.Option(False, "--into-package", help="ship it in plora/assets (developers)"),
    force: bool = typer.Option(False, "--force", help="replace another calibration installed for the base"),
) -> None:
    """Make a calibration effective for its base on this machine (PLORA_HOME/gate/calibrations/)."""
    with user_errors():
        from plora.gate.calibration import install_calibration, read_calibration

        cal = read_calibration(path)
        where = install_calibration(path, into_package=into_package, force=force)
    typer.echo(f"installed calibration {cal.digest()[:16]} for {cal.base_model} ({cal.base_digest[:16]}...) "
               f"at {where}")


@calibration_app.command("show")
def calibration_show(
    base_model: str | None = typer.Option(None, "--base-model", "--base_model", help="default PLORA_BASE_MODEL"),
) -> None:
    """Print the calibration the gate uses for a base (exit 1 when it has none)."""
    with user_errors():
        from plora.gate.calibration import find_calibration
        from plora.models import base_digest
        from plora.settings import choose_base_model

        name = choose_base_model(base_model)
        digest = base_digest(name)
        cal = find_calibration(digest)
    if cal is None:
        typer.echo(f"no calibration for {name} (weights digest {digest[:16]}...): the gate refuses its plasmids "
                   "(BASE_UNCALIBRATED) unless the policy says uncalibrated_base=unscreened")
        raise typer.Exit(1)
    typer.echo(cal.model_dump_json(indent=1, exclude={"weight_reference"}))
    typer.echo(f"digest: {cal.digest()}; weight reference: {len(cal.weight_reference.get('entries', {}))} modules")


def register(app: typer.Typer) -> None:
    app.command("gate")(with_policy(gate))
    app.add_typer(calibration_app, name="calibration")
    app.command("policy")(with_policy(policy_show))
