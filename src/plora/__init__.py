"""plora: LoRA plasmids that agents train, sign, share, screen and hot-load.

    >>> from plora.manifest import read_manifest
    >>> m = read_manifest("out/legal")
    >>> m.domain, m.lora.r, len(m.artifact.sha256)
    ('legal', 4, 64)

The package never imports torch at top level: ``plora --help``, verification and the swarm
simulation stay light. Heavy modules (training, loader, probes) import torch where they need it.
"""

__version__ = "0.1.0"
