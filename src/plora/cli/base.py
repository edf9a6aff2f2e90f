"""`plora base build` / `plora base info`: build the shipped plora-tiny base; show what a base name resolves to.

    plora base build                          # seed 0, default steps, into src/plora/assets/plora-tiny
    plora base build --seed 1 --steps 50 --out /tmp/tiny
    plora base info --base-model smollm2-135m
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from plora.cli.options import plain_app


def register(app: typer.Typer) -> None:
    base_app = plain_app(help="Base models: build plora-tiny, show what a base name resolves to.",
                           no_args_is_help=True)  # fmt: skip
    app.add_typer(base_app, name="base")

    @base_app.command("build")
    def build(
        seed: int = typer.Option(0, "--seed", help="seed of the corpus order, initialisation and data order"),
        steps: int | None = typer.Option(None, "--steps", help="optimiser steps (default: the shipped build's)"),
        out: Path | None = typer.Option(None, "--out", help="output folder (default: the shipped plora-tiny folder)"),
        threads: int = typer.Option(2, "--threads", help="torch CPU threads"),
        force: bool = typer.Option(False, "--force", help="replace an --out folder that holds other files"),
    ) -> None:
        """Train the BPE tokenizer and pre-train plora-tiny on the project's own corpus (deterministic by seed)."""
        from plora.errors import PloraError
        from plora.models import tiny_folder
        from plora.models.tiny import BUILD_FILES, DEFAULT_STEPS, build_tiny
        from plora.outputs import check_output_dir

        if steps is not None and steps <= 0:
            raise PloraError(f"--steps must be a positive integer, got {steps}")
        if threads <= 0:
            raise PloraError(f"--threads must be a positive integer, got {threads}")
        folder = out or tiny_folder()
        check_output_dir(folder, force=force, replaceable=BUILD_FILES.__contains__)  # before minutes of training
        info = build_tiny(folder, seed=seed, steps=steps or DEFAULT_STEPS, threads=threads)
        typer.echo(
            f"built {folder}: {info['parameters']:,} parameters, vocab {info['vocab_size']}, "
            f"held-out loss {info['heldout_loss']:.3f} nats/token (ln vocab {info['ln_vocab']:.2f}), "
            f"{info['seconds']:.0f} s, digest {info['digest'][:16]}"
        )

    @base_app.command("info")
    def info(
        base_model: str | None = typer.Option(None, "--base-model", help="plora-tiny, smollm2-135m, folder or hub id"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Show the chosen base's canonical name, folder and weights digest (converting smollm2-135m if needed)."""
        from plora.models import base_digest, canonical_name, model_folder

        name = canonical_name(base_model)
        record = {"name": name, "source": model_folder(name), "digest": base_digest(name)}
        typer.echo(json.dumps(record, indent=2) if as_json else "\n".join(f"{k}: {v}" for k, v in record.items()))
