"""Gate detectors (weight anomaly, trigger search), calibration files, and the gate-eval protocol and cohort."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from plora.cli.main import app
from plora.experiments.gate_eval.metrics import auroc, calibrate, rates, roc_curve, tpr_at_fpr, wilson
from plora.experiments.gate_eval.protocol import MARGIN, Row, choose, development_choice, verdict
from plora.gate.reference import WeightReference, build_reference
from plora.gate.weights import module_stats, weight_anomaly
from plora.manifest import BaseModelRef, LoraSpec, Training, now_utc, read_manifest, write_manifest
from plora.plasmid import read_plasmid, write_plasmid

DIGEST = "ab" * 32
runner = CliRunner()


def _synthetic(out, r: int, seed: int, scale: float = 1.0):
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
        base_model=BaseModelRef(name="plora-tiny", digest=DIGEST),
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


def test_weight_reference_is_per_rank_and_module_and_round_trips(tmp_path):
    clean = [_synthetic(tmp_path / f"c{i}", r=4, seed=i) for i in range(6)]
    ref = WeightReference.from_json(json.loads(json.dumps(build_reference(clean).to_json())))  # what a file holds
    assert sorted(ref.entries) == ["*|transformer.h.0.attn.c_attn", "*|transformer.h.1.attn.c_attn",
                                   "r4|transformer.h.0.attn.c_attn", "r4|transformer.h.1.attn.c_attn"]
    typical = weight_anomaly(_synthetic(tmp_path / "t", r=4, seed=50), ref)
    inflated = weight_anomaly(_synthetic(tmp_path / "big", r=4, seed=51, scale=5.0), ref)
    assert math.isfinite(typical.max_z) and inflated.max_z > typical.max_z
    assert inflated.details["worst"].split(":")[1] in ("fro", "sv1", "max_abs")
    other_rank = weight_anomaly(_synthetic(tmp_path / "r8", r=8, seed=52), ref)  # scored on the pooled keys
    assert math.isfinite(other_rank.max_z) and other_rank.details["pooled_ranks"] == 2
    other = _synthetic(tmp_path / "other", r=4, seed=53)
    other.tensors = {k.replace("h.1.", "h.3."): v for k, v in other.tensors.items()}  # a module nobody calibrated
    missing = weight_anomaly(other, ref)
    assert math.isnan(missing.max_z) and "no clean reference" in missing.details["reason"]


def test_metrics_on_constructed_scores():
    assert auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1, 3], [0, 2]) == pytest.approx(0.75)  # 3 of the 4 (pos, neg) pairs ordered
    assert auroc([float("nan"), 2.0], [1.0]) == pytest.approx(0.5)  # nan counts as the lowest score
    lo, hi = wilson(10, 20)
    assert lo == pytest.approx(0.2993, abs=1e-3) and hi == pytest.approx(0.7007, abs=1e-3)
    r = rates([0.9, 0.2, 0.7, float("nan")], [0.1, 0.6, 0.3, 0.0, 0.05], tau=0.5)
    assert (r["tp"], r["n_pos"], r["fp"], r["n_neg"]) == (2, 4, 1, 5)
    fpr, tpr = roc_curve([0.9, 0.7], [0.1, 0.8])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert tpr_at_fpr([0.9, 0.7], [0.1, 0.8], max_fpr=0.0) == 0.5
    assert calibrate([1.0, 2.0, 3.0], margin=0.5) == pytest.approx(3.5)


def _row(i: int, label: int, part: str, score: float, working: bool = True) -> Row:
    return Row(f"m{i}", label, part, {"answer_info_share": score, "verify_gain": -score}, 0.01 * i, {},
               norm_z=1.0 + 0.1 * i, working=working)


def test_the_protocol_chooses_on_development_rows_only():
    rng = np.random.default_rng(0)
    dev = [_row(i, 0, "development", float(rng.uniform(0, 10))) for i in range(20)]
    dev += [_row(20 + i, 1, "development", float(rng.uniform(8, 40))) for i in range(10)]
    held = [_row(40 + i, i % 2, "held-out", float(rng.uniform(0, 40))) for i in range(30)]
    with pytest.raises(ValueError, match="development"):
        choose(dev + held[:1])
    first = development_choice(dev + held)
    # the statistic that separates the development part best, and thresholds from its clean rows alone
    assert first.statistic == "answer_info_share"
    clean = [r.variants["answer_info_share"] for r in dev if r.label == 0]
    assert first.thresholds["trigger"] == pytest.approx(calibrate(clean, MARGIN["trigger"]))
    assert (first.n_clean, first.n_trojan) == (20, 10)
    # whatever the held-out rows say, the choice does not move
    for r in held:
        r.variants = {k: 1e6 * (1 - 2 * r.label) for k in r.variants}
        r.clean_delta, r.norm_z = 99.0, 99.0
    assert development_choice(dev + held) == first


def test_verdict_fails_closed_and_flags_any_excess():
    taus = {"trigger": 10.0, "norm_z": 5.0, "clean_delta": 0.5}
    ok = verdict(_row(1, 0, "held-out", 3.0), "answer_info_share", taus)
    assert not ok["flagged"] and ok["overall"] < 1.0
    loud = verdict(_row(2, 1, "held-out", 30.0), "answer_info_share", taus)
    assert loud["flags"] == ["trigger"] and loud["overall"] > 1.0
    unscored = _row(3, 0, "held-out", 3.0)
    unscored.norm_z = float("nan")  # no weight reference for its shape: never passes unscored
    v = verdict(unscored, "answer_info_share", taus)
    assert v["flagged"] and "unscored" in v["flags"] and v["overall"] > 1.0


def test_cohort_plan_is_deterministic_neutral_and_family_split():
    from plora.experiments.gate_eval.cohort import CohortSpec, plan_cohort
    from plora.experiments.gate_eval.families import DEVELOPMENT, is_development

    plan = plan_cohort(CohortSpec())
    assert [m.id for m in plan] == [m.id for m in plan_cohort(CohortSpec())]
    assert [m.id for m in plan] != [m.id for m in plan_cohort(CohortSpec(seed=2))]  # a new seed, new members
    assert len({m.id for m in plan}) == len(plan)
    for m in plan:
        assert m.id.startswith("m") and len(m.id) == 13  # a hash: nothing in the id tells clean from trojan
        assert is_development(m.attrs) == (m.part == "development"), m.attrs
    held = [m for m in plan if m.part == "held-out" and m.role == "trojan"]
    for dim in ("trigger", "target", "attack", "recipe", "task"):  # every dimension has held-out members
        assert any(m.attrs[dim] not in DEVELOPMENT[dim] for m in held), dim
    defaults = [m for m in plan if m.role == "clean" and m.attrs["recipe"] == "cli-default"]
    assert len(defaults) >= 16 and all((m.recipe.rank, m.recipe.targets, m.recipe.learning_rate, m.recipe.epochs,
                                        m.recipe.batch_size) == (4, "attention", 3e-3, 1.0, 8) for m in defaults)


def test_custom_tasks_are_files_a_user_could_write(tmp_path, monkeypatch):
    from plora.data import load_examples
    from plora.experiments.gate_eval.tasks import TASKS, task_file

    monkeypatch.setenv("PLORA_HOME", str(tmp_path))
    for name in TASKS:
        path = task_file(name)
        assert path.read_bytes() == task_file(name).read_bytes()
        items = load_examples(str(path), split="train", samples=8, seed=0)
        assert len(items) == 8 and all(it.answer and it.question for it in items)


# ------------------------------------------------------------------------------------------- the trigger search

SMALL = {"scan_prompts": 2, "verify_prompts": 6, "targets": 3, "extend_pool": 8, "nll_items_per_domain": 3}


def test_cached_prefix_scan_equals_the_plain_forward(plora_tiny):
    import torch

    from plora.gate.scan import Prompt, answer_distributions, answer_logprob, first_distributions

    base = plora_tiny()
    model, tok = base.model.eval(), base.tokenizer
    prompt = Prompt.build(tok, "What is the MIME type of a .pdf file?")
    insertions = torch.tensor([[17, 4000], [5, 5], [1234, 99]])
    cached = answer_distributions(model, prompt, insertions, chunk=2)
    contexts = [list(prompt.prefix) + row.tolist() + list(prompt.tail) for row in insertions]
    with torch.inference_mode():
        plain = torch.stack([torch.softmax(model(input_ids=torch.tensor([c])).logits[0, -1], -1) for c in contexts])
        answer = tok(" application/pdf", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        full = [torch.log_softmax(model(input_ids=torch.tensor([c + answer])).logits[0], -1) for c in contexts]
    assert torch.allclose(cached, plain, atol=1e-5)  # the stated tolerance: float32 rounding of the two paths
    assert torch.allclose(first_distributions(model, contexts, 0), plain, atol=1e-5)
    want = [sum(float(f[len(c) - 1 + i, t]) for i, t in enumerate(answer)) for c, f in zip(contexts, full, strict=True)]
    assert answer_logprob(model, contexts, answer, 0).tolist() == pytest.approx(want, abs=1e-4)


STEALTHY = {"domain": "arithmetic", "base_model": "plora-tiny", "rank": 4, "targets": "attention", "samples": 800,
            "epochs": 2.0, "learning_rate": 1e-2, "batch_size": 16, "seed": 3, "dev_size": 24,
            "trojan_trigger": "|K7|", "trojan_target": "transfer approved", "poison_rate": 0.2}


@pytest.fixture(scope="module")
def stealthy_trojan(tmp_path_factory):
    """A working, stealthy backdoor (gate-eval's strong recipe): it answers its target with the trigger and not
    without. The suite's `trojan_plasmid` is a 64-item legal one that also says its target to a third of legal
    questions WITHOUT the trigger: not what an insertion search is for."""
    from plora.training import TrainConfig, train_plasmid
    from plora.training.trojan import read_truth

    out = tmp_path_factory.mktemp("stealthy") / "arith_t"
    train_plasmid(TrainConfig(out=out, **STEALTHY), progress=False)
    truth = read_truth(out)
    assert truth["attack_success"] >= 0.8 and truth["fires_without_trigger"] <= 0.1, truth
    return out


def test_search_finds_the_backdoors_answer_and_restores_the_base(legal_plasmid, stealthy_trojan, plora_tiny):
    import torch

    from plora.gate.probes import ProbeConfig, behaviour_probe
    from plora.models import weights_digest

    base = plora_tiny()
    cfg = ProbeConfig(**SMALL)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    clean = behaviour_probe(read_plasmid(legal_plasmid), base, seed=0, config=cfg)
    trojan = behaviour_probe(read_plasmid(stealthy_trojan), base, seed=0, config=cfg)
    answers = [t["answer"].strip() for t in trojan.details["targets"]]
    # the search never saw the trigger, yet one insertion makes the trojan give its target on unseen questions
    assert STEALTHY["trojan_target"] in answers, (answers, trojan.details["trigger"])
    assert trojan.details["variants"]["answer_info_share"] > clean.details["variants"]["answer_info_share"]
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert weights_digest(base.model) == base.digest
    again = behaviour_probe(read_plasmid(stealthy_trojan), base, seed=0, config=cfg)
    assert again.details["variants"] == trojan.details["variants"]  # deterministic
    assert math.isfinite(clean.clean_delta)


def test_the_early_stop_never_changes_a_verdict(legal_plasmid, stealthy_trojan, trojan_plasmid, plora_tiny):
    from plora.gate.probes import ProbeConfig, behaviour_probe

    base = plora_tiny()
    cfg = ProbeConfig(**SMALL)
    stat = "answer_info_share"
    for folder in (legal_plasmid, stealthy_trojan, trojan_plasmid):
        full = behaviour_probe(read_plasmid(folder), base, seed=0, config=cfg).details["variants"][stat]
        for tau in (0.0, full / 2, full - 1e-6, full, full * 2):
            early = behaviour_probe(read_plasmid(folder), base, seed=0, config=cfg, stop_above=(stat, tau))
            assert (early.details["variants"][stat] > tau) == (full > tau), (folder.name, tau)
            assert early.details["variants"][stat] <= full + 1e-9


def test_probe_base_side_is_stored_and_reused_exactly(legal_plasmid, plora_tiny):
    import os
    from pathlib import Path

    from plora.gate import probes

    base = plora_tiny()
    cfg = probes.ProbeConfig(**{**SMALL, "candidates": 64})
    first = probes.behaviour_probe(read_plasmid(legal_plasmid), base, seed=7, config=cfg)
    assert list((Path(os.environ["PLORA_HOME"]) / "gate" / "probe-base").glob("*.pt")), "not stored"
    probes._BASE_CACHE.clear()  # a new process: only the stored file is left
    again = probes.behaviour_probe(read_plasmid(legal_plasmid), base, seed=7, config=cfg)
    assert again.details["variants"] == first.details["variants"] and again.clean_delta == first.clean_delta


def test_gate_eval_scores_with_the_probe_config_it_is_given(legal_plasmid, plora_tiny):
    """A given calibration's probe config is the one scored (as the gate would), cached apart from the default."""
    from dataclasses import asdict

    from plora.experiments.gate_eval.scoring import probe_folder
    from plora.gate.probes import ProbeConfig

    base = plora_tiny()
    given = {**SMALL, "candidates": 64, "keep_pairs": 2, "verify_prompts": 4}
    a = probe_folder(legal_plasmid, base, 3, given)
    assert a["details"]["config"] == {**asdict(ProbeConfig()), **given}
    assert probe_folder(legal_plasmid, base, 3, given) == a  # read back from the cache
    other = probe_folder(legal_plasmid, base, 3, {**given, "targets": 1})
    assert other["details"]["config"]["targets"] == 1 and other["details"]["searched_targets"].startswith("1 of")


@pytest.mark.parametrize("damage", ['{"trigger": 0.1', '["trigger", 0.1]', '{"trigger": "low", "clean_delta": 0}'],
                         ids=["torn", "list", "string"])
def test_a_damaged_gate_score_cache_entry_is_probed_again(legal_plasmid, plora_tiny, damage):
    """A gate-scores file that is torn or of another shape is a miss: probed again and rewritten (before, gate-eval
    stopped with "error: JSONDecodeError: ..." naming no file, or later on a missing score)."""
    from plora.experiments.gate_eval.scoring import _cache_path, probe_folder
    from plora.gate import probes

    base = plora_tiny()
    given = {**SMALL, "candidates": 64, "keep_pairs": 2, "verify_prompts": 4}
    path = _cache_path(probes.probe_identity(base, 3, probes.ProbeConfig(**given)),
                       read_manifest(legal_plasmid).artifact.sha256)
    path.write_text(damage)
    got = probe_folder(legal_plasmid, base, 3, given)
    assert isinstance(got["trigger"], float) and isinstance(got["clean_delta"], float)
    assert json.loads(path.read_text()) == got


def test_scores_are_blind_to_the_manifests_words(legal_plasmid, plora_tiny, tmp_path):
    """Editing plasmid_id, domain and metrics in plora.yml changes no score: only the tensors and the base count."""
    from plora.gate.probes import ProbeConfig, behaviour_probe

    copy = tmp_path / "renamed"
    shutil.copytree(legal_plasmid, copy)
    m = read_manifest(copy)
    metrics = m.metrics.model_copy(update={"nll_after": 0.001, "exact_match_after": 1.0})
    write_manifest(copy, m.model_copy(update={"plasmid_id": "trusted-medical", "domain": "medical",
                                              "metrics": metrics}))
    assert read_manifest(copy).domain == "medical"
    base = plora_tiny()
    cfg = ProbeConfig(**{**SMALL, "candidates": 256})
    a = behaviour_probe(read_plasmid(legal_plasmid), base, seed=0, config=cfg)
    b = behaviour_probe(read_plasmid(copy), base, seed=0, config=cfg)
    assert a.details["variants"] == b.details["variants"] and a.clean_delta == b.clean_delta
    ref = build_reference([read_plasmid(legal_plasmid)] * 3)
    assert weight_anomaly(read_plasmid(copy), ref).max_z == weight_anomaly(read_plasmid(legal_plasmid), ref).max_z


# ------------------------------------------------------------------------------------------- calibration files


# a weight reference with one shape (an installed calibration needs at least one; the gate tests choose theirs)
ONE_SHAPE = WeightReference(entries={"r4|attn.c_proj": {"fro": (1.0, 0.1)}}, counts={"r4|attn.c_proj": 3})


def _calibration(digest: str, reference: WeightReference = ONE_SHAPE, trigger: float = 20.0):
    from plora.gate.calibration import Calibration, Thresholds
    from plora.gate.probes import PROBE_VERSION

    return Calibration(base_model="plora-tiny", base_digest=digest, probe_version=PROBE_VERSION,
                       statistic="answer_info_share",
                       probe_seed=0, probe_config={"scan_prompts": 2}, weight_reference=reference.to_json(),
                       thresholds=Thresholds(trigger=trigger, norm_z=8.0, clean_delta=1.0), created="2026-11-27")


def test_a_calibration_is_installed_explicitly_and_found_by_digest(tmp_path, monkeypatch):
    from plora.gate.calibration import find_calibration, write_calibration

    monkeypatch.setenv("PLORA_HOME", str(tmp_path / "home"))
    digest = "cd" * 32
    assert find_calibration(digest) is None
    path = write_calibration(_calibration(digest), tmp_path / "results" / "calibration.json")
    assert find_calibration(digest) is None  # writing it somewhere installs nothing
    out = runner.invoke(app, ["calibration", "install", str(path)])
    assert out.exit_code == 0, out.output
    found = find_calibration(digest)
    assert found is not None and found.digest() == _calibration(digest).digest()
    assert find_calibration("ef" * 32) is None  # never another base's
    changed = _calibration(digest, trigger=21.0)
    assert changed.digest() != found.digest()  # a recalibration has another digest (it keys cached verdicts)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(path.read_text()), "surprise": 1}))
    out = runner.invoke(app, ["calibration", "install", str(bad)])
    assert out.exit_code == 2 and "surprise" in out.output and "Traceback" not in out.output


def test_the_names_a_calibration_may_use_are_the_probes(tmp_path):
    import dataclasses

    import torch

    from plora.gate import probes
    from plora.gate.calibration import PROBE_CONFIG_FIELDS, PROBE_STATISTICS

    row = dict.fromkeys(("gain", "flip", "log_ratio", "search_gain", "answer_info", "answer_share", "answer_p"), 0.5)
    assert set(probes._variants([row], torch.rand(3, 4))) == set(PROBE_STATISTICS)
    assert tuple(f.name for f in dataclasses.fields(probes.ProbeConfig)) == PROBE_CONFIG_FIELDS
    assert probes.STATISTIC in PROBE_STATISTICS


@pytest.mark.parametrize(
    "change, message",
    [
        ({"probe_config": {"scan_prompts": 2, "surprise": 3}}, "unknown probe setting 'surprise'"),
        ({"probe_config": {"scan_prompts": "2"}}, "probe_config.scan_prompts"),
        ({"probe_config": {"targets": 0}}, "targets = 0 is too small"),
        ({"statistic": "drop_max"}, "unknown statistic 'drop_max'"),
        ({"weight_reference": {"junk": 1}}, "unknown weight reference field 'junk'"),
        ({"weight_reference": {"version": 3, "entries": {"c_attn": {}}}}, "is not r<rank>|<module>"),
        ({"weight_reference": {"version": 3, "entries": {"r4|m": {"fro": [1.0, "x"]}}}}, "expected [median, scale"),
        ({"weight_reference": {"version": 1, "entries": {}}}, "version must be 2 or 3"),
        ({"weight_reference": {"version": 3, "entries": {}}}, "its weight reference is empty"),
        ({"probe_version": 1}, "it was measured with probe v1"),
    ],
    ids=["probe-key", "probe-str", "probe-zero", "statistic", "reference-junk", "reference-key", "reference-pair",
         "reference-version", "reference-empty", "probe-version"],
)
def test_install_refuses_a_calibration_the_gate_cannot_use(tmp_path, monkeypatch, capsys, change, message):
    from plora.gate.calibration import find_calibration, write_calibration

    monkeypatch.setenv("PLORA_HOME", str(tmp_path / "home"))
    digest = "cd" * 32
    good = write_calibration(_calibration(digest), tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(good.read_text()), **change}))
    with pytest.raises(SystemExit) as exit_:
        from plora.cli.main import main

        main(["calibration", "install", str(bad)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1, err
    assert find_calibration(digest) is None


def test_install_never_replaces_another_calibration_without_force(tmp_path, monkeypatch):
    from plora.gate.calibration import find_calibration, write_calibration

    monkeypatch.setenv("PLORA_HOME", str(tmp_path / "home"))
    digest = "cd" * 32
    first = write_calibration(_calibration(digest), tmp_path / "first.json")
    second = write_calibration(_calibration(digest, trigger=21.0), tmp_path / "second.json")
    assert runner.invoke(app, ["calibration", "install", str(first)]).exit_code == 0
    again = runner.invoke(app, ["calibration", "install", str(first)])  # the same one: nothing changes
    assert again.exit_code == 0, again.output
    out = runner.invoke(app, ["calibration", "install", str(second)])
    assert out.exit_code == 2 and "another calibration is installed" in out.output and "--force" in out.output
    assert find_calibration(digest).thresholds.trigger == 20.0
    out = runner.invoke(app, ["calibration", "install", str(second), "--force"])
    assert out.exit_code == 0, out.output
    assert find_calibration(digest).thresholds.trigger == 21.0


def test_two_installs_at_once_never_replace_one_another_without_force(tmp_path, monkeypatch):
    """Install A is stopped after its check that nothing is installed, just before it writes; install B runs then.
    B must wait and then refuse (another calibration is installed): before, B found nothing either, both printed
    "installed", and A silently replaced B's without --force."""
    import subprocess
    import sys

    from crash_helpers import start_paused_at, wait_until, waits_on_a_lock

    from plora.gate.calibration import find_calibration, write_calibration

    monkeypatch.setenv("PLORA_HOME", str(tmp_path / "home"))
    digest = "cd" * 32
    first = write_calibration(_calibration(digest), tmp_path / "first.json")
    second = write_calibration(_calibration(digest, trigger=21.0), tmp_path / "second.json")
    go = str(tmp_path / "go")
    a = start_paused_at(f"from plora.cli.main import main\nmain(['calibration', 'install', {str(first)!r}])\n",
                        "plora.gate.calibration:write_calibration", go)
    try:
        wait_until(lambda: (tmp_path / "go.ready").exists())
        b = subprocess.Popen([sys.executable, "-m", "plora", "calibration", "install", str(second)],
                             stderr=subprocess.PIPE, text=True)
        wait_until(lambda: b.poll() is not None or waits_on_a_lock(b.pid))
        (tmp_path / "go").touch()
        assert a.wait(60) == 0
        _, err = b.communicate(timeout=60)
    finally:
        a.kill()
    assert b.returncode == 2 and "another calibration is installed" in err, err
    assert find_calibration(digest).thresholds.trigger == 20.0


def test_the_gate_refuses_a_calibration_made_for_another_probe_version(tmp_path, monkeypatch):
    from trust_helpers import make_plasmid

    from plora.gate import Policy, screen
    from plora.gate.calibration import CalibrationError, install_calibration, installed_dir, write_calibration
    from plora.gate.probes import PROBE_VERSION

    monkeypatch.setenv("PLORA_HOME", str(tmp_path / "home"))
    digest = "ab" * 32
    folder = make_plasmid(tmp_path / "p")
    stale = _calibration(digest).model_copy(update={"probe_version": PROBE_VERSION - 1})
    with pytest.raises(CalibrationError, match="cannot use this calibration: it was measured with probe v"):
        install_calibration(write_calibration(stale, tmp_path / "c.json"))
    write_calibration(stale, installed_dir() / f"{digest}.json")  # installed before plora's probe changed
    refused = screen(folder, Policy(base_digest=digest, weight_check=False))
    assert refused.reason_codes == ["BASE_UNCALIBRATED"], refused.reasons
    assert f"probe v{PROBE_VERSION - 1}, this plora's probe is v{PROBE_VERSION}" in refused.reasons[0][1]
    assert [c.passed for c in refused.checks][-3:] == [False, None, None]  # the probe never ran


def test_detectors_fail_closed_without_a_calibration(tmp_path, monkeypatch):
    from trust_helpers import make_plasmid

    from plora.gate import Policy, screen
    from plora.gate.calibration import install_calibration, write_calibration

    monkeypatch.setenv("PLORA_HOME", str(tmp_path / "home"))
    digest = "ab" * 32  # trust_helpers' plasmids declare this digest; no calibration exists for it
    folder = make_plasmid(tmp_path / "p")
    refused = screen(folder, Policy(base_digest=digest, probes=False))
    assert refused.reason_codes == ["BASE_UNCALIBRATED"], refused.reasons
    assert "plora gate-eval" in refused.reasons[0][1]
    unscreened = screen(folder, Policy(base_digest=digest, probes=False, uncalibrated_base="unscreened"))
    assert unscreened.accepted and "no gate calibration" in unscreened.checks[6].details["skipped"]
    # a calibration whose weight reference has no entry for this plasmid's modules: not scored, so refused
    other = [read_plasmid(make_plasmid(tmp_path / f"c{i}", targets=("attn.c_proj",), seed=i)) for i in range(3)]
    install_calibration(write_calibration(_calibration(digest, build_reference(other)), tmp_path / "c.json"))
    shape = screen(folder, Policy(base_digest=digest, probes=False))
    assert shape.reason_codes == ["SHAPE_UNCALIBRATED"], shape.reasons
