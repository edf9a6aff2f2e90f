"""Value-add statistics on constructed data with known answers, placebos, and a small end-to-end run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from plora.experiments.placebo import module_update_norms, random_placebo, shuffle_answers
from plora.experiments.stats import holm, paired_comparison


def test_wilcoxon_exact_p_for_all_positive_differences():
    # n = 6 differences, all positive: the exact two-sided p is 2 / 2**6.
    base = np.array([2.0, 2.5, 3.1, 2.2, 2.9, 3.3])
    s = paired_comparison(base, base - np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), seed=0)
    assert s.p_value == pytest.approx(2 / 64)
    assert s.mean_diff == pytest.approx(0.35)
    assert s.rank_biserial == pytest.approx(1.0)
    assert s.ci_low > 0


def test_identical_samples_give_no_difference():
    x = np.linspace(0, 1, 50)
    s = paired_comparison(x, x.copy(), seed=0)
    assert s.mean_diff == 0 and s.p_value == 1.0 and not s.ci_excludes_zero


def test_bootstrap_ci_covers_known_shift_and_effect_size():
    rng = np.random.default_rng(7)
    ref = rng.normal(3.0, 1.0, size=400)
    noise = rng.normal(0.0, 0.5, size=400)
    s = paired_comparison(ref, ref - 0.3 + noise, seed=1)
    d = 0.3 - noise
    assert s.ci_low < d.mean() < s.ci_high
    assert s.ci_low > 0 and s.p_value < 1e-6
    assert s.cohen_dz == pytest.approx(d.mean() / d.std(ddof=1))


def test_holm_matches_hand_computation():
    # sorted p: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone max 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_paired_comparison_rejects_unpaired_input():
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0], [1.0])


def _crafted_plasmid(tmp_path, seed=0):
    from plora.manifest import now_utc
    from plora.plasmid import write_plasmid

    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(2):
        prefix = f"base_model.model.transformer.h.{layer}.attn.c_attn"
        tensors[f"{prefix}.lora_A.weight"] = rng.normal(size=(4, 16)).astype(np.float32)
        tensors[f"{prefix}.lora_B.weight"] = rng.normal(size=(48, 4)).astype(np.float32) * (layer + 1)
    folder = tmp_path / "trained"
    write_plasmid(
        folder,
        tensors,
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["attn.c_attn"]},
        plasmid_id="trained",
        domain="legal",
        created_at=now_utc(),
        base_model={"name": "plora-tiny", "digest": "0" * 64},
        lora={"r": 4, "alpha": 8, "target_set": "attention", "targets": ["attn.c_attn"]},
        training={"seed": 1, "samples": 8, "epochs": 1, "dataset": "builtin:legal"},
    )
    return folder


def test_placebo_a_matches_trained_norms_per_module(tmp_path):
    trained = _crafted_plasmid(tmp_path)
    random_placebo(trained, tmp_path / "placebo", seed=3)
    want, got = module_update_norms(trained), module_update_norms(tmp_path / "placebo")
    assert want.keys() == got.keys() and len(want) == 2
    for module in want:
        assert got[module] == pytest.approx(want[module], rel=1e-5)
    # same size, different direction
    from plora.plasmid import read_plasmid

    a_t, _ = read_plasmid(trained).pair("transformer.h.0.attn.c_attn")
    a_p, _ = read_plasmid(tmp_path / "placebo").pair("transformer.h.0.attn.c_attn")
    assert not np.allclose(a_t, a_p)


def test_shuffle_answers_is_a_derangement():
    from plora.data import QA

    items = [QA(question=f"q{i}", answer=f"a{i}", fact_id=str(i), domain="x") for i in range(20)]
    shuffled = shuffle_answers(items, seed=5)
    assert [e.question for e in shuffled] == [e.question for e in items]
    assert sorted(e.answer for e in shuffled) == sorted(e.answer for e in items)
    assert all(s.answer != o.answer for s, o in zip(shuffled, items, strict=True))
    assert shuffle_answers(items, seed=5) == shuffled


@pytest.mark.slow
def test_value_add_end_to_end_and_resume(tmp_path):
    from plora.experiments.value_add import ValueAddConfig, run_value_add

    cfg = ValueAddConfig(
        domains=["arithmetic", "legal"],
        ranks=[4],
        schemes=["attention"],
        seeds=[41],
        samples=32,
        dev_size=32,
        results_dir=tmp_path / "results",
        work_dir=tmp_path / "work",
        latency_repeats=3,
        n_resamples=200,
        monolithic=True,
    )
    first = run_value_add(cfg, progress=False)
    lines = first.jsonl.read_text().splitlines()
    assert len(lines) == 4  # two cells, then the monolithic plasmid on each domain
    rec = json.loads(lines[0])
    mono = [json.loads(line) for line in lines[2:]]
    assert [m["kind"] for m in mono] == ["monolithic", "monolithic"]
    for m in mono:
        s = m["statistics"]["trained_vs_monolithic"]
        assert s["ci_low"] <= s["mean_diff"] <= s["ci_high"] and 0.0 <= s["p_holm"] <= 1.0
        assert m["metrics"]["monolithic"]["nll"] > 0 and not m["meets_acceptance"]
    assert rec["config"]["domain"] == "arithmetic"
    for name in ("trained_vs_base", "placebo_a_vs_base", "placebo_b_vs_base"):
        s = rec["statistics"][name]
        assert 0.0 <= s["p_holm"] <= 1.0 and s["p_holm"] >= s["p_value"]
        assert s["ci_low"] <= s["mean_diff"] <= s["ci_high"]
    assert set(rec["cross_domain"]) == {"legal"}
    assert math.isfinite(rec["latency"]["side_median_ms"])
    assert "exact_match" in rec["metrics"]["trained"]
    md = first.markdown.read_text()
    assert "## arithmetic" in md and "## legal" in md and "## Monolithic plasmid" in md
    assert first.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the acceptance flag follows the statistics
    s = rec["statistics"]
    expected = all(
        s[n]["mean_diff"] > 0 and s[n]["p_holm"] < 0.01 and s[n]["ci_low"] > 0
        for n in ("trained_vs_base", "trained_vs_placebo_a", "trained_vs_placebo_b")
    )
    assert rec["meets_acceptance"] == expected
    # resume: the finished cells are reused, not retrained
    second = run_value_add(cfg, progress=False)
    assert [r.get("seconds") for r in second.records] == [r.get("seconds") for r in first.records]
    assert second.records == first.records
