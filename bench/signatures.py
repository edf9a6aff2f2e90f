"""Signature cost: sign and verify per algorithm, the plasmid check the gate and fetch run, and model-signing bundles.

    python bench/signatures.py                        # 2,000 rounds per measurement
    python bench/signatures.py --rounds 500 --out results/bench_signatures.json

Rows (median and 95th percentile of ``--rounds`` timed calls, garbage collector paused as ``timeit`` does):

* ``sign``: :func:`plora.signer.sign_envelope` over a real manifest's canonical bytes (PAE included).
* ``verify 1 sig``: :func:`plora.signer.verify_envelope` of a one-signature envelope against a keyring of 3 keys.
* ``plasmid check, 3 sigs``: :func:`plora.signer.check_signatures` on a plasmid folder whose plora.sig.json holds
  RSA-PSS-3072, Ed25519 and ECDSA P-256 signatures (quorum 3): read and parse the envelope from disk, compare its
  payload with the canonical manifest, verify the three. Reported per signature too: the acceptance budget is
  5 ms per signature.
* ``model.sig``: the same check when the plasmid carries only an OpenSSF model-signing bundle (model_signing
  re-hashes the folder's files); the first one in a process also imports model_signing, measured on its own.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cli_args import Parser, positive_int
from machine_info import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def machine() -> dict[str, object]:
    import cryptography

    return {
        "cpu": cpu_model(""),
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "platform": platform.platform(),
    }


def timed(fn: Callable[[], object], rounds: int) -> dict[str, float]:
    fn()  # warm: caches, lazy imports
    samples = []
    gc.disable()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        gc.enable()
    samples.sort()
    return {"median_ms": statistics.median(samples), "p95_ms": samples[int(0.95 * (len(samples) - 1))]}


def import_ms() -> float:
    """What the first model.sig in a process costs on top: importing model_signing, in a fresh interpreter."""
    code = "import time; t = time.perf_counter(); import model_signing.verifying; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip()) * 1e3


def main() -> None:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=positive_int, default=2000, help="timed calls per measurement")
    ap.add_argument("--oms-rounds", type=positive_int, default=50, help="timed calls of the model.sig check")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    from trust_helpers import make_plasmid

    from plora.manifest import canonical_bytes, read_manifest
    from plora.signer import (
        PLASMID_PAYLOAD_TYPE,
        Keyring,
        check_signatures,
        generate_keypair,
        load_private_key,
        sign_envelope,
        sign_plasmid,
        verify_envelope,
    )

    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_average_1m']} (1 min), "
        f"python {info['python']}, cryptography {info['cryptography']} (a shared machine: its load slows every row)"
    )
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="plora-bench-sig-") as tmp:
        root = Path(tmp)
        algos = {"rsa-pss-3072": "rsa", "ed25519": "ed25519", "ecdsa-p256": "ecdsa-p256"}
        for label, algo in algos.items():
            generate_keypair(algo, root / "keys" / label)  # type: ignore[arg-type]
        ring = Keyring.load([root / "keys"])
        folder = make_plasmid(root / "legal")
        payload = canonical_bytes(read_manifest(folder))
        for label in algos:
            key = load_private_key(root / "keys" / label)
            env = sign_envelope(PLASMID_PAYLOAD_TYPE, payload, key)
            rows.append(
                {
                    "what": "sign",
                    "algo": label,
                    **timed(lambda k=key: sign_envelope(PLASMID_PAYLOAD_TYPE, payload, k), args.rounds),
                }
            )
            result = verify_envelope(env, PLASMID_PAYLOAD_TYPE, ring)
            assert result.ok, result.reasons
            rows.append(
                {
                    "what": "verify 1 sig",
                    "algo": label,
                    **timed(lambda e=env: verify_envelope(e, PLASMID_PAYLOAD_TYPE, ring), args.rounds),
                }
            )
            sign_plasmid(folder, root / "keys" / label)
        manifest = read_manifest(folder)
        assert check_signatures(folder, ring, 3, manifest=manifest).ok
        row = timed(lambda: check_signatures(folder, ring, 3, manifest=manifest), args.rounds)
        rows.append(
            {"what": "plasmid check, 3 sigs", "algo": "all three", **row, "per_signature_ms": row["median_ms"] / 3}
        )
        oms = make_plasmid(root / "oms")
        sign_plasmid(oms, root / "keys" / "ecdsa-p256", format="oms")
        ec_ring = Keyring.load([root / "keys" / "ecdsa-p256.pub"])
        oms_manifest = read_manifest(oms)
        rows.append(
            {
                "what": "model.sig check",
                "algo": "ecdsa-p256",
                **timed(lambda: check_signatures(oms, ec_ring, 1, manifest=oms_manifest), args.oms_rounds),
            }
        )
    rows.append(
        {"what": "import model_signing (once per process)", "algo": "-", "median_ms": import_ms(), "p95_ms": None}
    )
    width = max(len(str(r["what"])) for r in rows)
    print(f"{'what':<{width}}  {'algo':<12} {'median ms':>10} {'p95 ms':>8}")
    for r in rows:
        p95 = f"{r['p95_ms']:.3f}" if r["p95_ms"] is not None else "-"
        extra = f"   ({r['per_signature_ms']:.3f} ms per signature)" if "per_signature_ms" in r else ""
        print(f"{r['what']:<{width}}  {r['algo']:<12} {r['median_ms']:>10.3f} {p95:>8}{extra}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": info, "rounds": args.rounds, "rows": rows}, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
