"""OpenSSF model-signing interop, both ways, with the real `model_signing` library (1.1.1) and real EC keys.

plora -> model_signing: `plora sign --format oms` writes model.sig, and model_signing's own verifier (its library
and its CLI) accepts it. model_signing -> plora: a bundle made by model_signing's signer counts toward `plora verify`
and the gate, when a trusted EC key made it and it covers the plasmid's files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import model_signing  # noqa: F401 - pinned in requirements.txt: a missing install fails here, never skips
import pytest
from trust_helpers import DIGEST, make_plasmid, session_keys
from typer.testing import CliRunner

from plora.cli.main import app
from plora.gate import Policy, screen
from plora.signer import Keyring, fingerprint, load_public_key, sign_plasmid, verify_plasmid

runner = CliRunner()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    return session_keys(tmp_path_factory)


def pub(keys: dict[str, Path], name: str) -> Path:
    return keys[name].with_name(f"{name}.pub")


def ms_verify(folder: Path, public_key: Path) -> None:
    """model_signing's own verification, as its CLI does it (the signature file inside the folder is ignored)."""
    import model_signing.hashing
    import model_signing.verifying

    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).verify(folder, folder / "model.sig")


def ms_sign(folder: Path, private_key: Path) -> None:
    """model_signing's own signer, as `model_signing sign key FOLDER --signature FOLDER/model.sig` runs it."""
    import model_signing.hashing
    import model_signing.signing

    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).sign(folder, folder / "model.sig")


def gate_policy(keys: dict[str, Path], **extra: object) -> Policy:
    return Policy(base_digest=DIGEST, weight_check=False, probes=False, signatures=True,
                  trusted_keys=[str(keys["trusted"])], **extra)  # fmt: skip


def test_plora_oms_bundle_is_accepted_by_model_signing(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "legal")
    sign_plasmid(folder, keys["alice"])  # a DSSE envelope as well: model.sig leaves it out, so both stay valid
    result = runner.invoke(app, ["sign", str(folder), "--format", "oms", "--key", str(keys["dave"])])
    assert result.exit_code == 0, result.output
    assert "model.sig" in result.output
    bundle = json.loads((folder / "model.sig").read_text())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    ms_verify(folder, pub(keys, "dave"))
    # the README's command: model_signing's CLI
    cli = subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(folder), "--signature", str(folder / "model.sig"),
         "--public_key", str(pub(keys, "dave"))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0 and "Verification succeeded" in cli.stdout, cli.stdout + cli.stderr
    # model_signing itself refuses it once a byte of the artifact changes
    art = folder / "adapter_model.safetensors"
    data = bytearray(art.read_bytes())
    data[-2] ^= 0x01
    art.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        ms_verify(folder, pub(keys, "dave"))


def test_model_signing_bundle_counts_in_plora_verify_and_the_gate(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "legal")
    ms_sign(folder, keys["dave"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "model.sig", "plora.yml"
    ]  # fmt: skip
    dave = fingerprint(load_public_key(pub(keys, "dave")))
    result = verify_plasmid(folder, Keyring.load([keys["trusted"]]))
    assert result.ok and result.valid_signers == [dave], result.reasons
    code = runner.invoke(app, ["verify", str(folder), "--trusted-keys", str(pub(keys, "dave"))])
    assert code.exit_code == 0 and code.output.startswith("OK"), code.output
    verdict = screen(folder, gate_policy(keys))
    assert verdict.accepted, verdict.reasons
    signatures = next(c for c in verdict.checks if c.name == "signatures")
    assert signatures.details["valid_signers"] == [dave]


def test_quorum_counts_distinct_keys_across_both_formats(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "legal")
    sign_plasmid(folder, keys["alice"])
    sign_plasmid(folder, keys["dave"], format="oms")
    ring = Keyring.load([keys["trusted"]])
    assert verify_plasmid(folder, ring, quorum=2).ok
    sign_plasmid(folder, keys["dave"])  # dave in plora.sig.json too: still one signer
    result = verify_plasmid(folder, ring, quorum=3)
    assert result.codes == ["QUORUM_NOT_MET"] and "counted once" in result.reasons[0][1]
    assert screen(folder, gate_policy(keys, quorum=2)).accepted


def test_bundles_that_do_not_cover_the_plasmid_are_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    template = make_plasmid(tmp_path / "t" / "legal")
    ms_sign(template, keys["dave"])
    ring = Keyring.load([keys["trusted"]])

    def fresh(name: str) -> Path:
        return Path(shutil.copytree(template, tmp_path / name / "legal"))

    # a flipped artifact byte: model_signing's hash check fails, and plora's own
    tampered = fresh("tampered")
    art = tampered / "adapter_model.safetensors"
    data = bytearray(art.read_bytes())
    data[10] ^= 0x01
    art.write_bytes(bytes(data))
    assert verify_plasmid(tampered, ring).codes == ["ARTIFACT_SHA_MISMATCH", "SIGNATURE_INVALID", "QUORUM_NOT_MET"]
    # a file added after signing is not covered
    extra = fresh("extra")
    (extra / "notes.txt").write_text("added later")
    result = verify_plasmid(extra, ring)
    assert result.codes == ["SIGNATURE_INVALID", "QUORUM_NOT_MET"] and "notes.txt" in result.reasons[0][1]
    # plora.sig.json added after model.sig is allowed (it is checked on its own)
    later = fresh("later")
    sign_plasmid(later, keys["bob"])
    assert verify_plasmid(later, ring, quorum=2).ok
    # a bundle by an EC key outside the keyring
    stranger = make_plasmid(tmp_path / "stranger" / "legal")
    ms_sign(stranger, keys["erin"])
    result = verify_plasmid(stranger, ring)
    assert result.codes == ["SIGNER_UNTRUSTED", "QUORUM_NOT_MET"]
    assert screen(stranger, gate_policy(keys)).reason_codes == ["SIGNER_UNTRUSTED", "QUORUM_NOT_MET"]
    # a bundle that is not a bundle
    broken = fresh("broken")
    (broken / "model.sig").write_text('{"mediaType": "x"}')
    assert verify_plasmid(broken, ring).codes == ["ENVELOPE_INVALID", "QUORUM_NOT_MET"]


def test_oms_format_needs_an_ec_key(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "legal")
    for name in ("alice", "bob"):
        result = runner.invoke(app, ["sign", str(folder), "--format", "oms", "--key", str(keys[name])])
        assert result.exit_code == 2 and "needs an EC key" in result.output and "Traceback" not in result.output
    assert not (folder / "model.sig").exists()


def test_dsse_only_paths_never_import_model_signing(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "legal")
    sign_plasmid(folder, keys["bob"])
    code = (
        "import sys\n"
        "from plora.signer import Keyring, verify_plasmid\n"
        f"assert verify_plasmid({str(folder)!r}, Keyring.load([{str(keys['trusted'])!r}])).ok\n"
        "leaked = [m for m in sys.modules if m.split('.')[0] in ('model_signing', 'sigstore', 'torch', 'peft')]\n"
        "assert not leaked, leaked\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_second_key_never_silently_replaces_a_bundle(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "legal")
    sign_plasmid(folder, keys["dave"], format="oms")
    first = (folder / "model.sig").read_bytes()
    sign_plasmid(folder, keys["dave"], format="oms")  # the same key signs again: replaced, as a re-sign should be
    args = ["sign", str(folder), "--format", "oms", "--key", str(keys["erin"])]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "another key" in result.output and "--force" in result.output, result.output
    ring = Keyring.load([keys["trusted"]])
    assert verify_plasmid(folder, ring).ok  # dave's signature is still there
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert (folder / "model.sig").read_bytes() != first and verify_plasmid(folder, ring).codes[0] == "SIGNER_UNTRUSTED"


def test_a_revoked_key_is_found_in_model_sig_too(tmp_path: Path, keys: dict[str, Path]) -> None:
    from plora.recall import RecallStore, issue_revocation
    from plora.recall.record import signer_target

    in_bundle, in_envelope = make_plasmid(tmp_path / "a" / "legal"), make_plasmid(tmp_path / "b" / "legal")
    sign_plasmid(in_bundle, keys["dave"], format="oms")
    sign_plasmid(in_envelope, keys["dave"])
    store = RecallStore(tmp_path / "recall", revocation_keys=Keyring.load([pub(keys, "alice")]),
                        plasmid_keys=Keyring.load([keys["trusted"]]))
    env = issue_revocation(signer_target(pub(keys, "dave")), "dave's key leaked", keys["alice"], issuer="ops")
    assert store.receive(env.to_json()).ok
    for folder in (in_bundle, in_envelope):
        assert store.check(folder)[0].startswith("REVOKED: every plasmid signed by key"), folder


def test_dropping_model_sigs_key_hint_does_not_escape_a_signer_revocation(tmp_path: Path,
                                                                           keys: dict[str, Path]) -> None:
    """The hint is outside what model.sig signs: without it the bundle still verifies (with any trusted EC key), so
    it must still be linked to its signer."""
    from plora.recall import RecallStore, issue_revocation
    from plora.recall.record import signer_target

    folder = make_plasmid(tmp_path / "legal")
    sign_plasmid(folder, keys["dave"], format="oms")
    bundle = json.loads((folder / "model.sig").read_text())
    del bundle["verificationMaterial"]["publicKey"]["hint"]
    (folder / "model.sig").write_text(json.dumps(bundle))
    ring = Keyring.load([keys["trusted"]])
    assert verify_plasmid(folder, ring).ok  # still counts toward the quorum, as dave's
    store = RecallStore(tmp_path / "recall", revocation_keys=Keyring.load([pub(keys, "alice")]), plasmid_keys=ring)
    assert store.check(folder) == []
    env = issue_revocation(signer_target(pub(keys, "dave")), "dave's key leaked", keys["alice"], issuer="ops")
    assert store.receive(env.to_json()).ok
    assert store.check(folder)[0].startswith("REVOKED: every plasmid signed by key"), store.check(folder)
