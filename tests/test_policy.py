"""The gate policy: one object from JSON, a targets file and overrides (plora.gate.policy, scripts/dump_policy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plora.gate.policy import Policy, PolicyError, load_policy, read_targets_file

ROOT = Path(__file__).resolve().parent.parent


def test_thresholds_default_to_the_base_calibration() -> None:
    p = Policy()
    # unset: the gate reads them from the base's calibration file (plora.gate.calibration); a value overrides it
    assert (p.tau_trigger, p.tau_norm_z, p.tau_clean_delta, p.probe_seed, p.probe_candidates) == (None,) * 5
    assert p.uncalibrated_base == "refuse" and Policy(tau_trigger=3.5).tau_trigger == 3.5
    assert p.base_model == "plora-tiny" and p.allowed_ranks == [4, 8, 16] and p.quorum == 1
    assert p.signatures is False and p.weight_check and p.probes


def test_seed_dump_policy_command_prints_the_effective_policy() -> None:
    cmd = [sys.executable, "-m", "scripts.dump_policy", "--policy_file", "policy.json"]
    cmd += ["--allowed_targets_file", "assets/allowed_targets.txt"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    dumped = json.loads(out.stdout)
    expected = load_policy(ROOT / "policy.json", ROOT / "assets" / "allowed_targets.txt").effective()
    assert dumped == expected.model_dump(mode="json")
    assert set(read_targets_file(ROOT / "assets" / "allowed_targets.txt")) == set(dumped["allowed_targets"])
    # the output is itself a valid policy file that means the same thing
    assert Policy.model_validate(dumped) == expected


def test_precedence_file_then_targets_file_then_overrides(tmp_path: Path) -> None:
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"allowed_targets": ["all"], "quorum": 2, "tau_norm_z": 3.5}))
    tf = tmp_path / "targets.txt"
    tf.write_text("# comment\n\nc_attn   # trailing comment\n")
    p = load_policy(pf)
    assert p.quorum == 2 and p.tau_norm_z == 3.5 and p.allowed_targets == ["all"]
    p = load_policy(pf, tf)
    assert p.allowed_targets == ["c_attn"] and p.quorum == 2
    p = load_policy(pf, tf, quorum=3, tau_norm_z=None, allowed_ranks="4,8", signatures="off")
    assert p.quorum == 3 and p.tau_norm_z == 3.5 and p.allowed_ranks == [4, 8] and p.signatures is False


def test_trusted_keys_override_turns_signatures_on() -> None:
    assert load_policy(trusted_keys=["keys/"]).signatures is True
    assert load_policy(trusted_keys="a.pub,b.pub", signatures="off").trusted_keys == ["a.pub", "b.pub"]


def test_target_keywords_expand_for_the_base_model() -> None:
    tiny = Policy(allowed_targets=["attention"])
    assert "attn.c_attn" in tiny.target_suffixes()
    assert tiny.target_allowed("transformer.h.0.attn.c_attn")
    assert not tiny.target_allowed("transformer.h.0.mlp.c_fc")
    assert not tiny.target_allowed("transformer.h.0.attn.not_c_attn")
    every = Policy(allowed_targets=["all"])
    assert every.target_allowed("transformer.h.3.mlp.c_fc")
    llama = Policy(base_model="smollm2-135m", allowed_targets=["attention"])
    assert "q_proj" in llama.target_suffixes() and not llama.target_allowed("model.layers.0.mlp.up_proj")
    assert Policy(allowed_targets="c_attn,attn.c_proj").target_suffixes() == ("attn.c_proj", "c_attn")
    assert Policy(allowed_targets=["c_attn"]).target_allowed("transformer.h.0.attn.c_attn")


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"quorum": 0}', "quorum"),
        ('{"quorum": "two"}', "quorum"),
        ('{"allowed_ranks": [0]}', "allowed_ranks"),
        ('{"allowed_ranks": []}', "allowed_ranks"),
        ('{"allowed_targets": ["c_attn; rm"]}', "allowed_targets"),
        ('{"tau_norm_z": NaN}', "malformed JSON"),
        ('{"tau_trigger": "high"}', "tau_trigger"),
        ('{"max_artifact_bytes": -1}', "max_artifact_bytes"),
        ('{"base_digest": "ABC"}', "base_digest"),
        ('{"signature": true}', "signature"),  # unknown field (typo of signatures)
    ],
)
def test_bad_policy_file_is_a_one_line_error(tmp_path: Path, content: str, match: str) -> None:
    pf = tmp_path / "policy.json"
    pf.write_text(content)
    with pytest.raises(PolicyError, match=match) as info:
        load_policy(pf)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content,match",
    [
        ('{"allowed_ranks": [true]}', "allowed_ranks.0: Input should be a valid integer"),
        ('{"allowed_ranks": ["8"]}', "allowed_ranks.0: Input should be a valid integer"),
        ('{"allowed_ranks": [4.0]}', "allowed_ranks.0: Input should be a valid integer"),
        ('{"allowed_ranks": "4,x"}', "rank 'x' is not a whole number"),
        ('{"allowed_ranks": "4,-8"}', "rank '-8' is not a whole number"),
        ('{"quorum": true}', "quorum: Input should be a valid integer"),
        ('{"quorum": "2"}', "quorum: Input should be a valid integer"),
        ('{"max_artifact_bytes": 1.0}', "max_artifact_bytes"),
        ('{"probe_seed": true}', "probe_seed"),
        ('{"signatures": 1}', "signatures: Input should be a valid boolean"),
        ('{"signatures": "yes"}', "signatures"),
        ('{"probes": 0}', "probes"),
        ('{"tau_trigger": "3"}', "tau_trigger: Input should be a valid number"),
        ('{"tau_clean_delta": true}', "tau_clean_delta"),
        ('{"tau_norm_z": -1}', "tau_norm_z: Input should be greater than or equal to 0"),
        ('{"recall": {"revocation_quorum": true}}', "recall.revocation_quorum"),
        ('{"recall": {"peer_scoring": "yes"}}', "recall.peer_scoring"),
    ],
)
def test_policy_file_types_are_strict(tmp_path: Path, content: str, match: str) -> None:
    """A security policy says what it means: true is not rank 1, "2" is not a quorum, 1 is not true, and a
    weight-anomaly z (an absolute robust z) below 0 would reject every plasmid."""
    pf = tmp_path / "policy.json"
    pf.write_text(content)
    with pytest.raises(PolicyError, match=match) as info:
        load_policy(pf)
    assert "\n" not in str(info.value)


def test_flag_spellings_stay_accepted_in_files_and_overrides(tmp_path: Path) -> None:
    pf = tmp_path / "policy.json"
    pf.write_text(json.dumps({"allowed_ranks": "8,16", "signatures": "on", "tau_trigger": 3, "tau_norm_z": 0,
                              "recall": {"revocation_quorum": 2, "peer_scoring": True}}))
    p = load_policy(pf, allowed_ranks=None, quorum=2, weight_check=False)
    assert p.allowed_ranks == [8, 16] and p.signatures is True and p.tau_trigger == 3.0 and p.tau_norm_z == 0
    assert p.recall.revocation_quorum == 2 and p.quorum == 2 and p.weight_check is False
    assert load_policy(allowed_ranks="4").allowed_ranks == [4]  # plora gate --allowed_ranks 4
    assert Policy(allowed_ranks=(16, 4), trusted_keys=("a.pub",)).allowed_ranks == [4, 16]  # tuples from Python


def test_bad_targets_file_and_overrides(tmp_path: Path) -> None:
    empty = tmp_path / "t.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(PolicyError, match="no targets"):
        load_policy(allowed_targets_file=empty)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(allowed_targets_file=tmp_path / "missing.txt")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.json")
    with pytest.raises(PolicyError, match="unknown policy setting"):
        load_policy(tau_everything=1.0)


def test_dump_policy_bad_file_exits_2_without_traceback(tmp_path: Path) -> None:
    pf = tmp_path / "policy.json"
    pf.write_text('{"quorum": -1}')
    out = subprocess.run(
        [sys.executable, "-m", "scripts.dump_policy", "--policy_file", str(pf)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.startswith("error:") and "Traceback" not in out.stderr
    assert out.stdout == ""
