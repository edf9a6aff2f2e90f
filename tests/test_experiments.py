"""Value-add statistics on constructed data with known answers, placebos, and a small end-to-end run."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path

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


def test_placebo_b_keeps_answers_within_their_kind_of_question():
    """Answers move only among questions asking the same kind of thing (a court id never answers a neutron count),
    so placebo B learns each kind's format; a kind with one example is pooled with the other single ones."""
    from plora.data import domain_items
    from plora.experiments.placebo import ask_kind

    items = [qa for d in ("science", "legal") for qa in domain_items(d, "train")[:150]]
    shuffled = shuffle_answers(items, seed=41)
    kinds = {ask_kind(e) for e in items}
    assert len(kinds) > 4
    single = {k for k in kinds if sum(ask_kind(e) == k for e in items) == 1}
    for kind in kinds - single:
        own = sorted(e.answer for e in items if ask_kind(e) == kind)
        assert sorted(s.answer for s, e in zip(shuffled, items, strict=True) if ask_kind(e) == kind) == own
    moved = sum(s.answer != e.answer for s, e in zip(shuffled, items, strict=True))
    assert moved >= 0.8 * len(items)  # a derangement within each kind (an answer may repeat within a kind)
    assert shuffle_answers(items, seed=41) == shuffled and shuffle_answers(items, seed=42) != shuffled


def test_knowledge_and_skill_items_keep_training_wordings_and_facts_apart():
    from plora.data import domain_items
    from plora.experiments.items import cell_items

    for domain in ("arithmetic", "science", "legal"):
        items = cell_items(domain, samples=128, seed=41, dev_size=256, calibration_size=128)
        trained_questions = {qa.question for qa in domain_items(domain, "train")}
        train_facts = {qa.fact_id for qa in domain_items(domain, "train")}
        # skill: no wording of a skill item's fact is ever trained on (by any seed: the whole train split)
        assert not {qa.fact_id for qa in items.skill} & train_facts
        # knowledge: the plasmid's own statements, each once, in a wording no training item uses
        assert {qa.statement for qa in items.knowledge} <= {qa.statement for qa in items.train}
        assert len({qa.statement for qa in items.knowledge}) == len(items.knowledge) > 0.8 * len(items.train)
        assert not {qa.question for qa in items.knowledge} & trained_questions
        assert items.recall == items.train and len(items.train) == 128
        # calibration: facts that no evaluated item states
        evaluated = {qa.fact_id for qa in items.knowledge + items.skill + items.recall}
        assert len(items.calibration) == 128 and not {qa.fact_id for qa in items.calibration} & evaluated


def test_temperature_fit_recovers_a_known_temperature():
    import torch

    from plora.experiments.calibration import fit_temperature_from_logits

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3000, 40, generator=gen) * 3
    weights = torch.full((3000,), 1 / 3000)
    for true_t in (0.6, 1.0, 2.5):
        targets = torch.multinomial(torch.softmax(logits / true_t, -1), 1, generator=gen).squeeze(1)
        fitted = fit_temperature_from_logits([(logits[:1500], targets[:1500], weights[:1500]),
                                              (logits[1500:], targets[1500:], weights[1500:])])  # fmt: skip
        assert fitted == pytest.approx(true_t, rel=0.08)


def test_fingerprint_follows_the_effective_sample_count_and_the_data(monkeypatch):
    from plora.experiments.value_add import ValueAddConfig

    data = {"arithmetic": "d1", "legal": "d2"}
    cfg = ValueAddConfig(domains=["arithmetic", "legal"], samples=128)
    full = cfg.fingerprint("plora-tiny", "digest", data)
    monkeypatch.setenv("PLORA_SAMPLES", "16")
    capped = cfg.fingerprint("plora-tiny", "digest", data)
    assert capped != full  # 16 items trained under the cap: not the same measurement as 128
    assert (
        ValueAddConfig(domains=["arithmetic", "legal"], samples=16).fingerprint("plora-tiny", "digest", data) == capped
    )
    monkeypatch.setenv("PLORA_SAMPLES", "1000")
    assert cfg.fingerprint("plora-tiny", "digest", data) == full  # a cap above --samples changes nothing
    assert cfg.fingerprint("plora-tiny", "digest", {**data, "legal": "d3"}) != full
    assert cfg.fingerprint("plora-tiny", "other digest", data) != full
    # the training budget in force is part of it: the base's default, or what the options say
    epochs, lr = cfg.budget("plora-tiny")
    same = ValueAddConfig(domains=["arithmetic", "legal"], epochs=epochs, learning_rate=lr)
    assert same.fingerprint("plora-tiny", "digest", data) == full
    longer = ValueAddConfig(domains=["arithmetic", "legal"], epochs=epochs + 1)
    assert longer.fingerprint("plora-tiny", "digest", data) != full


def _stats_block(mean: float, p: float) -> dict:
    return {"mean_diff": mean, "ci_low": mean - 0.01, "ci_high": mean + 0.01, "p_value": p}


def _record(placebo_a_raw: float, placebo_a_cal: float) -> dict:
    comparisons = ("trained_vs_base", "placebo_a_vs_base", "placebo_b_vs_base", "trained_vs_placebo_a",
                   "trained_vs_placebo_b")  # fmt: skip
    stats = {
        name: {"nll": _stats_block(1.0, 1e-30), "nll_calibrated": _stats_block(1.0, 1e-30)} for name in comparisons
    }
    stats["placebo_a_vs_base"] = {
        "nll": _stats_block(placebo_a_raw, 1e-30),
        "nll_calibrated": _stats_block(placebo_a_cal, 1e-30),
    }
    stats["placebo_b_vs_base"]["em"] = _stats_block(0.0, 1.0)
    question = {"n": 256, "metrics": {}, "statistics": stats}
    return {"kind": "cell", "config": {"domain": "science", "rank": 4, "scheme": "all", "seed": 41},
            "questions": {"knowledge": question, "skill": json.loads(json.dumps(question))}}  # fmt: skip


def test_placebo_a_guardrail_is_judged_on_calibrated_nll():
    from plora.experiments.value_add import apply_holm

    # a random adapter that only flattens an over-confident base: raw NLL gain, no calibrated gain -> no violation
    assert apply_holm([_record(placebo_a_raw=0.12, placebo_a_cal=0.0)], alpha=0.01) == []
    # one that lowers the calibrated NLL adds information where it should not: the run must stop
    violations = apply_holm([_record(placebo_a_raw=0.12, placebo_a_cal=0.08)], alpha=0.01)
    assert len(violations) == 2 and all("placebo A" in v and "calibrated" in v for v in violations)
    # below the practical margin (0.05 nats) nothing fires, however small p is
    assert apply_holm([_record(placebo_a_raw=0.0, placebo_a_cal=0.03)], alpha=0.01) == []


def test_latency_over_budget_is_a_guardrail_of_the_run_not_a_failed_cell(legal_plasmid, plora_tiny, monkeypatch):
    """Over budget, a cell still gets its record (so the report is written) and the run's guardrails name it."""
    from plora.experiments.cells import _latency
    from plora.experiments.value_add import apply_holm

    monkeypatch.setenv("PLORA_LATENCY_BUDGET_MS", "0.001")
    latency = _latency(plora_tiny().model, legal_plasmid, repeats=2)
    assert latency["budget_ms"] == 0.001 and latency["side_median_ms"] > 0.001
    violations = apply_holm([{**_record(placebo_a_raw=0.0, placebo_a_cal=0.0), "latency": latency}], alpha=0.01)
    assert len(violations) == 1 and "over the latency budget of 0.001 ms (PLORA_LATENCY_BUDGET_MS)" in violations[0]
    within = {**latency, "budget_ms": 1e9}
    assert apply_holm([{**_record(placebo_a_raw=0.0, placebo_a_cal=0.0), "latency": within}], alpha=0.01) == []


def test_score_items_agrees_with_answer_nll_and_exact_match(legal_plasmid, plora_tiny):
    from plora.data import QA, load_examples
    from plora.data.corpus import _DAYS, _MONTHS
    from plora.loader import injected
    from plora.training.metrics import answer_nll, exact_match, score_items

    base = plora_tiny()
    items = load_examples("arithmetic", split="dev", samples=48, seed=3) + load_examples("legal", "train", 16, 41)
    # questions from plora-tiny's own pre-training corpus, which it answers: the exact-match hits are settled too
    items += [QA(f"What day comes after {d}?", _DAYS[(i + 1) % 7], f"day:{d}", "general") for i, d in enumerate(_DAYS)]
    items += [
        QA(f"Which month comes after {m}?", _MONTHS[(i + 1) % 12], f"m:{m}", "general") for i, m in enumerate(_MONTHS)
    ]
    for adapter in (None, legal_plasmid):
        with injected(base.model, adapter, mode="side") if adapter else contextlib.nullcontext():
            scores = score_items(base.model, base.tokenizer, items, (1.0, 1.7), with_exact_match=True)
            assert np.allclose(scores.nll[0], answer_nll(base.model, base.tokenizer, items), atol=1e-5)
            hot = answer_nll(base.model, base.tokenizer, items, temperature=1.7)
            assert np.allclose(scores.nll[1], hot, atol=1e-5) and not np.allclose(scores.nll[0], hot)
            # skipping the decode of examples whose first token cannot begin the answer changes no result
            assert np.array_equal(scores.exact_match, exact_match(base.model, base.tokenizer, items))
            if adapter is None:
                assert scores.exact_match.sum() >= 3


@pytest.mark.slow
def test_value_add_end_to_end_and_resume(tmp_path, monkeypatch):
    from plora.experiments import cells
    from plora.experiments.value_add import ValueAddConfig, run_value_add

    cfg = ValueAddConfig(
        domains=["arithmetic", "legal"],
        ranks=[4],
        schemes=["attention"],
        seeds=[41],
        samples=32,
        dev_size=32,
        calibration_size=32,
        epochs=2.0,
        results_dir=tmp_path / "results",
        latency_repeats=3,
        n_resamples=200,
        monolithic=True,
    )
    first = run_value_add(cfg, progress=False)
    lines = first.jsonl.read_text().splitlines()
    assert len(lines) == 4  # two cells, then the monolithic plasmid on each domain
    rec = json.loads(lines[0])
    assert rec["config"]["domain"] == "arithmetic" and rec["config"]["samples"] == 32
    # the plasmids live under results/, never under out/ (which `plora offer --root out/` serves)
    assert all(str(tmp_path / "results" / "value_add_plasmids") in p for p in rec["plasmids"].values())
    assert set(rec["temperatures"]) == {"base", "trained", "placebo_a", "placebo_b"}
    assert all(0.05 <= t <= 20 for t in rec["temperatures"].values())
    for question in ("knowledge", "skill"):
        q = rec["questions"][question]
        assert q["n"] == (32 if question == "skill" else len(q["metrics"]["base"]) and q["n"]) and q["n"] > 20
        for arm in ("base", "trained", "placebo_a", "placebo_b"):
            m = q["metrics"][arm]
            assert m["nll"] > 0 and m["nll_calibrated"] > 0 and 0 <= m["exact_match"] <= 1
        for name in ("trained_vs_base", "placebo_a_vs_base", "placebo_b_vs_base"):
            for metric in ("nll", "nll_calibrated", "em"):
                s = q["statistics"][name][metric]
                assert 0.0 <= s["p_value"] <= s["p_holm"] <= 1.0
                assert s["ci_low"] <= s["mean_diff"] <= s["ci_high"]
        # the acceptance flag follows the statistics: raw AND calibrated NLL, against all three references
        expected = all(
            q["statistics"][n][m]["mean_diff"] > 0 and q["statistics"][n][m]["p_holm"] < 0.01
            and q["statistics"][n][m]["ci_low"] > 0
            for n in ("trained_vs_base", "trained_vs_placebo_a", "trained_vs_placebo_b")
            for m in ("nll", "nll_calibrated")
        )  # fmt: skip
        assert q["meets_acceptance"] == expected
    assert rec["recall"]["n"] == 32 and rec["recall"]["metrics"]["trained"]["nll"] > 0
    assert set(rec["cross_domain"]) == {"legal"}
    assert math.isfinite(rec["latency"]["side_median_ms"])
    mono = [json.loads(line) for line in lines[2:]]
    assert [m["kind"] for m in mono] == ["monolithic", "monolithic"]
    for m in mono:
        s = m["questions"]["skill"]["statistics"]["trained_vs_monolithic"]["nll_calibrated"]
        assert s["ci_low"] <= s["mean_diff"] <= s["ci_high"] and 0.0 <= s["p_holm"] <= 1.0
        assert not m["questions"]["skill"]["meets_acceptance"]
    md = first.markdown.read_text()
    assert "## arithmetic" in md and "### knowledge carried" in md and "### skill" in md and "## Monolithic" in md
    assert first.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: every cell is reused, and the base model is never loaded
    def no_model(*args, **kwargs):
        raise AssertionError("a resumed run with nothing to do loaded the model")

    monkeypatch.setattr(cells, "CellRunner", no_model)
    second = run_value_add(cfg, progress=False)
    assert second.records == first.records
    # --alpha re-judges the same records (no cell is redone): below the smallest p 32 paired items can give
    # (Wilcoxon: 2 / 2**32 exact, about 8e-7 by the normal approximation), no comparison is significant
    strict = run_value_add(dataclasses.replace(cfg, alpha=1e-12), progress=False)
    assert not any(q["meets_acceptance"] for r in strict.records for q in r["questions"].values())
    assert "Holm p < 1e-12" in strict.markdown.read_text()
    # under a PLORA_SAMPLES cap the effective count differs: finished cells are not reused
    monkeypatch.setenv("PLORA_SAMPLES", "16")
    with pytest.raises(AssertionError, match="loaded the model"):
        run_value_add(cfg, progress=False)


def test_seed_shim_is_the_plora_command():
    # its options come from ValueAddConfig through plora.cli.experiments (tests/test_cli.py checks each option)
    shim = (Path(__file__).parents[1] / "scripts" / "run_lora_value_add.py").read_text()
    assert "argparse" not in shim and "Option(" not in shim and "import value_add" in shim


@pytest.mark.slow
def test_value_add_cells_give_the_same_records_in_worker_processes(tmp_path):
    # the executor seam: two worker processes (each loading the base once) measure what the inline run measures
    from plora.executor import ExecutorConfig
    from plora.experiments.value_add import ValueAddConfig, run_value_add

    def run(where: str, jobs: int) -> list[dict]:
        cfg = ValueAddConfig(
            domains=["arithmetic"], ranks=[4], schemes=["attention"], seeds=[41, 42], samples=16, dev_size=16,
            calibration_size=16, cross_domain_size=8, epochs=1.0, results_dir=tmp_path / where, latency_repeats=2,
            n_resamples=100,
        )
        return run_value_add(cfg, progress=False, executor=ExecutorConfig(jobs=jobs)).records

    def measured(rec: dict) -> dict:
        return {"key": rec["key"], "questions": rec["questions"], "temperatures": rec["temperatures"],
                "recall": rec["recall"], "cross_domain": rec["cross_domain"]}

    inline, workers = run("inline", 1), run("workers", 2)
    assert [r["key"] for r in inline] == [r["key"] for r in workers] == ["cell|arithmetic|r4|attention|s41",
                                                                          "cell|arithmetic|r4|attention|s42"]
    assert [measured(r) for r in inline] == [measured(r) for r in workers]
    assert (tmp_path / "workers" / "value_add.jsonl").read_text().count("\n") == 2
    # every statistic can be re-derived from the per-item scores written beside the cell's plasmids
    for rec in inline:
        scores = np.load(rec["items_file"])
        for question, block in rec["questions"].items():
            diff = scores[f"{question}/base/nll"] - scores[f"{question}/trained/nll"]
            assert len(scores[f"{question}/questions"]) == len(diff) == block["n"]
            assert diff.mean() == pytest.approx(block["statistics"]["trained_vs_base"]["nll"]["mean_diff"], rel=1e-9)


def _value_add_cli(capsys, *args: str) -> tuple[int, str]:
    from plora.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["value-add", "--domains", "arithmetic", "--ranks", "4", "--schemes", "attention", "--seeds", "41",
              "--samples", "8", "--dev-size", "8", "--calibration-size", "8", "--epochs", "1", *args])  # fmt: skip
    return int(exit_.value.code), capsys.readouterr().err


def _no_cells(monkeypatch):
    from plora.experiments import cells

    def no_model(*args, **kwargs):
        raise AssertionError("a cell was measured before the bad option was refused")

    monkeypatch.setattr(cells, "CellRunner", no_model)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--results-dir", "afile"], "--results-dir afile exists and is not a folder"),
        (["--results-dir", "/dev/null"], "--results-dir /dev/null exists and is not a folder"),
        (["--results-dir", "/proc/x"], "--results-dir /proc/x: cannot write there"),
        (["--work-dir", "afile"], "--work-dir afile exists and is not a folder"),
        (["--results-dir", "res"], "value_add.md there is not a regular file"),
        (["--seeds", "-1"], "seeds must be in [0, 2**32), got [-1]"),
        (["--ranks", "99999"], "ranks must be in [1, 1024], got [99999]"),
        (["--ranks", "4,4"], "ranks repeat: [4, 4]"),
        (["--seeds", "41,41"], "seeds repeat: [41, 41]"),
        (["--schemes", "all,all"], "schemes repeat"),
        (["--epochs", "inf"], "epochs must be a finite number > 0, got inf"),
        (["--lr", "inf"], "learning rate must be a finite number > 0, got inf"),
    ],
)
def test_value_add_refuses_bad_outputs_and_options_before_any_cell(tmp_path, monkeypatch, capsys, options, message):
    monkeypatch.chdir(tmp_path)
    _no_cells(monkeypatch)
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "res" / "value_add.md").mkdir(parents=True)
    code, err = _value_add_cli(capsys, *options)
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("error: "), err
    assert (tmp_path / "afile").read_text() == "mine"


def _fifo(path: Path) -> None:
    import os

    os.mkfifo(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (_fifo, "value_add.jsonl there is not a regular file"),
        (lambda p: p.mkdir(), "value_add.jsonl there is not a regular file"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00junk\n"), "not UTF-8 text"),
        (lambda p: p.write_text('{"key": "a"}\n[1, 2]\n'), "value_add.jsonl line 2: not a value-add record"),
        (lambda p: p.write_text('{"key": "a"}\n{nope\n{"key": "b"}\n'), "value_add.jsonl line 2: not JSON"),
    ],
    ids=["fifo", "folder", "binary", "not-an-object", "bad-line"],
)
def test_value_add_refuses_records_it_cannot_resume_from(tmp_path, monkeypatch, capsys, make, message):
    monkeypatch.chdir(tmp_path)
    _no_cells(monkeypatch)
    (tmp_path / "res").mkdir()
    make(tmp_path / "res" / "value_add.jsonl")
    code, err = _value_add_cli(capsys, "--results-dir", "res")
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_a_torn_last_record_is_redone_not_refused(tmp_path):
    from plora.errors import PloraError
    from plora.experiments.value_add import _read_records

    path = tmp_path / "value_add.jsonl"
    path.write_text('{"key": "a", "fingerprint": "f"}\n{"key": "b", "finger')  # a run killed mid-write
    assert [r["key"] for r in _read_records(path)] == ["a"]
    fifo = tmp_path / "fifo.jsonl"
    _fifo(fifo)
    with pytest.raises(PloraError, match="fifo.jsonl: not a regular file"):  # never blocks on the open
        _read_records(fifo)
