"""Crafted plasmids for the trust-chain tests: real safetensors files written by plora.plasmid.write_plasmid.

Shapes follow plora-tiny (GPT-2, 128 wide, 4 layers): attn.c_attn maps 128 -> 384, attn.c_proj 128 -> 128,
mlp.c_fc 128 -> 512, mlp.c_proj 512 -> 128. A is (r, in), B is (out, r), as PEFT stores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from plora.manifest import now_utc
from plora.plasmid import write_plasmid

DIGEST = "ab" * 32  # the base weights digest the crafted plasmids and the test policies agree on
LAYERS = 4
# target suffix -> (in_features, out_features); the suffixes are plora.models.target_modules' names for GPT-2
SHAPES = {"attn.c_attn": (128, 384), "attn.c_proj": (128, 128), "mlp.c_fc": (128, 512), "mlp.c_proj": (512, 128)}


def module_name(layer: int, target: str) -> str:
    return f"transformer.h.{layer}.{target}"


def lora_tensors(r: int = 4, targets: tuple[str, ...] = ("attn.c_attn",), seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for layer in range(LAYERS):
        for t in targets:
            fan_in, fan_out = SHAPES[t]
            prefix = f"base_model.model.{module_name(layer, t)}"
            out[f"{prefix}.lora_A.weight"] = rng.normal(0, 0.05, (r, fan_in)).astype(np.float32)
            out[f"{prefix}.lora_B.weight"] = rng.normal(0, 0.01, (fan_out, r)).astype(np.float32)
    return out


def adapter_config(r: int = 4, alpha: float = 8.0, targets: tuple[str, ...] = ("attn.c_attn",)) -> dict[str, Any]:
    """What PEFT 0.21 writes for these settings (the fields the gate reads, plus the usual defaults)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "plora-tiny",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(targets),
        "bias": "none",
        "fan_in_fan_out": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
        "use_rslora": False,
    }


def make_plasmid(
    out: Path,
    *,
    r: int = 4,
    alpha: float = 8.0,
    targets: tuple[str, ...] = ("attn.c_attn",),
    tensors: dict[str, np.ndarray] | None = None,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    base_name: str = "plora-tiny",
    digest: str = DIGEST,
) -> Path:
    """Write a complete plasmid whose manifest agrees with its files (the caller then breaks one thing)."""
    write_plasmid(
        out,
        lora_tensors(r, targets, seed) if tensors is None else tensors,
        adapter_config(r, alpha, targets) if config is None else config,
        plasmid_id=out.name,
        domain="legal",
        created_at=now_utc(),
        base_model={"name": base_name, "digest": digest},
        lora={"r": r, "alpha": alpha, "target_set": "custom", "targets": list(targets)},
        training={"seed": seed, "samples": 64, "epochs": 1.0, "dataset": "builtin:legal"},
    )
    return out


_KEYS: dict[str, Path] = {}


def session_keys(tmp_path_factory: Any) -> dict[str, Path]:
    """Real keys, generated once per test process (RSA-3072 keygen is ~0.5 s).

    ``trusted/`` holds alice (RSA), bob (Ed25519) and dave (ECDSA P-256, the key model-signing can use), private
    and public side by side as ``plora keygen`` writes them; ``outsider/`` holds carol (Ed25519) and erin (ECDSA
    P-256), whom no test trusts.
    """
    if not _KEYS:
        from plora.signer import generate_keypair

        root = tmp_path_factory.mktemp("keys")
        for folder, name, algo in [("trusted", "alice", "rsa"), ("trusted", "bob", "ed25519"),
                                   ("trusted", "dave", "ecdsa-p256"), ("outsider", "carol", "ed25519"),
                                   ("outsider", "erin", "ecdsa-p256")]:  # fmt: skip
            generate_keypair(algo, root / folder / name)
            _KEYS[name] = root / folder / name
        _KEYS["trusted"] = root / "trusted"
        _KEYS["outsider"] = root / "outsider"
    return _KEYS


def legacy_sign(folder: Path, key_path: Path) -> None:
    """Sign a plasmid the OLD way (before DSSE envelopes), as plasmids made before the change carry it: a signature
    over the canonical manifest bytes, without payload type, stored in plora.yml's ``signatures`` list."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding

    from plora.manifest import Signature, canonical_bytes, read_manifest, write_manifest
    from plora.signer import fingerprint, load_private_key

    key = load_private_key(key_path)
    m = read_manifest(folder)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw, algo = key.sign(canonical_bytes(m)), "ed25519"
    else:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        raw, algo = key.sign(canonical_bytes(m), pss, hashes.SHA256()), "rsa-pss-sha256"
    sig = Signature(algo=algo, key_fingerprint=fingerprint(key.public_key()), signature=base64.b64encode(raw).decode())
    write_manifest(folder, m.model_copy(update={"signatures": (*m.signatures, sig)}))
