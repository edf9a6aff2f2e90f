"""``plora merge``: weighted merge of plasmids into a new plasmid folder (library: :mod:`plora.loader.merge`).

plora merge --plasmids out/legal,out/medical --weights 0.6,0.4 --out out/merged [--method linear]
"""

from __future__ import annotations

import typer


def _split(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


def merge(
    plasmids: str = typer.Option(..., "--plasmids", help="comma-separated plasmid folders (same base model)"),
    weights: str = typer.Option(None, "--weights", help="comma-separated weights, one per plasmid (default: equal)"),
    out: str = typer.Option(..., "--out", help="new folder for the merged plasmid (never one of --plasmids)"),
    force: bool = typer.Option(False, "--force", help="replace an existing --out that holds more than a plasmid"),
    method: str = typer.Option("linear", "--method", help="linear, svd, ties, dare_linear, dare_ties or cat"),
    density: float = typer.Option(None, "--density", help="fraction kept by ties / dare pruning, in (0, 1]"),
    seed: int = typer.Option(0, "--seed", help="seed for the random dare masks"),
    svd_rank: int = typer.Option(None, "--svd-rank", help="rank of an svd merge (default: the largest source rank)"),
) -> None:
    """Merge plasmids with weights into one plasmid; its plora.yml records the sources and weights."""
    from plora.errors import LoaderError
    from plora.loader.merge import merge_plasmids
    from plora.outputs import check_output_dir

    folders = _split(plasmids)
    check_output_dir(out, force=force, sources=folders)
    if weights is None:
        values = [1.0 / len(folders)] * len(folders) if folders else []
    else:
        try:
            values = [float(w) for w in _split(weights)]
        except ValueError:
            raise LoaderError(f"--weights must be comma-separated numbers, got {weights!r}") from None
    manifest = merge_plasmids(
        folders, values, method=method, out=out, density=density, seed=seed, svd_rank=svd_rank, force=force
    )
    sources = ", ".join(f"{s.plasmid_id} x {s.weight:g}" for s in manifest.merge.sources)
    if manifest.merge.method != method:
        typer.echo(f"note: one plasmid is merged linearly (as PEFT does), not with --method {method}")
    typer.echo(
        f"merged {sources} ({manifest.merge.method}) -> {out}: plasmid {manifest.plasmid_id}, "
        f"r={manifest.lora.r}, targets {','.join(manifest.lora.targets)}, sha256 {manifest.artifact.sha256[:16]}"
    )


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)
