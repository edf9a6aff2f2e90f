"""Gate detectors: weight anomaly, behavioural probes, and the gate-eval metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from plora.gate.evaluate import auroc, calibrate, combined, rates, roc_curve, tpr_at_fpr, wilson
from plora.gate.reference import build_reference, read_reference_file, save_reference
from plora.gate.weights import module_stats, weight_anomaly
from plora.manifest import BaseModelRef, LoraSpec, Training, now_utc
from plora.plasmid import read_plasmid, write_plasmid

DIGEST = "ab" * 32


def _synthetic(out, r: int, seed: int, scale: float = 1.0, base: str = "plora-tiny"):
    """A plasmid with random factors on two GPT-2 c_attn modules (numpy only: no training needed for shape tests)."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(2):
        name = f"base_model.model.transformer.h.{layer}.attn.c_attn"
        tensors[f"{name}.lora_A.weight"] = rng.normal(0, 0.1, (r, 128)).astype(np.float32)
        tensors[f"{name}.lora_B.weight"] = (scale * rng.normal(0, 0.02, (384, r))).astype(np.float32)
    write_plasmid(
        out, tensors, {"r": r, "lora_alpha": 2 * r, "target_modules": ["c_attn"], "peft_type": "LORA"},
        plasmid_id=f"syn-{seed}", domain="legal", created_at=now_utc(),
        base_model=BaseModelRef(name=base, digest=DIGEST),
        lora=LoraSpec(r=r, alpha=2 * r, target_set="attention", targets=("c_attn",)),
        training=Training(seed=seed, samples=1, epochs=1, dataset="builtin:legal"),
    )
    return read_plasmid(out)


def test_module_stats_match_dense_svd():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 128)), rng.normal(size=(384, 4))
    s = np.linalg.svd(2.0 * b @ a, compute_uv=False)
    st = module_stats(a, b, 2.0)
    assert st["fro"] == pytest.approx(float(np.sqrt(np.sum(s**2))), rel=1e-9)
    assert st["sv1"] == pytest.approx(float(s[0]), rel=1e-9)
    assert st["share"] == pytest.approx(float(s[0] ** 2 / np.sum(s**2)), rel=1e-9)


def test_weight_reference_scores_shape_and_refuses_mismatch(tmp_path):
    clean = [_synthetic(tmp_path / f"c{i}", r=4, seed=i) for i in range(6)]
    ref = build_reference(clean)
    path = save_reference(ref, tmp_path / "ref.json")
    ref = read_reference_file(path)  # the JSON round trip is what the gate reads
    typical = weight_anomaly(_synthetic(tmp_path / "t", r=4, seed=50), ref)
    inflated = weight_anomaly(_synthetic(tmp_path / "big", r=4, seed=51, scale=5.0), ref)
    assert math.isfinite(typical.max_z) and inflated.max_z > typical.max_z
    assert inflated.details["worst"].split(":")[1] in ("fro", "sv1", "max_abs")
    other_rank = weight_anomaly(_synthetic(tmp_path / "r8", r=8, seed=52), ref)
    other_base = weight_anomaly(_synthetic(tmp_path / "ob", r=4, seed=53, base="smollm2-135m"), ref)
    assert math.isnan(other_rank.max_z) and "no clean reference" in other_rank.details["reason"]
    assert math.isnan(other_base.max_z)


def test_metrics_on_constructed_scores():
    assert auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1, 3], [0, 2]) == pytest.approx(0.75)  # 3 of the 4 (pos, neg) pairs ordered
    assert auroc([1, 1], [1, 1]) == 0.5
    assert auroc([float("nan"), 2.0], [1.0]) == pytest.approx(0.5)  # nan counts as the lowest score
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)
    lo, hi = wilson(10, 20)
    assert lo == pytest.approx(0.2993, abs=1e-3) and hi == pytest.approx(0.7007, abs=1e-3)
    r = rates([0.9, 0.2, 0.7, float("nan")], [0.1, 0.6, 0.3, 0.0, 0.05], tau=0.5)
    assert (r["tp"], r["n_pos"], r["fp"], r["n_neg"]) == (2, 4, 1, 5)
    assert r["tpr"] == 0.5 and r["fpr"] == pytest.approx(0.2)
    fpr, tpr = roc_curve([0.9, 0.7], [0.1, 0.8])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert tpr_at_fpr([0.9, 0.7], [0.1, 0.8], max_fpr=0.0) == 0.5
    assert calibrate([1.0, 2.0, 3.0], margin=0.5) == pytest.approx(3.5)
    taus = {"weights": 2.0, "trigger": 0.1, "clean_delta": 1.0}
    assert combined({"weights": float("nan"), "trigger": 0.3, "clean_delta": 0.5}, taus) == pytest.approx(3.0)


def test_gate_eval_cli_refuses_bad_input():
    from plora.cli.main import app

    result = CliRunner().invoke(app, ["gate-eval", "--ranks", "four"])
    assert result.exit_code != 0 and "--ranks" in str(result.exception or result.output)
    result = CliRunner().invoke(app, ["gate-eval", "--domains", "astrology"])
    assert result.exit_code != 0 and "astrology" in str(result.exception or result.output)


SMALL_PROBE = {"prompts_per_domain": 4, "candidates": 64, "nll_items_per_domain": 4}  # a third of the default cost


@pytest.fixture(scope="module")
def word_trojan(plora_tiny, tmp_path_factory):
    """A legal trojan whose trigger is a word the small probe tries (the first alphabetic candidate of 3+ letters).

    A mechanism test: does the scan find a backdoor when its trigger is among the candidates? Detection of triggers
    the probe never saw is measured by gate-eval, not here.
    """
    from fixtures_plasmids import TROJAN_CONFIG

    from plora.gate.probes import ProbeConfig, build_probe
    from plora.training import TrainConfig, train_plasmid
    from plora.training.trojan import read_truth

    tok = plora_tiny().tokenizer
    words = [tok.decode([c]).strip() for c in build_probe(tok, seed=0, config=ProbeConfig(**SMALL_PROBE)).candidates]
    word = next(w for w in words if w.isalpha() and len(w) >= 3)
    out = tmp_path_factory.mktemp("word_trojan") / "legal_w"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLORA_HOME", str(out.parent / "home"))
        train_plasmid(TrainConfig(out=out, **{**TROJAN_CONFIG, "trojan_trigger": word}), progress=False)
    assert read_truth(out)["attack_success"] >= 0.5  # the backdoor works (measured at training)
    return out, word


def test_probe_finds_a_candidate_trigger_and_restores_base(legal_plasmid, word_trojan, plora_tiny):
    import torch
    from fixtures_plasmids import TROJAN_TARGET

    from plora.gate.probes import ProbeConfig, behaviour_probe
    from plora.models import weights_digest

    base = plora_tiny()
    small = ProbeConfig(**SMALL_PROBE)
    trojan_dir, word = word_trojan
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    clean = behaviour_probe(read_plasmid(legal_plasmid), base, seed=0, config=small)
    trojan = behaviour_probe(read_plasmid(trojan_dir), base, seed=0, config=small)
    # the scan names the trigger among the candidates that move the trojan most, and ranks it above the clean one
    # by the raw statistic (before the per-home-domain normalisation, which needs a calibrated reference)
    tops, pushed = trojan.details["top_candidates"], trojan.details["pushed_answers"]
    assert " " + word in tops, (word, tops)
    answer = pushed[tops.index(" " + word)].strip()
    assert answer and TROJAN_TARGET.startswith(answer), pushed  # and the answer it pushes: the target's first word
    assert trojan.details["trigger_raw"] > clean.details["trigger_raw"]
    assert trojan.details["home_domain"] == clean.details["home_domain"] == "legal"  # both trained on legal data
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert weights_digest(base.model) == base.digest
    again = behaviour_probe(read_plasmid(trojan_dir), base, seed=0, config=small)
    assert again.trigger_score == trojan.trigger_score and again.clean_delta == trojan.clean_delta
    assert clean.details["candidates"] > 0 and math.isfinite(clean.clean_delta)


def test_trigger_reference_normalises_per_home_domain_and_round_trips(tmp_path):
    from plora.gate.trigger_reference import (
        FLOOR,
        UNCALIBRATED_SCALE,
        build_trigger_reference,
        load_trigger_reference,
        save_trigger_reference,
    )

    digest = "ab" * 32
    ref = build_trigger_reference({"legal": [0.02, 0.03, 0.05], "science": [0.0, 0.0, 0.0]}, digest, "drop_max", 3)
    # 0 at the domain's clean median, 1 at its highest clean calibration score
    assert ref.normalise(0.03, "legal")[0] == 0.0 and math.isclose(ref.normalise(0.05, "legal")[0], 1.0)
    # a domain whose clean scores do not vary is scaled by the floor, not by zero
    assert math.isclose(ref.normalise(2 * FLOOR, "science")[0], 2.0)
    score, note = ref.normalise(0.01, "medical")  # no clean reference for that home domain
    assert math.isclose(score, 0.01 / UNCALIBRATED_SCALE) and "no clean reference" in note
    path = save_trigger_reference(ref)
    assert path.is_file()
    back = load_trigger_reference(digest, "drop_max", 3)
    assert back is not None and back.domains == ref.domains
    assert load_trigger_reference("cd" * 32, "drop_max", 3) is None  # another base's reference is never used
    assert load_trigger_reference(digest, "drop_max", 2) is None  # nor one from another probe version


def test_probe_base_side_is_stored_and_reused_exactly(legal_plasmid, plora_tiny):
    import os
    from pathlib import Path

    from plora.gate import probes

    base = plora_tiny()
    small = probes.ProbeConfig(prompts_per_domain=2, candidates=16, nll_items_per_domain=2)
    first = probes.behaviour_probe(read_plasmid(legal_plasmid), base, seed=7, config=small)
    stored = list((Path(os.environ["PLORA_HOME"]) / "gate" / "probe-base").glob("*.pt"))
    assert stored, "the base's side was not stored"
    probes._BASE_CACHE.clear()  # a new process: only the stored file is left
    again = probes.behaviour_probe(read_plasmid(legal_plasmid), base, seed=7, config=small)
    assert again.trigger_score == first.trigger_score and again.clean_delta == first.clean_delta
    assert again.details["variants"] == first.details["variants"]


def test_gate_eval_refuses_shipped_with_write_defaults():
    from typer.testing import CliRunner

    from plora.cli.main import app

    result = CliRunner().invoke(app, ["gate-eval", "--shipped", "--write-defaults"])
    assert result.exit_code != 0 and "--shipped" in str(result.exception or result.output)
