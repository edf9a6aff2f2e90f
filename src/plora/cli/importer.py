"""`plora import`: wrap a plain PEFT LoRA folder into a plasmid (library: plora.importer).

plora import peft-out/ --out out/mine --domain legal      # then: plora sign out/mine --key keys/alice
"""

from __future__ import annotations

from pathlib import Path

import typer

from plora.cli.trust import user_errors


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_cmd(
        peft_dir: Path = typer.Argument(..., help="folder written by PEFT save_pretrained (safetensors)"),
        out: Path = typer.Option(..., "--out", help="the plasmid folder to write"),
        base_model: str = typer.Option(
            None, "--base-model", help="the adapter's base (default: PLORA_BASE_MODEL, else plora-tiny)"
        ),
        plasmid_id: str = typer.Option(None, "--id", help="plasmid id (default: the --out folder's name)"),
        domain: str = typer.Option("imported", "--domain", help="domain label written into plora.yml"),
        force: bool = typer.Option(False, "--force", help="replace an existing --out folder"),
    ) -> None:
        """Wrap a PEFT LoRA adapter into a plasmid: hashes, rank and targets from the tensors, the base checked."""
        with user_errors():
            from plora.importer import import_peft

            done = import_peft(
                peft_dir, out, base_model=base_model, plasmid_id=plasmid_id, domain=domain, overwrite=force
            )
        m = done.manifest
        typer.echo(
            f"imported {peft_dir} -> {done.folder}: id {m.plasmid_id}, rank {m.lora.r}, "
            f"targets {', '.join(m.lora.targets)} ({m.lora.target_set}), artifact {m.artifact.size_bytes} bytes"
        )
        typer.echo(f"base {m.base_model.name} (weights digest {m.base_model.digest[:16]}...)")
        for note in done.notes:
            typer.echo(f"  note: {note}")
        typer.echo(f"next: plora sign {done.folder} --key KEY")
