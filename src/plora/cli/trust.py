"""`plora keygen`, `plora sign`, `plora verify`: keys, signatures and K-of-N quorum (library: plora.signer).

plora keygen --algo rsa --out keys/alice        # keys/alice (0600) + keys/alice.pub
plora sign out/legal --key keys/alice
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
        algo: KeyAlgo = typer.Option(KeyAlgo.rsa, "--algo", help="rsa (3072-bit, PSS-SHA256) or ed25519"),
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
    ) -> None:
        """Re-hash the plasmid's files, then add a signature over its canonical manifest to plora.yml."""
        with user_errors():
            from plora.signer import sign_plasmid

            manifest = sign_plasmid(folder, key)
            sig = manifest.signatures[-1]
            typer.echo(f"signed {folder}: {sig.algo} by {sig.key_fingerprint}")
            typer.echo(f"{len(manifest.signatures)} signature(s) in {folder / 'plora.yml'}")

    @app.command("verify")
    def verify(
        folder: Path = typer.Argument(..., help="plasmid folder"),
        trusted_keys: list[str] = typer.Option(
            ..., "--trusted-keys", "--trusted_keys", "--trusted_pubkeys", help="public keys or folders (repeat or a,b)"
        ),
        quorum: int = typer.Option(1, "--quorum", min=1, help="distinct trusted signers required"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Re-hash the artifact and adapter_config, check every signature. Exit 0 OK, 1 rejected, 2 bad input."""
        with user_errors():
            from plora.signer import Keyring, verify_plasmid

            keyring = Keyring.load(split_paths(trusted_keys))
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
        else:
            typer.echo(f"REJECTED {folder}")
            for code, message in result.reasons:
                typer.echo(f"  {code}: {message}")
        raise typer.Exit(0 if result.ok else 1)
