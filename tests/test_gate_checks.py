"""`plora gate`: every reason code from a real crafted plasmid, the stage order, and bad input (plora.gate.screen)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trust_helpers import DIGEST, adapter_config, legacy_sign, lora_tensors, make_plasmid, session_keys
from typer.testing import CliRunner

from plora.cli.main import app
from plora.gate import Policy, Reason, load_policy, screen
from plora.gate.reasons import DESCRIPTION, STAGE_OF, STAGES, markdown_table
from plora.manifest import canonical_bytes, read_manifest
from plora.signer import load_private_key, payload_type, sign_envelope, sign_plasmid, write_envelope

runner = CliRunner()
CHEAP = {"base_digest": DIGEST, "weight_check": False, "probes": False}  # the detector stages have their own tests


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    return session_keys(tmp_path_factory)


def snapshot(folder: Path) -> dict[str, Any]:
    """Every file beside and under the plasmid: bytes, or (size, mtime) for the sparse giant."""
    out: dict[str, Any] = {}
    for p in sorted(folder.parent.rglob("*")):
        if p.is_file() and p.parent.name != "policy":
            st = p.stat()
            out[str(p.relative_to(folder.parent))] = (
                p.read_bytes() if st.st_size < 1 << 24 else (st.st_size, st.st_mtime_ns)
            )
    return out


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def signed_policy(keys: dict[str, Path], quorum: int = 1) -> dict[str, Any]:
    return {**CHEAP, "signatures": True, "trusted_keys": [str(keys["trusted"])], "quorum": quorum}


# Each builder crafts a plasmid that breaks exactly one rule and returns (folder, policy settings).
Builder = Callable[[Path, dict[str, Path]], tuple[Path, dict[str, Any]]]


def _manifest_missing(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    (folder / "plora.yml").unlink()
    return folder, CHEAP


def _schema_invalid(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    with open(folder / "plora.yml", "a") as fh:
        fh.write("trust_me: true\n")
    return folder, CHEAP


def _unsafe_file(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return folder, CHEAP


def _base_mismatch(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    return make_plasmid(tmp / "p", digest="cd" * 32), CHEAP


def _too_large(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    os.truncate(folder / "adapter_model.safetensors", 3 * 1024**3)  # sparse: 3 GiB that the gate must not read
    return folder, CHEAP


def _unreadable(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    art = folder / "adapter_model.safetensors"
    os.truncate(art, art.stat().st_size // 2)
    return folder, CHEAP


def _rank_not_allowed(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    return make_plasmid(tmp / "p", r=2, alpha=4.0), CHEAP


def _targets_not_allowed(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    return make_plasmid(tmp / "p", targets=("mlp.c_fc",)), {**CHEAP, "allowed_targets": ["attention"]}


def _shape_mismatch(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    # the manifest and adapter_config say r=4 (allowed); the tensors are rank 8 (also allowed): they contradict
    return make_plasmid(tmp / "p", r=4, tensors=lora_tensors(r=8)), CHEAP


def _nonfinite(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    tensors = lora_tensors()
    key = sorted(tensors)[3]
    tensors[key][0, 0] = np.nan
    return make_plasmid(tmp / "p", tensors=tensors), CHEAP


def _artifact_sha(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    flip_last_byte(folder / "adapter_model.safetensors")  # still parses: the last byte is tensor data
    return folder, CHEAP


def _config_sha(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    cfg = folder / "adapter_config.json"
    cfg.write_text(cfg.read_text().replace('"lora_alpha": 8.0', '"lora_alpha": 64.0'))
    return folder, CHEAP


def _signature_missing(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    return make_plasmid(tmp / "p"), signed_policy(keys)


def _signature_invalid(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    sign_plasmid(folder, keys["bob"])
    yml = folder / "plora.yml"
    yml.write_text(yml.read_text().replace("samples: 64", "samples: 65"))  # any edit after signing
    return folder, signed_policy(keys)


def _signer_untrusted(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    sign_plasmid(folder, keys["carol"])
    return folder, signed_policy(keys)


def _quorum_not_met(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    sign_plasmid(folder, keys["bob"])
    envelope = json.loads((folder / "plora.sig.json").read_text())
    envelope["signatures"] *= 2
    (folder / "plora.sig.json").write_text(json.dumps(envelope))
    return folder, signed_policy(keys, quorum=2)  # bob twice is still one signer


def _signature_legacy(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    legacy_sign(folder, keys["bob"])  # signed before envelopes: inside plora.yml
    return folder, signed_policy(keys)


def _envelope_invalid(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    sign_plasmid(folder, keys["bob"])
    envelope = json.loads((folder / "plora.sig.json").read_text())
    (folder / "plora.sig.json").write_text(json.dumps({**envelope, "note": "trust me"}))  # an unknown field
    return folder, signed_policy(keys)


def _payload_type_mismatch(tmp: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    folder = make_plasmid(tmp / "p")
    # a trusted key's signature over these very bytes, but as another kind of record
    other = sign_envelope(payload_type("revocation", 1), canonical_bytes(read_manifest(folder)),
                          load_private_key(keys["bob"]))
    write_envelope(folder / "plora.sig.json", other)
    return folder, signed_policy(keys)


CASES: dict[Reason, Builder] = {
    Reason.MANIFEST_MISSING: _manifest_missing,
    Reason.SCHEMA_INVALID: _schema_invalid,
    Reason.UNSAFE_FILE: _unsafe_file,
    Reason.BASE_MODEL_MISMATCH: _base_mismatch,
    Reason.ARTIFACT_TOO_LARGE: _too_large,
    Reason.ARTIFACT_UNREADABLE: _unreadable,
    Reason.RANK_NOT_ALLOWED: _rank_not_allowed,
    Reason.TARGETS_NOT_ALLOWED: _targets_not_allowed,
    Reason.SHAPE_MISMATCH: _shape_mismatch,
    Reason.TENSOR_NONFINITE: _nonfinite,
    Reason.ARTIFACT_SHA_MISMATCH: _artifact_sha,
    Reason.CONFIG_SHA_MISMATCH: _config_sha,
    Reason.SIGNATURE_MISSING: _signature_missing,
    Reason.SIGNATURE_LEGACY: _signature_legacy,
    Reason.ENVELOPE_INVALID: _envelope_invalid,
    Reason.PAYLOAD_TYPE_MISMATCH: _payload_type_mismatch,
    Reason.SIGNATURE_INVALID: _signature_invalid,
    Reason.SIGNER_UNTRUSTED: _signer_untrusted,
    Reason.QUORUM_NOT_MET: _quorum_not_met,
}
# the detector stages and the calibration they need have their own tests (test_detectors.py)
DETECTOR_CODES = {Reason.WEIGHT_ANOMALY, Reason.TRIGGER_SUSPECT, Reason.CLEAN_DEGRADED, Reason.BASE_UNCALIBRATED,
                  Reason.SHAPE_UNCALIBRATED}


def test_every_reason_code_has_a_case_stage_and_description() -> None:
    assert set(CASES) | DETECTOR_CODES == set(Reason)
    assert set(STAGE_OF) == set(DESCRIPTION) == set(Reason)
    assert set(STAGE_OF.values()) <= set(STAGES)
    assert markdown_table().count("\n") == len(Reason) + 1


@pytest.mark.parametrize("code", list(CASES), ids=[c.value for c in CASES])
def test_gate_refuses_with_the_reason(code: Reason, tmp_path: Path, keys: dict[str, Path]) -> None:
    folder, settings = CASES[code](tmp_path, keys)
    before = snapshot(folder)
    result = screen(folder, Policy(**settings))
    assert snapshot(folder) == before
    assert not result.accepted
    assert code.value in result.reason_codes, result.reasons
    failed = [c for c in result.checks if c.passed is False]
    assert [c.name for c in failed] == [STAGE_OF[code]]  # the stage that owns the code, and only it
    assert [c.name for c in result.checks] == list(STAGES)
    # the same through the CLI: exit 1, the code printed, no traceback, nothing written
    policy_file = tmp_path / "policy" / "policy.json"  # outside the snapshot
    policy_file.parent.mkdir()
    policy_file.write_text(json.dumps(settings))
    cli = runner.invoke(app, ["gate", str(folder), "--policy_file", str(policy_file)])
    assert cli.exit_code == 1, cli.output
    assert code.value in cli.output and "Traceback" not in cli.output
    assert snapshot(folder) == before


def test_clean_plasmid_is_accepted_with_timings(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    sign_plasmid(folder, keys["alice"])
    sign_plasmid(folder, keys["bob"])
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(signed_policy(keys, quorum=2)))
    cli = runner.invoke(app, ["gate", str(folder), "--policy_file", str(policy_file), "--json"])
    assert cli.exit_code == 0, cli.output
    out = json.loads(cli.output)
    assert out["accepted"] and out["reasons"] == []
    checks = {c["name"]: c for c in out["checks"]}
    assert all(checks[s]["passed"] for s in ("schema", "base_model", "artifact", "tensors", "integrity", "signatures"))
    assert len(checks["signatures"]["details"]["valid_signers"]) == 2
    assert out["seconds"] >= sum(c["seconds"] for c in out["checks"]) > 0


def test_gate_stops_at_the_first_failing_stage(tmp_path: Path) -> None:
    folder = make_plasmid(tmp_path / "p", digest="cd" * 32, r=2, alpha=4.0)  # base AND rank wrong
    flip_last_byte(folder / "adapter_model.safetensors")  # and the hash
    result = screen(folder, Policy(**CHEAP))
    assert result.reason_codes == ["BASE_MODEL_MISMATCH"]
    assert [c.passed for c in result.checks][:2] == [True, False]
    assert all(c.details.get("skipped") == "an earlier stage failed" for c in result.checks[2:])


def test_a_stage_reports_all_its_reasons(tmp_path: Path) -> None:
    # declared r=4 (allowed) to pass a manifest-only check; the tensors are rank 32, and also hold NaN
    tensors = lora_tensors(r=32)
    next(iter(tensors.values()))[0, 0] = np.inf
    folder = make_plasmid(tmp_path / "p", r=4, tensors=tensors)
    codes = screen(folder, Policy(**CHEAP)).reason_codes
    assert set(codes) == {"SHAPE_MISMATCH", "RANK_NOT_ALLOWED", "TENSOR_NONFINITE"}


def _ab_disagree(tensors: dict[str, np.ndarray]) -> None:
    key = next(k for k in sorted(tensors) if k.endswith("lora_B.weight"))
    tensors[key] = tensors[key][:, :3].copy()


def _stray_key(tensors: dict[str, np.ndarray]) -> None:
    tensors["base_model.model.lm_head.weight"] = np.zeros((4, 4), np.float32)


def _missing_b(tensors: dict[str, np.ndarray]) -> None:
    del tensors[next(k for k in sorted(tensors) if k.endswith("lora_B.weight"))]


def _undeclared_module(tensors: dict[str, np.ndarray]) -> None:
    tensors.update(lora_tensors(targets=("attn.c_proj",)))


def _int_tensor(tensors: dict[str, np.ndarray]) -> None:
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].astype(np.int32)


@pytest.mark.parametrize("breaker", [_ab_disagree, _stray_key, _missing_b, _undeclared_module, _int_tensor])
def test_tensors_that_contradict_the_manifest(breaker: Callable[[dict[str, np.ndarray]], None], tmp_path: Path) -> None:
    tensors = lora_tensors()
    breaker(tensors)
    result = screen(make_plasmid(tmp_path / "p", tensors=tensors), Policy(**CHEAP, allowed_targets=["all"]))
    assert result.reason_codes == ["SHAPE_MISMATCH"], result.reasons


def test_declared_target_without_tensors(tmp_path: Path) -> None:
    targets = ("attn.c_attn", "attn.c_proj")
    folder = make_plasmid(tmp_path / "p", targets=targets, tensors=lora_tensors(targets=("attn.c_attn",)))
    result = screen(folder, Policy(**CHEAP))
    assert result.reason_codes == ["SHAPE_MISMATCH"] and "no tensors" in result.reasons[0][1]


def test_config_fields_must_agree_with_the_manifest(tmp_path: Path) -> None:
    # adapter_config hash matches the manifest (written together) but its rank and scaling differ
    for cfg in (
        adapter_config(r=8),
        {**adapter_config(), "use_rslora": True},
        {**adapter_config(), "peft_type": "IA3"},
    ):
        folder = make_plasmid(tmp_path / str(len(list(tmp_path.iterdir()))), config=cfg)
        assert screen(folder, Policy(**CHEAP)).reason_codes == ["CONFIG_SHA_MISMATCH"]


@pytest.mark.parametrize("setting", [
    {"init_lora_weights": "pissa"},  # PEFT rewrites the base weights when it loads the folder
    {"init_lora_weights": "olora"},
    {"exclude_modules": ["transformer.h.0.attn.c_attn"]},  # PEFT would drop factors the gate screened
    {"bias": "all"},
    {"auto_mapping": {"base_model_class": "X", "parent_library": "os"}},  # AutoPeftModel would import it
    {"a_setting_from_a_newer_peft": {"on": True}},  # unknown and set: refused until judged harmless
])  # fmt: skip
def test_adapter_config_is_plain_lora_or_refused(tmp_path: Path, setting: dict[str, Any]) -> None:
    folder = make_plasmid(tmp_path / "p", config={**adapter_config(), **setting})
    result = screen(folder, Policy(**CHEAP))
    assert result.reason_codes == ["CONFIG_SHA_MISMATCH"], result.reasons
    assert next(iter(setting)) in result.reasons[0][1]


def test_harmless_adapter_config_settings_pass(tmp_path: Path) -> None:
    harmless = {"lora_dropout": 0.1, "fan_in_fan_out": False, "init_lora_weights": "gaussian", "revision": "main",
                "auto_mapping": {"base_model_class": "GPT2LMHeadModel",
                                 "parent_library": "transformers.models.gpt2.modeling_gpt2"},
                "loftq_config": {}, "use_dora": False, "layers_pattern": None}  # fmt: skip
    result = screen(make_plasmid(tmp_path / "p", config={**adapter_config(), **harmless}), Policy(**CHEAP))
    assert result.accepted, result.reasons


def test_verify_refuses_what_the_gate_refuses_in_the_folder(tmp_path: Path, keys: dict[str, Path]) -> None:
    from plora.signer import Keyring, verify_plasmid

    ring = Keyring.load([keys["trusted"]])
    pickled = make_plasmid(tmp_path / "pickled")
    sign_plasmid(pickled, keys["alice"])
    (pickled / "adapter_model.bin").write_bytes(b"x")
    linked = make_plasmid(tmp_path / "linked")
    sign_plasmid(linked, keys["alice"])
    (tmp_path / "sig.json").write_bytes((linked / "plora.sig.json").read_bytes())
    (linked / "plora.sig.json").unlink()
    (linked / "plora.sig.json").symlink_to(tmp_path / "sig.json")
    for folder in (pickled, linked):
        assert verify_plasmid(folder, ring).codes == ["UNSAFE_FILE"], folder
        assert screen(folder, Policy(**CHEAP)).reason_codes == ["UNSAFE_FILE"], folder
        out = runner.invoke(app, ["verify", str(folder), "--trusted-keys", str(keys["trusted"])])
        assert out.exit_code == 1 and "UNSAFE_FILE" in out.output, out.output


def test_a_spare_adapter_model_beside_a_renamed_artifact_is_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    """The manifest may name any .safetensors artifact, but PEFT's from_pretrained loads adapter_model.safetensors
    whatever plora.yml says: a signed plasmid whose artifact is renamed and whose folder also holds an unsigned
    adapter_model.safetensors would pass every hash and signature while PEFT loads the unsigned file."""
    from plora.signer import Keyring, verify_plasmid

    folder = make_plasmid(tmp_path / "renamed")
    (folder / "adapter_model.safetensors").rename(folder / "weights.safetensors")
    yml = folder / "plora.yml"
    yml.write_text(yml.read_text().replace("filename: adapter_model.safetensors", "filename: weights.safetensors"))
    make_plasmid(tmp_path / "other", seed=7)
    shutil.copy(tmp_path / "other" / "adapter_model.safetensors", folder / "adapter_model.safetensors")
    assert runner.invoke(app, ["sign", str(folder), "--key", str(keys["alice"])]).exit_code != 0
    (folder / "adapter_model.safetensors").rename(tmp_path / "spare.safetensors")
    sign_plasmid(folder, keys["alice"])  # the renamed artifact alone: signed and accepted
    ring = Keyring.load([keys["trusted"]])
    assert verify_plasmid(folder, ring).ok and screen(folder, Policy(**CHEAP)).accepted
    (tmp_path / "spare.safetensors").rename(folder / "adapter_model.safetensors")  # planted after signing
    assert verify_plasmid(folder, ring).codes == ["UNSAFE_FILE"]
    result = screen(folder, Policy(**CHEAP))
    assert result.reason_codes == ["UNSAFE_FILE"] and "adapter_model.safetensors" in result.reasons[0][1]
    out = runner.invoke(app, ["verify", str(folder), "--trusted-keys", str(keys["trusted"])])
    assert out.exit_code == 1 and "UNSAFE_FILE" in out.output, out.output


def test_an_adapter_config_that_is_a_fifo_or_huge_is_refused_without_reading_it(tmp_path: Path,
                                                                               keys: dict[str, Path]) -> None:
    """A FIFO (a tar archive carries one) would block every reader forever and a sparse file of gigabytes would be
    read whole: the gate, plora verify and plora sign answer at once."""
    import threading

    from plora.signer import Keyring, verify_plasmid

    def within(seconds: float, fn: Callable[[], Any]) -> Any:
        box: dict[str, Any] = {}
        t = threading.Thread(target=lambda: box.update(out=fn()), daemon=True)
        t.start()
        t.join(seconds)
        assert not t.is_alive(), f"still reading after {seconds} s"
        return box["out"]

    fifo = make_plasmid(tmp_path / "fifo")
    sign_plasmid(fifo, keys["alice"])
    (fifo / "adapter_config.json").unlink()
    os.mkfifo(fifo / "adapter_config.json")
    huge = make_plasmid(tmp_path / "huge")
    sign_plasmid(huge, keys["alice"])
    os.truncate(huge / "adapter_config.json", 4 << 30)  # sparse: 4 GiB of zeros, nothing on disk
    ring = Keyring.load([keys["trusted"]])
    assert within(20, lambda: verify_plasmid(fifo, ring).codes) == ["UNSAFE_FILE"]
    assert within(20, lambda: screen(fifo, Policy(**CHEAP)).reason_codes) == ["UNSAFE_FILE"]
    assert within(20, lambda: verify_plasmid(huge, ring).codes) == ["CONFIG_SHA_MISMATCH"]
    assert within(20, lambda: screen(huge, Policy(**CHEAP)).reason_codes) == ["SCHEMA_INVALID"]
    for folder in (fifo, huge):
        out = within(20, lambda f=folder: runner.invoke(app, ["sign", str(f), "--key", str(keys["alice"])]))
        assert out.exit_code == 2 and "adapter_config.json" in out.output and "Traceback" not in out.output, out.output


def test_path_traversal_and_symlinks_are_refused(tmp_path: Path) -> None:
    folder = make_plasmid(tmp_path / "p")
    outside = tmp_path / "outside.safetensors"
    shutil.copy(folder / "adapter_model.safetensors", outside)
    yml = folder / "plora.yml"
    yml.write_text(yml.read_text().replace("filename: adapter_model.safetensors", "filename: ../outside.safetensors"))
    assert screen(folder, Policy(**CHEAP)).reason_codes == ["SCHEMA_INVALID"]
    folder2 = make_plasmid(tmp_path / "q")
    (folder2 / "adapter_model.safetensors").unlink()
    (folder2 / "adapter_model.safetensors").symlink_to(outside)
    assert screen(folder2, Policy(**CHEAP)).reason_codes == ["UNSAFE_FILE"]


def test_malformed_inputs_never_raise(tmp_path: Path) -> None:
    folder = make_plasmid(tmp_path / "p")
    for text in ("a: [", "- 1", "lora: {r: '4'}", "\x00\x01", ""):
        (folder / "plora.yml").write_text(text)
        assert screen(folder, Policy(**CHEAP)).reason_codes == ["SCHEMA_INVALID"]
    assert screen(tmp_path / "absent", Policy(**CHEAP)).reason_codes == ["MANIFEST_MISSING"]
    # a manifest padded past 32 KiB (parsing untrusted YAML costs ~1 s per 32 KB here) is refused unread
    good = make_plasmid(tmp_path / "padded")
    yml = good / "plora.yml"
    yml.write_text(yml.read_text() + "#" * 40_000 + "\n")
    result = screen(good, Policy(**CHEAP))
    assert result.reason_codes == ["SCHEMA_INVALID"] and "more than" in result.reasons[0][1]
    folder = make_plasmid(tmp_path / "q")
    (folder / "adapter_config.json").write_text("[1]")
    assert screen(folder, Policy(**CHEAP)).reason_codes == ["SCHEMA_INVALID"]
    folder = make_plasmid(tmp_path / "r")
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.safetensors").mkdir()  # a folder where the artifact should be
    assert screen(folder, Policy(**CHEAP)).reason_codes == ["ARTIFACT_UNREADABLE"]


def test_gate_cli_bad_input_exits_2(tmp_path: Path) -> None:
    folder = make_plasmid(tmp_path / "p")
    bad = tmp_path / "policy.json"
    bad.write_text('{"quorum": 0}')
    for args in (
        ["--policy_file", str(bad)],
        ["--policy_file", str(tmp_path / "missing.json")],
        ["--signatures", "maybe"],
        ["--signatures", "on", "--trusted-keys", str(tmp_path / "nokeys")],
    ):
        cli = runner.invoke(app, ["gate", str(folder), *args])
        assert cli.exit_code == 2, (args, cli.output)
        assert cli.output.startswith("error:") and "Traceback" not in cli.output


def test_gate_quorum_above_the_trusted_keys_is_bad_input(tmp_path: Path, keys: dict[str, Path]) -> None:
    """trusted/ holds 3 keys: a quorum of 4 can never be met, so it is a bad policy (exit 2, one line, no stage
    run), not a REJECTED plasmid (exit 1)."""
    folder = make_plasmid(tmp_path / "p")
    sign_plasmid(folder, keys["alice"])
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(signed_policy(keys, quorum=4)))
    cli = runner.invoke(app, ["gate", str(folder), "--policy_file", str(policy_file)])
    assert cli.exit_code == 2, cli.output
    assert cli.output.strip() == "error: quorum 4 can never be met: the trusted keys hold 3 distinct key(s)"
    with pytest.raises(Exception, match="quorum 2 can never be met"):
        screen(folder, Policy(**{**signed_policy(keys, quorum=2), "trusted_keys": [str(keys["alice"]) + ".pub"]}))


def test_cli_overrides_reach_the_policy(tmp_path: Path) -> None:
    folder = make_plasmid(tmp_path / "p", r=2, alpha=4.0)
    args = ["gate", str(folder), "--no-probes", "--no-weight-check", "--policy_file", str(tmp_path / "p.json")]
    (tmp_path / "p.json").write_text(json.dumps({"base_digest": DIGEST}))
    assert runner.invoke(app, args).exit_code == 1
    assert runner.invoke(app, [*args, "--allowed_ranks", "2,4"]).exit_code == 0


# ------------------------------------------------------------------------------------ detector stages


def _install(tmp_path: Path, reference: Any, digest: str = DIGEST, **thresholds: float) -> None:
    from plora.gate.calibration import Calibration, Thresholds, install_calibration, write_calibration
    from plora.gate.probes import PROBE_VERSION, STATISTIC

    taus = {"trigger": 1e9, "norm_z": 8.0, "clean_delta": 1e9, **thresholds}
    cal = Calibration(base_model="plora-tiny", base_digest=digest, probe_version=PROBE_VERSION, statistic=STATISTIC,
                      probe_seed=0, probe_config={"scan_prompts": 2, "verify_prompts": 6, "targets": 2,
                                                  "extend_pool": 6, "candidates": 128},
                      thresholds=Thresholds(**taus), weight_reference=reference.to_json(), created="2026-11-27")
    install_calibration(write_calibration(cal, tmp_path / "calibration.json"))


def test_weight_anomaly_against_a_clean_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plora.gate.reference import build_reference
    from plora.plasmid import read_plasmid

    monkeypatch.setenv("PLORA_HOME", str(tmp_path / "home"))  # a private calibration: other tests keep theirs
    clean = [read_plasmid(make_plasmid(tmp_path / f"clean{s}", seed=s)) for s in range(8)]
    _install(tmp_path, build_reference(clean))
    tensors = lora_tensors(seed=100)
    for k in tensors:
        if k.endswith("lora_B.weight"):
            tensors[k] *= 40.0  # a plasmid whose update is 40x larger than any clean one
    odd = screen(make_plasmid(tmp_path / "odd", tensors=tensors), Policy(base_digest=DIGEST, probes=False))
    assert odd.reason_codes == ["WEIGHT_ANOMALY"], odd.reasons
    assert odd.scores["norm_z"] is not None and odd.scores["norm_z"] > odd.checks[-2].details["tau_norm_z"]
    same = screen(make_plasmid(tmp_path / "same", seed=101), Policy(base_digest=DIGEST, probes=False))
    assert same.scores["norm_z"] is not None and same.scores["norm_z"] < odd.scores["norm_z"]


@pytest.fixture(scope="module")
def tiny_base(plora_tiny: Any) -> Any:
    return plora_tiny()


def test_probe_thresholds_decide_trigger_and_clean_codes(legal_plasmid: Path, tiny_base: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Real probes on a real trained plasmid; the thresholds are set around the scores the probes measured."""
    from plora.gate.reference import WeightReference

    monkeypatch.setenv("PLORA_HOME", str(tmp_path / "home"))
    base = tiny_base
    # the calibration's probe config: a cheap scan (and a weight reference the policy does not use)
    _install(tmp_path, WeightReference(entries={"r4|x": {"fro": (1.0, 0.1)}}, counts={"r4|x": 3}), digest=base.digest)
    policy = load_policy(weight_check=False)  # digest from the loaded base
    first = screen(legal_plasmid, policy, base=base)
    assert first.accepted, first.reasons
    trigger, delta = first.scores["trigger"], first.scores["clean_delta"]
    assert trigger is not None and delta is not None
    tight = policy.model_copy(update={"tau_trigger": trigger - 1e-3, "tau_clean_delta": delta - 1e-3})
    second = screen(legal_plasmid, tight, base=base)
    assert second.reason_codes == ["TRIGGER_SUSPECT", "CLEAN_DEGRADED"]
    assert second.scores == first.scores  # same seed, same base: same scores


def test_base_layer_shapes_from_the_loaded_base_and_from_its_config(tmp_path: Path, tiny_base: Any) -> None:
    from plora.gate.structure import base_module_shapes, config_module_shapes
    from plora.models import tiny_folder

    # the cheap path (config.json, no torch) agrees with the loaded model on every LoRA-able layer
    from_config = config_module_shapes(json.loads((tiny_folder() / "config.json").read_text()))
    from_model = base_module_shapes(tiny_base)
    assert from_config and {k: from_model[k] for k in from_config} == from_config
    policy = Policy(base_digest=DIGEST, weight_check=False, probes=False, allowed_targets=["all"])
    ok = make_plasmid(tmp_path / "ok", targets=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    for base in (tiny_base, None):
        result = screen(ok, policy, base=base)
        assert result.accepted and result.checks[3].details["base_shapes_from"] is not None
    tensors = lora_tensors()
    for k in list(tensors):
        if k.endswith("lora_B.weight"):
            tensors[k] = np.zeros((256, 4), np.float32)  # attn.c_attn maps 128 -> 384 in plora-tiny, not 256
    bad = make_plasmid(tmp_path / "bad", tensors=tensors)
    for base in (tiny_base, None):
        result = screen(bad, policy, base=base)
        assert result.reason_codes == ["SHAPE_MISMATCH"] and "base layer" in result.reasons[0][1]
