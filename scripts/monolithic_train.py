"""Seed shim: ``python -m scripts.monolithic_train ...`` is ``plora train ...`` (no parser or logic here).

    python -m scripts.monolithic_train --domains arithmetic,legal,medical --epochs 1 --samples 64 --rank 4 \
        --output out/monolithic_r4

``--domains`` / ``--output`` are ``plora train``'s ``--domain`` / ``--out``: several domains train one plasmid on
their union, ``--samples`` capping each domain's draw (:func:`plora.training.monolithic.train_monolithic`).
"""

from __future__ import annotations

from plora.cli.main import run_standalone
from plora.cli.train import train


def main(argv: list[str] | None = None) -> None:
    run_standalone(train, argv, prog_name="python -m scripts.monolithic_train")


if __name__ == "__main__":
    main()
