"""`plora keygen`, `plora sign`, `plora verify`: keys, signatures and K-of-N quorum (library: plora.signer).

plora keygen --algo rsa --out keys/alice        # keys/alice (0600) + keys/alice.pub
plora sign out/legal --key keys/alice           # adds alice's signature to out/legal/plora.sig.json
plora sign out/legal --format oms --key keys/ec # out/legal/model.sig, an OpenSSF model-signing bundle (EC keys)
plora verify out/legal --trusted-keys keys/ --quorum 1     # exit 0 OK, 1 rejected, 2 bad input
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Iterator
from pathlib import Path

import typer


class KeyAlgo(enum.StrEnum):
    rsa = "rsa"
    ed25519 = "ed25519"
    ecdsa_p256 = "ecdsa-p256"


class SignFormat(enum.StrEnum):
    dsse = "dsse"
    oms = "oms"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A PloraError becomes ``error: ...`` on stderr and exit 2, also when the app runs without plora.cli.main."""
    from plora.errors import PloraError

    try:
        yield
    except PloraError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def split_paths(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated lists both work: ``--trusted-keys a.pub,b.pub --trusted-keys keys/``."""
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def register(app: typer.Typer) -> None:
    @app.command("keygen")
    def keygen(
        algo: KeyAlgo = typer.Option(
            KeyAlgo.rsa, "--algo", help="rsa (3072-bit, PSS-SHA256), ed25519, or ecdsa-p256 (also for --format oms)"
        ),
        out: Path = typer.Option(
            ..., "--out", help="private key file (its folder is made if its parent exists); the public key: OUT.pub"
        ),
        force: bool = typer.Option(False, "--force", help="replace existing key files"),
    ) -> None:
        """Generate a signing key pair: OUT (private, mode 0600) and OUT.pub (public, PEM)."""
        with user_errors():
            from plora.outputs import check_new_file
            from plora.signer import fingerprint, generate_keypair, load_public_key

            check_new_file(out)  # makes at most the key's own folder (keys/), never a chain of them
            priv, pub = generate_keypair(algo.value, out, overwrite=force)
            typer.echo(f"private key  {priv} (mode 0600: keep it secret)")
            typer.echo(f"public key   {pub}")
            typer.echo(f"fingerprint  {fingerprint(load_public_key(pub))}")

    @app.command("sign")
    def sign(
        folder: Path = typer.Argument(..., help="plasmid folder"),
        key: Path = typer.Option(..., "--key", help="private key (keys/NAME)"),
        fmt: SignFormat = typer.Option(
            SignFormat.dsse, "--format", help="dsse: plora.sig.json (any key); oms: model.sig for model_signing (EC)"
        ),
        force: bool = typer.Option(False, "--force", help="--format oms: replace a model.sig by another key"),
    ) -> None:
        """Re-hash the plasmid's files, then add a detached signature beside plora.yml (which is not rewritten)."""
        with user_errors():
            from plora.signer import sign_plasmid

            done = sign_plasmid(folder, key, format=fmt.value, replace=force)
            typer.echo(f"signed {folder}: {done.algorithm} by {done.fingerprint}")
            typer.echo(f"{done.signatures} signature(s) in {done.path}")
            if done.stale_dropped:
                typer.echo(f"  dropped {done.stale_dropped} signature(s) over an older plora.yml (void now)")
            if done.legacy_removed:
                typer.echo(f"  removed {done.legacy_removed} old-format signature(s) from plora.yml (refused now)")

    @app.command("verify")
    def verify(
        folder: Path = typer.Argument(..., help="plasmid folder, or a revocation file (plora revoke)"),
        trusted_keys: list[str] = typer.Option(
            ..., "--trusted-keys", "--trusted_keys", "--trusted_pubkeys", help="public keys or folders (repeat or a,b)"
        ),
        quorum: int = typer.Option(1, "--quorum", min=1, help="distinct trusted signers required"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Re-hash the files, check plora.sig.json (and model.sig); or check a revocation file's record and
        signatures. Exit 0 OK, 1 rejected, 2 bad input."""
        with user_errors():
            from plora.signer import Keyring, verify_plasmid
            from plora.signer.dsse import check_quorum_arg

            keyring = Keyring.load(split_paths(trusted_keys))
            check_quorum_arg(quorum, keyring)
            if folder.is_file():
                if folder.suffix != ".json":
                    from plora.errors import PloraError

                    raise PloraError(f"{folder}: neither a plasmid folder nor a revocation file (.json)")
                _verify_revocation(folder, keyring, quorum, as_json)
            result = verify_plasmid(folder, keyring, quorum=quorum)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
        elif result.ok:
            signers = ", ".join(fp[:16] for fp in result.valid_signers)
            typer.echo(
                f"OK {folder}: {len(result.valid_signers)} distinct trusted signer(s), quorum {quorum} ({signers})"
            )
            for fp in result.untrusted_signers:
                typer.echo(f"  note: signature by unknown key {fp[:16]}... ignored")
            for note in result.notes:
                typer.echo(f"  note: {note}")
        else:
            typer.echo(f"REJECTED {folder}")
            for code, message in result.reasons:
                typer.echo(f"  {code}: {message}")
        raise typer.Exit(0 if result.ok else 1)


def _verify_revocation(path: Path, keyring: object, quorum: int, as_json: bool) -> None:
    """``plora verify FILE``: a revocation's envelope, payload type, record schema and K-of-N signatures."""
    from plora.recall.record import verify_revocation

    check = verify_revocation(path, keyring, quorum)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps(check.to_dict(), indent=2))
    elif check.ok and check.record is not None:
        signers = ", ".join(fp[:16] for fp in check.valid_signers)
        typer.echo(f"OK revocation {path} ({check.id[:16] if check.id else '?'}...): {check.record.describe()}")
        typer.echo(f"  {len(check.valid_signers)} distinct trusted signer(s), quorum {quorum} ({signers})")
    else:
        typer.echo(f"REJECTED revocation {path}")
        for code, message in check.reasons:
            typer.echo(f"  {code}: {message}")
    raise typer.Exit(0 if check.ok else 1)
