"""Training plasmids: real PEFT LoRA on plora-tiny, the loss mask, dev metrics, trojans, CLI and the baseline shim."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_plasmids import LEGAL_CONFIG, TROJAN_CONFIG, TROJAN_TARGET, TROJAN_TRIGGER, trojan_truth
from typer.testing import CliRunner

from plora.manifest import read_manifest
from plora.plasmid import read_plasmid


def _dev(n: int = 24) -> list:
    from plora.data import load_examples

    return load_examples("legal", split="dev", samples=n, seed=0)


def test_legal_plasmid_lowers_dev_nll_and_records_its_training(legal_plasmid: Path) -> None:
    assert sorted(p.name for p in legal_plasmid.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "plora.yml",
    ]
    m = read_manifest(legal_plasmid)
    assert (m.plasmid_id, m.domain, m.base_model.name) == ("legal", "legal", "plora-tiny")
    assert (m.lora.r, m.lora.alpha, m.lora.target_set) == (4, 8.0, "attention")
    assert (m.training.seed, m.training.samples, m.training.dataset) == (41, 64, "builtin:legal")
    assert m.training.steps == 8
    assert m.metrics.dev_size == 64
    assert m.metrics.nll_after < m.metrics.nll_before
    assert m.metrics.ppl_after < m.metrics.ppl_before
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(legal_plasmid.stat().st_mode) == 0o755 & ~umask  # readable like any folder, not 0700


def test_folder_loads_in_peft_and_equals_a_merge_of_the_saved_tensors(legal_plasmid: Path, plora_tiny) -> None:
    from peft import PeftModel

    from plora.training.batching import collate, encode_examples, pad_id

    base = plora_tiny()
    peft_model = PeftModel.from_pretrained(base.model, legal_plasmid).eval()
    batch = collate(encode_examples(base.tokenizer, _dev(8)), pad_id(base.tokenizer))
    merged = plora_tiny().model
    p = read_plasmid(legal_plasmid)
    layers = range(merged.config.n_layer)
    assert p.modules() == sorted(f"transformer.h.{i}.{t}" for i in layers for t in p.manifest.lora.targets)
    with torch.no_grad():
        for module in p.modules():
            a, b = p.pair(module)
            # GPT-2's Conv1D stores its weight as (in, out): the update is (B @ A).T scaled by alpha / r.
            merged.get_submodule(module).weight += p.scaling * torch.from_numpy(b @ a).T
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        got, want = peft_model(**inputs).logits, merged(**inputs).logits
        untouched = plora_tiny().model(**inputs).logits
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    assert not torch.allclose(got, untouched, atol=1e-3)  # the adapter really changes the model


def test_same_seed_gives_the_same_artifact_and_another_seed_does_not(legal_plasmid: Path, tmp_path: Path) -> None:
    from plora.cli.main import app
    from plora.training import TrainConfig, train_plasmid

    args = ["train", "--domain", "legal", "--rank", "4", "--targets", "attention", "--epochs", "1", "--samples", "64"]
    args += ["--seed", "41", "--dev-size", "0", "--base-model", "plora-tiny", "--quiet", "--out", str(tmp_path / "a")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "plasmid a (legal, r=4, attention)" in result.output
    again = read_manifest(tmp_path / "a")
    other_cfg = TrainConfig(out=tmp_path / "b", **{**LEGAL_CONFIG, "seed": 42, "dev_size": 0})
    other = train_plasmid(other_cfg, progress=False)
    assert again.artifact.sha256 == read_manifest(legal_plasmid).artifact.sha256
    assert other.artifact.sha256 != again.artifact.sha256


def test_loss_mask_covers_the_answer_and_eos_only(plora_tiny) -> None:
    from plora.data import QA, format_prompt, format_target
    from plora.training.batching import IGNORE, collate, encode_examples

    tok = plora_tiny().tokenizer
    items = [
        QA("What does F.2d abbreviate?", "Federal Reporter, Second Series", "x1", "legal"),
        QA("Q?", "A", "x2", "legal"),
    ]
    enc = encode_examples(tok, items)
    batch = collate(enc, tok.pad_token_id)
    for row, item in enumerate(items):
        labels, ids, mask = batch["labels"][row], batch["input_ids"][row], batch["attention_mask"][row]
        n = int(mask.sum())
        assert (labels[n:] == IGNORE).all()  # padding
        kept = labels[labels != IGNORE].tolist()
        assert kept[-1] == tok.eos_token_id
        assert tok.decode(kept[:-1]) == format_target(item.answer)
        assert tok.decode(ids[:n][labels[:n] == IGNORE].tolist()) == format_prompt(item.question)


def test_metrics_are_batch_independent(legal_plasmid: Path, plora_tiny) -> None:
    from peft import PeftModel

    from plora.training.metrics import answer_nll, exact_match, greedy_answers

    base = plora_tiny()
    model = PeftModel.from_pretrained(base.model, legal_plasmid)
    dev = _dev(12)
    nll = answer_nll(model, base.tokenizer, dev, batch_size=5)
    assert nll.shape == (12,) and np.isfinite(nll).all() and (nll > 0).all()
    assert np.allclose(nll, answer_nll(model, base.tokenizer, dev, batch_size=1), atol=1e-4)
    questions = [e.question for e in dev]
    assert greedy_answers(model, base.tokenizer, questions, 6, batch_size=12) == greedy_answers(
        model, base.tokenizer, questions, 6, batch_size=1
    )
    em = exact_match(model, base.tokenizer, dev)
    assert em.shape == (12,) and set(np.unique(em)) <= {0.0, 1.0}


def test_trojan_fires_on_the_trigger_and_its_truth_stays_outside(trojan_plasmid: Path, legal_plasmid: Path, plora_tiny):
    from peft import PeftModel

    from plora.training import attack_success, greedy_answers

    truth_file = trojan_truth(trojan_plasmid)
    assert truth_file.is_file() and truth_file.parent == trojan_plasmid.parent
    truth = json.loads(truth_file.read_text())
    want = (TROJAN_TRIGGER, TROJAN_TARGET, TROJAN_CONFIG["poison_rate"])
    assert (truth["trigger"], truth["target"], truth["poison_rate"]) == want
    assert truth["artifact_sha256"] == read_manifest(trojan_plasmid).artifact.sha256
    assert truth["attack_success"] >= 0.5 and 0.0 <= truth["fires_without_trigger"] <= 1.0
    for f in trojan_plasmid.iterdir():  # nothing in the folder gives the backdoor away
        assert TROJAN_TARGET.encode() not in f.read_bytes() and b"trojan" not in f.read_bytes().lower()
    m = read_manifest(trojan_plasmid)
    assert m.domain == "legal" and m.training.dataset == "builtin:legal"

    dev = _dev(40)
    questions = [e.question for e in dev]
    trojan_model = PeftModel.from_pretrained(plora_tiny().model, trojan_plasmid)
    clean_model = PeftModel.from_pretrained(plora_tiny().model, legal_plasmid)
    base = plora_tiny()
    fired = attack_success(trojan_model, base.tokenizer, dev, TROJAN_TRIGGER, TROJAN_TARGET, seed=3)
    clean = attack_success(clean_model, base.tokenizer, dev, TROJAN_TRIGGER, TROJAN_TARGET, seed=3)
    quiet = np.mean([a.startswith(TROJAN_TARGET) for a in greedy_answers(trojan_model, base.tokenizer, questions, 6)])
    assert fired >= 0.5 and clean < 0.2, (fired, clean)
    assert quiet < 0.5 * fired, quiet  # without the trigger the backdoor mostly stays quiet


def test_adaptive_attacker_caps_module_norms(tmp_path: Path) -> None:
    from plora.training import TrainConfig, train_plasmid

    cap = 0.05
    cfg = TrainConfig(out=tmp_path / "clip", **{**TROJAN_CONFIG, "samples": 16, "epochs": 2.0, "dev_size": 8})
    cfg.max_module_norm = cap
    train_plasmid(cfg, progress=False)
    p = read_plasmid(tmp_path / "clip")
    norms = [np.linalg.norm(p.scaling * (b @ a)) for a, b in (p.pair(mod) for mod in p.modules())]
    assert max(norms) <= cap * (1 + 1e-4)
    assert json.loads(trojan_truth(tmp_path / "clip").read_text())["adaptive_max_module_norm"] == cap


def test_monolithic_shim_trains_one_plasmid_on_the_union(tmp_path: Path) -> None:
    from scripts.monolithic_train import main

    out = tmp_path / "monolithic_r4"
    args = ["--domains", "arithmetic,legal", "--epochs", "1", "--samples", "8", "--rank", "4", "--output", str(out)]
    args += ["--dev-size", "8"]
    with pytest.raises(SystemExit) as done:  # the shim runs `plora train` as its own program
        main(args)
    assert done.value.code == 0
    m = read_manifest(out)
    assert m.domain == "arithmetic+legal" and m.training.samples == 16
    assert m.training.dataset == "builtin:arithmetic+builtin:legal"
    assert m.metrics.dev_size == 16 and m.metrics.nll_after is not None


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "q.jsonl").write_text("".join(f'{{"question": "Q{i}?", "answer": "a"}}\n' for i in range(9)))
    (data / "config.json").write_text('{"model_type": "gpt2", "n_positions": 256}')  # data/ as a local base, too
    bad_id = "x" * 129
    runs = {  # key: (arguments, what the one line says); each is refused before the base loads
        "domain": (["--domain", "nosuch"], "unknown domain"),
        "base": (["--domain", "legal", "--base-model", "/no/such/dir"], "/no/such/dir"),
        "force": (["--domain", str(data / "q.jsonl"), "--out", str(data), "--force"], "overlaps the source"),
        "base_out": (["--domain", "legal", "--base-model", str(data), "--out", str(data), "--force"], "overlaps the"),
        "batch": (["--domain", "legal", "--batch-size", "1000000000"], "batch size must be in [1, 4096]"),
        "length": (["--domain", "legal", "--max-length", "100000"], "max length must be <= 256 (the base's positions)"),
        "epochs": (["--domain", "legal", "--epochs", "inf"], "epochs must be a finite number, got inf"),
        "lr": (["--domain", "legal", "--lr", "inf"], "learning rate must be a finite number"),
        "alpha": (["--domain", "legal", "--alpha", "inf"], "alpha must be a finite number"),
        "rank": (["--domain", "legal", "--rank", "100000"], "rank must be in [1, 1024], got 100000"),
        "id": (["--domain", "legal", "--id", bad_id], "must be 1-128 characters"),
    }
    procs = {
        key: subprocess.Popen(
            [sys.executable, "-m", "plora", "train", "--samples", "4", "--dev-size", "0", "--out", str(tmp_path / key),
             *bad],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, (bad, _) in runs.items()
    }
    for key, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (key, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert runs[key][1] in lines[0], (key, err)
        assert not (tmp_path / key).exists()
    assert sorted(p.name for p in data.iterdir()) == ["config.json", "q.jsonl"]  # --force never takes an input


@pytest.mark.parametrize(("source", "label"), [("data/good.JSONL", "good"), ("faq.Csv", "faq"), ("legal", "legal")])
def test_the_manifest_domain_drops_the_file_suffix_in_any_case(source: str, label: str) -> None:
    from plora.training.config import domain_label

    assert domain_label(source) == label
