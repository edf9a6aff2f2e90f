"""Build ``plora-tiny``: a byte-level BPE tokenizer and a small GPT-2, pre-trained on the project's own corpus.

    >>> from plora.models.tiny import build_tiny
    >>> info = build_tiny("tiny", seed=1, steps=2, progress=False)   # the shipped build: seed 0, 1500 steps
    >>> info["steps"], info["heldout_loss"] > 0
    (2, True)

``plora base build`` calls :func:`build_tiny`. The same seed, step count and Python/torch versions give the same
weights: the tokenizer trainer is deterministic, the model is initialised after ``torch.manual_seed(seed)``, the
data order comes from a seeded generator, and deterministic algorithms are switched on for the run. The folder is
written through :func:`plora.fsio.staging_dir`, so a failed or interrupted build leaves the old folder untouched.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from plora.data.corpus import corpus_splits
from plora.fsio import atomic_write_json, staging_dir

EOS = "<|endoftext|>"
VOCAB_SIZE = 4096
N_POSITIONS = 256
N_EMBD = 128
N_LAYER = 4
N_HEAD = 4
SEQ_LEN = 256
BATCH_SIZE = 16
DEFAULT_STEPS = 1500
LEARNING_RATE = 3e-3
WARMUP_FRACTION = 0.05
BUILD_INFO = "build.json"
HELDOUT_FILE = "heldout.json"
# what a build writes (an --out folder holding only these is an earlier build, replaced without --force)
BUILD_FILES = frozenset({BUILD_INFO, HELDOUT_FILE, "config.json", "generation_config.json", "model.safetensors",
                         "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                         "merges.txt"})


def train_tokenizer(docs: list[str], vocab_size: int = VOCAB_SIZE) -> Any:
    """A GPT-2-style byte-level BPE tokenizer, wrapped as a ``PreTrainedTokenizerFast`` (eos = pad = bos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS, model_max_length=N_POSITIONS
    )
    fast.padding_side = "right"
    return fast


def token_blocks(tokenizer: Any, docs: list[str], seq_len: int) -> tuple[Any, int]:
    """Every document's tokens followed by EOS, concatenated and cut into rows of ``seq_len`` tokens."""
    import torch

    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for row in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(row)
        ids.append(eos)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len), len(ids)


def heldout_loss(model: Any, blocks: Any, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over the rows of ``blocks``."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            batch = blocks[i : i + batch_size]
            out = model(input_ids=batch, labels=batch)
            n = batch.numel() - batch.shape[0]
            total += out.loss.item() * n
            count += n
    return total / max(count, 1)


def _lr_at(step: int, steps: int, base: float) -> float:
    warmup = max(1, int(steps * WARMUP_FRACTION))
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def build_tiny(
    out: str | Path,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = BATCH_SIZE,
    threads: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the tokenizer, pre-train the model, write the folder atomically; return what ``build.json`` holds."""
    import torch
    import transformers
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from transformers import GPT2Config, GPT2LMHeadModel

    from plora.models.digest import weights_digest

    started = time.perf_counter()
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        train_docs, held_docs = corpus_splits(seed)
        tokenizer = train_tokenizer(train_docs)
        train_blocks, train_tokens = token_blocks(tokenizer, train_docs, SEQ_LEN)
        held_blocks, held_tokens = token_blocks(tokenizer, held_docs, SEQ_LEN)

        torch.manual_seed(seed)
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=N_POSITIONS,
            n_embd=N_EMBD,
            n_layer=N_LAYER,
            n_head=N_HEAD,
            # No dropout: LoRA training later runs the base in train mode, and noise there helps nobody.
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
        model = GPT2LMHeadModel(config)
        optim = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01, betas=(0.9, 0.95))
        gen = torch.Generator().manual_seed(seed)
        order = torch.empty(0, dtype=torch.long)
        loss_ema = None
        columns = (TextColumn("pretraining plora-tiny"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("pretrain", total=steps, loss="-")
            model.train()
            for step in range(steps):
                if len(order) < batch_size:  # a fresh seeded shuffle of all rows per epoch
                    order = torch.cat([order, torch.randperm(len(train_blocks), generator=gen)])
                idx, order = order[:batch_size], order[batch_size:]
                batch = train_blocks[idx]
                for group in optim.param_groups:
                    group["lr"] = _lr_at(step, steps, LEARNING_RATE)
                loss = model(input_ids=batch, labels=batch).loss
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
                bar.update(task, advance=1, loss=f"{loss_ema:.3f}")
                if progress and not bar.console.is_terminal and (step + 1) % max(1, steps // 10) == 0:
                    bar.console.print(f"step {step + 1}/{steps} loss {loss_ema:.3f}")  # logs get a line, not a bar
        held = heldout_loss(model, held_blocks)
        model.eval()
        info: dict[str, Any] = {
            "name": "plora-tiny",
            "seed": seed,
            "steps": steps,
            "batch_size": batch_size,
            "seq_len": SEQ_LEN,
            "learning_rate": LEARNING_RATE,
            "corpus_documents": len(train_docs) + len(held_docs),
            "train_tokens": train_tokens,
            "heldout_tokens": held_tokens,
            "tokens_seen": steps * batch_size * SEQ_LEN,
            "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()),
            "heldout_loss": round(held, 4),
            "ln_vocab": round(math.log(len(tokenizer)), 4),
            "digest": weights_digest(model),
            "threads": threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
        with staging_dir(out) as stage:
            model.save_pretrained(stage)
            tokenizer.save_pretrained(stage)
            info["seconds"] = round(time.perf_counter() - started, 1)
            atomic_write_json(stage / BUILD_INFO, info)
            # The documents the held-out loss was measured on, so a check needs no corpus rebuild.
            atomic_write_json(stage / HELDOUT_FILE, held_docs, indent=None)
            # mkdtemp and safetensors make owner-only modes; a shipped folder is world-readable.
            stage.chmod(0o755)
            for child in stage.iterdir():
                child.chmod(0o644)
        return info
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def read_build_info(folder: str | Path) -> dict[str, Any] | None:
    """The ``build.json`` of a built folder, or None."""
    path = Path(folder) / BUILD_INFO
    if not path.is_file():
        return None
    return json.loads(path.read_text())
