"""`plora gate DIR`: screen a plasmid with the policy's ordered checks (library: plora.gate.screen).

    plora gate received/legal --policy_file policy.json --allowed_targets_file assets/allowed_targets.txt
    plora gate received/legal --policy_file policy.json --signatures on --trusted-keys keys/ --quorum 2 --json

Exit 0 accepted, 1 rejected (each reason printed), 2 bad input (policy file, flags, keys).
"""

from __future__ import annotations

from pathlib import Path

import typer

from plora.cli.trust import split_paths, user_errors


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def register(app: typer.Typer) -> None:
    @app.command("gate")
    def gate(
        folder: Path = typer.Argument(..., help="plasmid folder"),
        policy_file: Path | None = typer.Option(None, "--policy_file", "--policy-file", help="policy JSON"),
        allowed_targets_file: Path | None = typer.Option(
            None, "--allowed_targets_file", "--allowed-targets-file", help="one target suffix per line"
        ),
        allowed_targets: str | None = typer.Option(
            None, "--allowed_targets", "--allowed-targets", help="attention | mlp | all | suffix,suffix"
        ),
        allowed_ranks: str | None = typer.Option(None, "--allowed_ranks", "--allowed-ranks", help="e.g. 4,8,16"),
        base_model: str | None = typer.Option(None, "--base-model", "--base_model", help="base the plasmid must use"),
        max_artifact_bytes: int | None = typer.Option(None, "--max_artifact_bytes", "--max-artifact-bytes"),
        tau_trigger: float | None = typer.Option(
            None, "--tau_trigger", "--tau-trigger", help="default: plora/gate/thresholds.py"
        ),
        tau_norm_z: float | None = typer.Option(
            None, "--tau_norm_z", "--tau-norm-z", help="default: plora/gate/thresholds.py"
        ),
        tau_clean_delta: float | None = typer.Option(
            None, "--tau_clean_delta", "--tau-clean-delta", help="default: plora/gate/thresholds.py"
        ),
        signatures: str | None = typer.Option(None, "--signatures", help="on | off"),
        trusted_keys: list[str] | None = typer.Option(
            None,
            "--trusted-keys",
            "--trusted_keys",
            "--trusted_pubkeys",
            help="public keys or folders; turns signatures on",
        ),
        quorum: int | None = typer.Option(None, "--quorum", help="distinct trusted signers required"),
        probes: bool | None = typer.Option(None, "--probes/--no-probes", help="behavioural probes"),
        weight_check: bool | None = typer.Option(None, "--weight-check/--no-weight-check", help="weight anomaly"),
        probe_candidates: int | None = typer.Option(
            None, "--probe-candidates", "--probe_candidates", help="tokens the trigger scan inserts (default 1024)"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the full result as JSON"),
    ) -> None:
        """Screen a plasmid: schema, base model, tensors, hashes, signatures, weight anomaly, probes."""
        with user_errors():
            from plora.gate import load_policy, screen

            policy = load_policy(
                policy_file,
                allowed_targets_file,
                allowed_targets=allowed_targets,
                allowed_ranks=allowed_ranks,
                base_model=base_model,
                max_artifact_bytes=max_artifact_bytes,
                tau_trigger=tau_trigger,
                tau_norm_z=tau_norm_z,
                tau_clean_delta=tau_clean_delta,
                signatures=signatures,
                trusted_keys=split_paths(trusted_keys) or None,
                quorum=quorum,
                probes=probes,
                weight_check=weight_check,
                probe_candidates=probe_candidates,
            )
            result = screen(folder, policy)
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
                typer.echo(f"  {c.name:<11}{state:<5}{c.seconds:8.3f} s  {note}".rstrip())
            s = result.scores
            probe = next((c.details for c in result.checks if c.name == "probes"), {})
            home = f" (home domain {probe['home_domain']})" if probe.get("home_domain") else ""
            typer.echo(
                f"  scores: norm_z={_fmt(s['norm_z'])} trigger={_fmt(s['trigger'])}{home} "
                f"clean_delta={_fmt(s['clean_delta'])}"
            )
        raise typer.Exit(0 if result.accepted else 1)
