"""Keys, signatures, keyrings and K-of-N quorum: `plora keygen/sign/verify` and plora.signer, with real keys."""

from __future__ import annotations

import base64
import hashlib
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from trust_helpers import make_plasmid, session_keys
from typer.testing import CliRunner

from plora.cli.main import app
from plora.errors import SignatureError
from plora.manifest import canonical_bytes, dumps_manifest, read_manifest
from plora.signer import (
    Keyring,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_manifest,
    sign_plasmid,
    signature_valid,
    verify_plasmid,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    return session_keys(tmp_path_factory)


@pytest.fixture(scope="module")
def signed_template(tmp_path_factory, keys: dict[str, Path]) -> Path:
    folder = make_plasmid(tmp_path_factory.mktemp("signed") / "legal")
    sign_plasmid(folder, keys["alice"])
    sign_plasmid(folder, keys["bob"])
    return folder


@pytest.fixture
def signed(tmp_path: Path, signed_template: Path) -> Path:
    """A crafted plasmid signed by alice (RSA-PSS) and bob (Ed25519), a fresh copy per test."""
    return Path(shutil.copytree(signed_template, tmp_path / "legal"))


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def verify_cli(folder: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["verify", str(folder), *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


# --------------------------------------------------------------------------------------------------- keys


def test_keygen_cli_writes_private_0600_and_public_pem(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "dave"
    result = runner.invoke(app, ["keygen", "--algo", "ed25519", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    pub = load_public_key(out.with_name("dave.pub"))
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert fingerprint(pub) == hashlib.sha256(der).hexdigest()
    assert fingerprint(pub) in result.output
    # never overwrites a key; nothing changes on disk
    before = files_of(out.parent)
    again = runner.invoke(app, ["keygen", "--algo", "rsa", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert files_of(out.parent) == before


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
    with pytest.raises(SignatureError):
        sign_manifest(read_manifest(make_plasmid(tmp_path / "p")), weak)


def test_keyring_folder_skips_private_keys_and_dedups(keys: dict[str, Path]) -> None:
    ring = Keyring.load([keys["trusted"], keys["alice"].with_name("alice.pub")])
    assert len(ring) == 2  # alice twice (folder + file) counts once; private files skipped
    with pytest.raises(SignatureError, match="private key"):
        Keyring.load([keys["alice"]])
    with pytest.raises(SignatureError, match="not found"):
        Keyring.load([keys["trusted"] / "nobody.pub"])


def test_keyring_with_no_keys_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("not a key")
    with pytest.raises(SignatureError, match="no public keys"):
        Keyring.load([tmp_path])


# ------------------------------------------------------------------------------------------------ signing


def test_rsa_pss_uses_sha256_mgf1_and_digest_length_salt(signed: Path, keys: dict[str, Path]) -> None:
    m = read_manifest(signed)
    alice_fp = fingerprint(load_public_key(keys["alice"].with_name("alice.pub")))
    sig = next(s for s in m.signatures if s.key_fingerprint == alice_fp)
    assert sig.algo == "rsa-pss-sha256"
    # an independent verification with the documented parameters: PSS, MGF1-SHA256, salt = 32 bytes
    load_public_key(keys["alice"].with_name("alice.pub")).verify(
        base64.b64decode(sig.signature),
        canonical_bytes(m),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_resigning_replaces_the_same_signer(signed: Path, keys: dict[str, Path]) -> None:
    sign_plasmid(signed, keys["alice"])
    assert len(read_manifest(signed).signatures) == 2


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


def test_sign_cli_with_a_public_key_is_a_clear_error(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    result = runner.invoke(app, ["sign", str(folder), "--key", str(keys["alice"].with_name("alice.pub"))])
    assert result.exit_code == 2 and "not a PEM private key" in result.output


# ------------------------------------------------------------------------------------------------- verify


def test_verify_ok_with_quorum_of_distinct_signers(signed: Path, keys: dict[str, Path]) -> None:
    code, out = verify_cli(signed, "--trusted-keys", str(keys["trusted"]), "--quorum", "2")
    assert code == 0 and out.startswith("OK") and "2 distinct trusted signer(s)" in out
    a, b = keys["alice"].with_name("alice.pub"), keys["bob"].with_name("bob.pub")
    code, _ = verify_cli(signed, "--trusted-keys", f"{a},{b}", "--quorum", "2")  # comma-separated list
    assert code == 0
    code, _ = verify_cli(signed, "--trusted-keys", str(a), "--trusted-keys", str(b), "--quorum", "2")  # repeated
    assert code == 0


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
    code, out = verify_cli(make_plasmid(tmp_path / "p"), "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "SIGNATURE_MISSING" in out


def test_unknown_signer_is_reported_and_does_not_count(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    sign_plasmid(folder, keys["carol"])
    code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "SIGNER_UNTRUSTED" in out and "QUORUM_NOT_MET" in out
    # with a trusted signer as well, the stranger is only noted
    sign_plasmid(folder, keys["alice"])
    result = verify_plasmid(folder, Keyring.load([keys["trusted"]]))
    assert result.ok and len(result.untrusted_signers) == 1 and len(result.valid_signers) == 1


def test_same_signer_twice_counts_once_toward_quorum(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    m = sign_plasmid(folder, keys["alice"])
    # an attacker duplicates alice's (valid) signature to fake a 2-of-N quorum
    doubled = m.model_copy(update={"signatures": m.signatures * 2})
    (folder / "plora.yml").write_text(dumps_manifest(doubled))
    result = verify_plasmid(folder, Keyring.load([keys["trusted"]]), quorum=2)
    assert not result.ok and result.codes == ["QUORUM_NOT_MET"] and "counted once" in result.reasons[0][1]
    assert len(result.valid_signers) == 1
    code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]), "--quorum", "2")
    assert code == 1 and "QUORUM_NOT_MET" in out


def test_forged_signatures_are_invalid(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    m = read_manifest(folder)
    by_bob = sign_manifest(m, load_private_key(keys["bob"])).signatures[0]
    alice_fp = fingerprint(load_public_key(keys["alice"].with_name("alice.pub")))
    ring = Keyring.load([keys["trusted"]])
    # bob's signature presented under alice's fingerprint, with either algorithm label
    for algo in ("ed25519", "rsa-pss-sha256"):
        forged = by_bob.model_copy(update={"key_fingerprint": alice_fp, "algo": algo})
        assert not signature_valid(m, forged, ring.keys[alice_fp])
        (folder / "plora.yml").write_text(dumps_manifest(m.with_signature(forged)))
        result = verify_plasmid(folder, ring)
        assert not result.ok and "SIGNATURE_INVALID" in result.codes


def test_verify_bad_input_exits_non_zero_without_traceback(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = make_plasmid(tmp_path / "p")
    (folder / "plora.yml").write_text("lora: [unclosed")
    code, out = verify_cli(folder, "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "SCHEMA_INVALID" in out
    code, out = verify_cli(tmp_path / "nothing", "--trusted-keys", str(keys["trusted"]))
    assert code == 1 and "MANIFEST_MISSING" in out
    code, out = verify_cli(folder, "--trusted-keys", str(tmp_path / "nokeys"))
    assert code == 2 and out.startswith("error:")


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
