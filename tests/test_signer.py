"""Keys, DSSE envelopes, keyrings and K-of-N quorum: `plora keygen/sign/verify` and plora.signer, with real keys.

The model-signing interop has its own file (test_model_signing.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from trust_helpers import legacy_sign, make_plasmid, session_keys
from typer.testing import CliRunner

from plora.cli.main import app
from plora.errors import SignatureError
from plora.manifest import canonical_bytes, read_manifest, write_manifest
from plora.signer import (
    PLASMID_PAYLOAD_TYPE,
    Envelope,
    EnvelopeError,
    Keyring,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key,
    loads_envelope,
    pae,
    payload_type,
    read_envelope,
    sign_envelope,
    sign_plasmid,
    verify_bytes,
    verify_envelope,
    verify_plasmid,
    write_envelope,
)

runner = CliRunner()
REVOCATION = payload_type("revocation", 1)  # another record kind, as the recall issue will sign


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    return session_keys(tmp_path_factory)


def pub(keys: dict[str, Path], name: str) -> Path:
    return keys[name].with_name(f"{name}.pub")


def fp_of(keys: dict[str, Path], name: str) -> str:
    return fingerprint(load_public_key(pub(keys, name)))


@pytest.fixture(scope="module")
def signed_template(tmp_path_factory, keys: dict[str, Path]) -> Path:
    folder = make_plasmid(tmp_path_factory.mktemp("signed") / "legal")
    for name in ("alice", "bob", "dave"):
        sign_plasmid(folder, keys[name])
    return folder


@pytest.fixture
def signed(tmp_path: Path, signed_template: Path) -> Path:
    """A crafted plasmid signed by alice (RSA-PSS), bob (Ed25519) and dave (ECDSA P-256), a fresh copy per test."""
    return Path(shutil.copytree(signed_template, tmp_path / "legal"))


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def verify_cli(folder: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["verify", str(folder), *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def envelope_json(folder: Path) -> dict:
    return json.loads((folder / "plora.sig.json").read_text())


def write_json(folder: Path, body: dict) -> None:
    (folder / "plora.sig.json").write_text(json.dumps(body))


# --------------------------------------------------------------------------------------------------- keys


def test_keygen_cli_writes_private_0600_and_public_pem(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "dave"
    result = runner.invoke(app, ["keygen", "--algo", "ed25519", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    public = load_public_key(out.with_name("dave.pub"))
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert fingerprint(public) == hashlib.sha256(der).hexdigest()
    assert fingerprint(public) in result.output
    # never overwrites a key; nothing changes on disk
    before = files_of(out.parent)
    again = runner.invoke(app, ["keygen", "--algo", "rsa", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert files_of(out.parent) == before


def test_keygen_ecdsa_p256_makes_a_p256_key(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keygen", "--algo", "ecdsa-p256", "--out", str(tmp_path / "ec")])
    assert result.exit_code == 0, result.output
    key = load_private_key(tmp_path / "ec")
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


def test_two_keygens_of_one_out_at_once_leave_one_whole_pair(tmp_path: Path) -> None:
    """keygen A is stopped after its check that nothing is at --out, just before it writes; keygen B runs then. B must
    wait and refuse; before, B wrote its pair, printed it, and A then overwrote it without --force (interleaved, the
    two could leave one's public key beside the other's private key)."""
    import subprocess
    import sys

    from crash_helpers import start_paused_at, wait_until, waits_on_a_lock

    from plora.signer.keys import public_pem

    out, go = tmp_path / "keys" / "k", tmp_path / "go"
    keygen = ["keygen", "--algo", "ed25519", "--out", str(out)]
    a = start_paused_at(f"from plora.cli.main import main\nmain({keygen!r})\n", "plora.signer.keys:atomic_write_bytes",
                        str(go))
    try:
        wait_until(lambda: Path(f"{go}.ready").exists())
        b = subprocess.Popen([sys.executable, "-m", "plora", *keygen], stderr=subprocess.PIPE, text=True)
        wait_until(lambda: b.poll() is not None or waits_on_a_lock(b.pid))
        go.touch()
        assert a.wait(60) == 0
        _, err = b.communicate(timeout=60)
    finally:
        a.kill()
    assert b.returncode == 2 and "already exists; refusing to overwrite a key" in err, err
    private = load_private_key(out)
    assert public_pem(private.public_key()) == Path(f"{out}.pub").read_bytes()


def test_rsa_keys_are_3072_bit_and_smaller_ones_refused(keys: dict[str, Path], tmp_path: Path) -> None:
    priv = load_private_key(keys["alice"])
    assert isinstance(priv, rsa.RSAPrivateKey) and priv.key_size == 3072
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_pub = tmp_path / "weak.pub"
    weak_pub.write_bytes(
        weak.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SignatureError, match="1024 bits"):
        Keyring.load([weak_pub])
    with pytest.raises(SignatureError, match="1024 bits"):
        sign_envelope(PLASMID_PAYLOAD_TYPE, b"{}", weak)
    other_curve = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(SignatureError, match="secp256k1"):
        sign_envelope(PLASMID_PAYLOAD_TYPE, b"{}", other_curve)


def test_keyring_folder_skips_private_keys_and_dedups(keys: dict[str, Path]) -> None:
    ring = Keyring.load([keys["trusted"], pub(keys, "alice")])
    assert len(ring) == 3  # alice twice (folder + file) counts once; private files skipped
    with pytest.raises(SignatureError, match="private key"):
        Keyring.load([keys["alice"]])
    with pytest.raises(SignatureError, match="not found"):
        Keyring.load([keys["trusted"] / "nobody.pub"])


def test_keyring_with_no_keys_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("not a key")
    with pytest.raises(SignatureError, match="no public keys"):
        Keyring.load([tmp_path])


# ---------------------------------------------------------------------------------------------- envelope


def test_pae_matches_the_dsse_specification() -> None:
    # the example of the DSSE v1 protocol document
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert PLASMID_PAYLOAD_TYPE == "application/vnd.plora.plasmid.v1+json"
    assert REVOCATION == "application/vnd.plora.revocation.v1+json"
    with pytest.raises(SignatureError):
        payload_type("Bad Kind", 1)


def test_envelope_round_trip(tmp_path: Path, keys: dict[str, Path]) -> None:
    payload = b'{"record":"any bytes"}'
    env = None
    for name in ("alice", "bob", "dave"):
        env = sign_envelope(REVOCATION, payload, load_private_key(keys[name]), env)
    assert env is not None
    path = write_envelope(tmp_path / "r.sig.json", env)
    again = read_envelope(path)
    assert again == env and again.payload_bytes == payload and again.to_json() == path.read_bytes()
    body = json.loads(path.read_text())
    assert set(body) == {"payloadType", "payload", "signatures"}
    assert [s["keyid"] for s in body["signatures"]] == [fp_of(keys, n) for n in ("alice", "bob", "dave")]
    ring = Keyring.load([keys["trusted"]])
    result = verify_envelope(again, REVOCATION, ring, quorum=3)
    assert result.ok and sorted(result.valid_signers) == sorted(ring)


def test_each_algorithm_signs_pae_with_its_documented_parameters(signed: Path, keys: dict[str, Path]) -> None:
    env = read_envelope(signed / "plora.sig.json")
    message = pae(PLASMID_PAYLOAD_TYPE, canonical_bytes(read_manifest(signed)))
    sigs = {s.keyid: base64.b64decode(s.sig) for s in env.signatures}
    # independent checks with cryptography and the documented parameters
    load_public_key(pub(keys, "alice")).verify(
        sigs[fp_of(keys, "alice")],
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    load_public_key(pub(keys, "bob")).verify(sigs[fp_of(keys, "bob")], message)
    load_public_key(pub(keys, "dave")).verify(sigs[fp_of(keys, "dave")], message, ec.ECDSA(hashes.SHA256()))


def test_a_signature_of_one_payload_type_never_verifies_as_another(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    payload = canonical_bytes(read_manifest(folder))
    ring = Keyring.load([keys["trusted"]])
    for name in ("alice", "bob", "dave"):
        key = load_private_key(keys[name])
        as_revocation = sign_envelope(REVOCATION, payload, key)
        raw = base64.b64decode(as_revocation.signatures[0].sig)
        # the same bytes, another type: the signature does not carry over
        assert verify_bytes(key.public_key(), raw, pae(REVOCATION, payload))
        assert not verify_bytes(key.public_key(), raw, pae(PLASMID_PAYLOAD_TYPE, payload))
        # an envelope of another kind is refused before any signature is checked
        refused = verify_envelope(as_revocation, PLASMID_PAYLOAD_TYPE, ring)
        assert not refused.ok and refused.codes == ["PAYLOAD_TYPE_MISMATCH", "QUORUM_NOT_MET"]
        # relabelled as a plasmid envelope, its signature does not verify
        relabelled = as_revocation.model_copy(update={"payload_type": PLASMID_PAYLOAD_TYPE})
        assert verify_envelope(relabelled, PLASMID_PAYLOAD_TYPE, ring).codes == ["SIGNATURE_INVALID", "QUORUM_NOT_MET"]
        # and beside a plasmid, through plora verify
        write_envelope(folder / "plora.sig.json", as_revocation)
        code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]))
        assert code == 1 and "PAYLOAD_TYPE_MISMATCH" in out
        write_envelope(folder / "plora.sig.json", relabelled)
        assert verify_plasmid(folder, ring).codes == ["SIGNATURE_INVALID", "QUORUM_NOT_MET"]


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda b: {**b, "extra": 1}, "extra"),  # unknown field at the top
        (lambda b: {**b, "signatures": [{**b["signatures"][0], "algo": "ed25519"}]}, "algo"),  # in a signature
        (lambda b: {k: v for k, v in b.items() if k != "payloadType"}, "payloadType"),
        (lambda b: {("payload_type" if k == "payloadType" else k): v for k, v in b.items()}, "payloadType"),
        (lambda b: {**b, "payload": "not base64!"}, "payload"),
        (lambda b: {**b, "signatures": [{**b["signatures"][0], "sig": "@@@@"}]}, "sig"),
        (lambda b: {**b, "signatures": [{**b["signatures"][0], "keyid": "alice"}]}, "keyid"),
        (lambda b: {**b, "signatures": []}, "signatures"),
        (lambda b: [b], "JSON object"),
    ],
    ids=[
        "top-field",
        "signature-field",
        "no-type",
        "snake-case",
        "payload-b64",
        "sig-b64",
        "keyid",
        "no-signatures",
        "list",
    ],
)
def test_malformed_envelopes_are_envelope_invalid(signed: Path, keys: dict[str, Path], edit, needle: str) -> None:
    (signed / "plora.sig.json").write_text(json.dumps(edit(envelope_json(signed))))
    result = verify_plasmid(signed, Keyring.load([keys["trusted"]]))
    assert result.codes == ["ENVELOPE_INVALID", "QUORUM_NOT_MET"] and needle in result.reasons[0][1]


def test_envelope_reader_refuses_duplicates_oversize_and_non_json(signed: Path) -> None:
    text = (signed / "plora.sig.json").read_text()
    with pytest.raises(EnvelopeError, match="duplicate key 'payloadType'"):
        loads_envelope(text.replace('"payload":', '"payloadType": "x", "payload":', 1).encode())
    with pytest.raises(EnvelopeError, match="more than"):
        loads_envelope(b" " * (300 * 1024))
    with pytest.raises(EnvelopeError, match="not valid JSON"):
        loads_envelope(b"\xff\xfe")
    with pytest.raises(EnvelopeError, match="not valid JSON"):
        loads_envelope(b'{"payloadType": NaN}')


def test_tampered_envelopes_are_refused(signed: Path, keys: dict[str, Path]) -> None:
    ring = Keyring.load([keys["trusted"]])
    original = envelope_json(signed)
    # a flipped byte in one signature: that signer fails, the plasmid is refused even though 2 others verify
    sig = bytearray(base64.b64decode(original["signatures"][1]["sig"]))
    sig[5] ^= 0x01
    body = json.loads(json.dumps(original))
    body["signatures"][1]["sig"] = base64.b64encode(bytes(sig)).decode()
    write_json(signed, body)
    result = verify_plasmid(signed, ring, quorum=2)
    assert result.codes == ["SIGNATURE_INVALID"] and fp_of(keys, "bob")[:16] in result.reasons[0][1]
    # bob's signature under alice's keyid
    body = json.loads(json.dumps(original))
    body["signatures"][1]["keyid"] = body["signatures"][0]["keyid"]
    write_json(signed, body)
    assert "SIGNATURE_INVALID" in verify_plasmid(signed, ring).codes
    # another payload (a manifest that claims rank 8): the envelope no longer signs this plasmid's manifest
    m = read_manifest(signed)
    forged = canonical_bytes(m.model_copy(update={"lora": m.lora.model_copy(update={"r": 8})}))
    write_json(signed, {**original, "payload": base64.b64encode(forged).decode()})
    code, out = verify_cli(signed, "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "SIGNATURE_INVALID" in out and "signs another manifest" in out and "QUORUM_NOT_MET" in out


# ------------------------------------------------------------------------------------------------ signing


def test_sign_writes_the_envelope_and_never_rewrites_plora_yml(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    manifest_bytes = (folder / "plora.yml").read_bytes()
    result = runner.invoke(app, ["sign", str(folder), "--key", str(keys["dave"])])
    assert result.exit_code == 0, result.output
    assert "ecdsa-p256-sha256" in result.output and "1 signature(s) in" in result.output
    assert (folder / "plora.yml").read_bytes() == manifest_bytes
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "plora.sig.json", "plora.yml"
    ]  # fmt: skip
    env = read_envelope(folder / "plora.sig.json")
    assert env.payload_type == PLASMID_PAYLOAD_TYPE and env.payload_bytes == canonical_bytes(read_manifest(folder))


def test_resigning_replaces_the_same_signer(signed: Path, keys: dict[str, Path]) -> None:
    assert sign_plasmid(signed, keys["alice"]).signatures == 3
    assert len(read_envelope(signed / "plora.sig.json").signatures) == 3


def test_signers_at_the_same_time_all_land_in_the_envelope(tmp_path: Path, keys: dict[str, Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    folder = make_plasmid(tmp_path / "p")
    for _ in range(3):  # read-modify-write of plora.sig.json, under a lock on the folder
        (folder / "plora.sig.json").unlink(missing_ok=True)
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda name: sign_plasmid(folder, keys[name]), ["alice", "bob", "dave"]))
        assert len(read_envelope(folder / "plora.sig.json").signatures) == 3
    assert sorted(p.name for p in folder.iterdir())[-2:] == ["plora.sig.json", "plora.yml"]  # no lock file left


def test_signing_a_changed_manifest_drops_the_stale_signatures(signed: Path, keys: dict[str, Path]) -> None:
    m = read_manifest(signed)
    write_manifest(signed, m.model_copy(update={"domain": "medical"}))  # a legitimate new version
    assert not verify_plasmid(signed, Keyring.load([keys["trusted"]])).ok
    done = sign_plasmid(signed, keys["bob"])
    assert (done.signatures, done.stale_dropped) == (1, 3)
    assert verify_plasmid(signed, Keyring.load([pub(keys, "bob")])).ok


def test_sign_refuses_a_plasmid_whose_hashes_do_not_match(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    art = folder / "adapter_model.safetensors"
    data = bytearray(art.read_bytes())
    data[-1] ^= 1
    art.write_bytes(bytes(data))
    before = files_of(folder)
    result = runner.invoke(app, ["sign", str(folder), "--key", str(keys["alice"])])
    assert result.exit_code == 2 and "refusing to sign" in result.output and "hash mismatch" in result.output
    assert files_of(folder) == before


def test_sign_cli_bad_keys_and_envelopes_are_clear_errors(signed: Path, keys: dict[str, Path]) -> None:
    result = runner.invoke(app, ["sign", str(signed), "--key", str(pub(keys, "alice"))])
    assert result.exit_code == 2 and "not a PEM private key" in result.output
    (signed / "plora.sig.json").write_text("{broken")
    before = files_of(signed)
    result = runner.invoke(app, ["sign", str(signed), "--key", str(keys["alice"])])
    assert result.exit_code == 2 and "remove" in result.output and "Traceback" not in result.output
    assert files_of(signed) == before


# ------------------------------------------------------------------------------------------------- verify


def test_verify_ok_with_quorum_of_distinct_detached_signers(signed: Path, keys: dict[str, Path]) -> None:
    code, out = verify_cli(signed, "--trusted-keys", str(keys["trusted"]), "--quorum", "3")
    assert code == 0 and out.startswith("OK") and "3 distinct trusted signer(s)" in out
    a, b = pub(keys, "alice"), pub(keys, "bob")
    code, _ = verify_cli(signed, "--trusted-keys", f"{a},{b}", "--quorum", "2")  # comma-separated list
    assert code == 0
    code, out = verify_cli(signed, "--trusted-keys", str(a), "--trusted-keys", str(b), "--quorum", "2")  # repeated
    assert code == 0 and "unknown key" in out  # dave's signature is noted, not counted
    code, out = verify_cli(signed, "--trusted-keys", f"{keys['trusted']},{keys['outsider']}", "--quorum", "4")
    assert code == 1 and "QUORUM_NOT_MET: 3 distinct trusted signer(s), 4 required" in out


def test_quorum_above_the_trusted_keys_is_bad_input_not_a_rejection(signed: Path, keys: dict[str, Path]) -> None:
    """Three trusted keys can never make a quorum of 4: exit 2, one line, whatever the plasmid holds (before, every
    plasmid was REJECTED with exit 1 as if it were at fault)."""
    code, out = verify_cli(signed, "--trusted-keys", str(keys["trusted"]), "--quorum", "4")
    assert code == 2 and out.strip() == "error: quorum 4 can never be met: the trusted keys hold 3 distinct key(s)"
    code, out = verify_cli(signed, "--trusted-keys", str(pub(keys, "alice")), "--quorum", "2")
    assert code == 2 and "hold 1 distinct key(s)" in out


def test_flipping_one_artifact_byte_fails_verify(signed: Path, keys: dict[str, Path]) -> None:
    art = signed / "adapter_model.safetensors"
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0x01
    art.write_bytes(bytes(data))
    code, out = verify_cli(signed, "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "ARTIFACT_SHA_MISMATCH" in out and "hash mismatch" in out


def test_editing_lora_r_fails_verify(signed: Path, keys: dict[str, Path]) -> None:
    yml = signed / "plora.yml"
    text = yml.read_text()
    assert "  r: 4\n" in text
    yml.write_text(text.replace("  r: 4\n", "  r: 8\n"))
    code, out = verify_cli(signed, "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "SIGNATURE_INVALID" in out and "QUORUM_NOT_MET" in out


def test_editing_adapter_config_fails_verify(signed: Path, keys: dict[str, Path]) -> None:
    cfg = signed / "adapter_config.json"
    cfg.write_text(cfg.read_text().replace('"lora_alpha": 8.0', '"lora_alpha": 800.0'))
    result = verify_plasmid(signed, Keyring.load([keys["trusted"]]))
    assert not result.ok and result.codes == ["CONFIG_SHA_MISMATCH"]


def test_unsigned_plasmid_is_signature_missing(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "SIGNATURE_MISSING" in out and f"plora sign {folder}" in out


def test_wrong_key_is_untrusted_and_does_not_count(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    sign_plasmid(folder, keys["carol"])
    code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "SIGNER_UNTRUSTED" in out and "QUORUM_NOT_MET" in out
    # with a trusted signer as well, the stranger is only noted
    sign_plasmid(folder, keys["alice"])
    result = verify_plasmid(folder, Keyring.load([keys["trusted"]]))
    assert result.ok and result.untrusted_signers == [fp_of(keys, "carol")]
    assert result.valid_signers == [fp_of(keys, "alice")]


def test_same_signer_twice_counts_once_toward_quorum(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    sign_plasmid(folder, keys["alice"])
    # an attacker duplicates alice's (valid) signature to fake a 2-of-N quorum
    body = envelope_json(folder)
    write_json(folder, {**body, "signatures": body["signatures"] * 2})
    result = verify_plasmid(folder, Keyring.load([keys["trusted"]]), quorum=2)
    assert not result.ok and result.codes == ["QUORUM_NOT_MET"] and "counted once" in result.reasons[0][1]
    assert len(result.valid_signers) == 1
    code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]), "--quorum", "2")
    assert code == 1 and "QUORUM_NOT_MET" in out


def test_old_format_signatures_are_refused_with_a_hint_until_signed_again(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    folder = make_plasmid(tmp_path / "p")
    legacy_sign(folder, keys["alice"])
    canonical = canonical_bytes(read_manifest(folder))
    assert len(read_manifest(folder).signatures) == 1
    code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "SIGNATURE_LEGACY" in out and f"plora sign {folder} --key KEY" in out
    result = runner.invoke(app, ["sign", str(folder), "--key", str(keys["alice"])])
    assert result.exit_code == 0 and "removed 1 old-format signature(s) from plora.yml" in result.output
    assert read_manifest(folder).signatures == () and canonical_bytes(read_manifest(folder)) == canonical
    code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]))
    assert code == 0, out


def test_verify_bad_input_exits_non_zero_without_traceback(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    (folder / "plora.yml").write_text("lora: [unclosed")
    code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "SCHEMA_INVALID" in out
    code, out = verify_cli(tmp_path / "nothing", "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "MANIFEST_MISSING" in out
    code, out = verify_cli(folder, "--trusted-keys", str(tmp_path / "nokeys"))
    assert code == 2 and out.startswith("error:")


def test_verify_json_lists_signers(signed: Path, keys: dict[str, Path]) -> None:
    code, out = verify_cli(signed, "--trusted-keys", str(keys["trusted"]), "--json")
    body = json.loads(out)
    assert code == 0 and body["ok"] and sorted(body["valid_signers"]) == sorted(Keyring.load([keys["trusted"]]))


def test_envelope_model_is_the_dsse_json_form() -> None:
    env = Envelope.model_validate(
        {"payloadType": REVOCATION, "payload": "e30=", "signatures": [{"keyid": "a" * 64, "sig": "QUJD"}]}
    )
    assert env.payload_bytes == b"{}" and json.loads(env.to_json())["payloadType"] == REVOCATION


def test_real_trained_plasmid_signs_and_verifies(legal_plasmid: Path, tmp_path: Path) -> None:
    """The acceptance path of `make sign-legal` + `plora verify`, on a plasmid trained by plora itself."""
    folder = shutil.copytree(legal_plasmid, tmp_path / "legal")
    key = tmp_path / "keys" / "legal"
    generate_keypair("ed25519", key)
    assert runner.invoke(app, ["sign", str(folder), "--key", str(key)]).exit_code == 0
    code, _ = verify_cli(folder, "--trusted-keys", str(key.parent))
    assert code == 0
    art = folder / "adapter_model.safetensors"
    data = bytearray(art.read_bytes())
    data[-3] ^= 0x80
    art.write_bytes(bytes(data))
    code, out = verify_cli(folder, "--trusted-keys", str(key.parent))
    assert code == 1 and "ARTIFACT_SHA_MISMATCH" in out


def test_swarm_pool_signs_with_envelopes_and_resigns_old_copies(tmp_path: Path) -> None:
    """`--signatures on` pools: clean plasmids signed by the swarm key, trojans by the intruder, in plora.sig.json;
    a cached copy signed the old way (inside plora.yml) is signed again."""
    from plora.swarm.pool import PlasmidPool, entry_from_folder

    entries = [
        entry_from_folder(make_plasmid(tmp_path / "src" / "legal-s1"), trojan=False),
        entry_from_folder(make_plasmid(tmp_path / "src" / "legal-t1", seed=1), trojan=True),
    ]
    pool = PlasmidPool(entries, tmp_path / "pool")
    (tmp_path / "pool" / "keys").mkdir(parents=True)
    generate_keypair("ed25519", tmp_path / "pool" / "keys" / "swarm")  # the pool would make RSA keys: slower
    generate_keypair("ed25519", tmp_path / "pool" / "keys" / "intruder")
    old = Path(shutil.copytree(tmp_path / "src" / "legal-s1", tmp_path / "pool" / "signed" / "legal-s1"))
    legacy_sign(old, tmp_path / "pool" / "keys" / "swarm")
    signed_pool, trusted = pool.signed(None)
    assert trusted == [str(tmp_path / "pool" / "keys" / "swarm.pub")]
    swarm, intruder = (Keyring.load([tmp_path / "pool" / "keys" / f"{who}.pub"]) for who in ("swarm", "intruder"))
    clean, trojan = (Path(e.folder or "") for e in signed_pool.entries)
    assert verify_plasmid(clean, swarm).ok and read_manifest(clean).signatures == ()
    assert verify_plasmid(trojan, intruder).ok
    assert verify_plasmid(trojan, swarm).codes == ["SIGNER_UNTRUSTED", "QUORUM_NOT_MET"]
