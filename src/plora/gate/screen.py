"""The security gate: ordered checks over a plasmid folder, each failure a stable reason code.

    >>> import shutil
    >>> from pathlib import Path
    >>> from plora.gate import load_policy, screen
    >>> _ = shutil.copytree("out/legal", "received/legal")
    >>> weights = Path("received/legal/adapter_model.safetensors")
    >>> data = bytearray(weights.read_bytes())
    >>> data[-1] ^= 1                                                     # one bit flipped in transit
    >>> _ = weights.write_bytes(data)
    >>> result = screen("received/legal", load_policy("policy.json"))
    >>> result.accepted, result.reason_codes
    (False, ['ARTIFACT_SHA_MISMATCH'])
    >>> result.reasons[0][1]
    'hash mismatch for adapter_model.safetensors: ..., manifest ...'
    >>> [(c.name, c.passed) for c in result.checks][4:]        # None: not run, an earlier stage failed
    [('integrity', False), ('signatures', None), ('calibration', None), ('weights', None), ('probes', None)]

Stages, cheapest first; the gate stops after the first stage that fails, keeping every reason that stage found:

1. ``schema``      plora.yml and adapter_config.json present and well-formed; no pickle files or symlinks
2. ``base_model``  declared base name and weights digest equal the policy's
3. ``artifact``    file size <= max_artifact_bytes (stat before any read), then one bounded read and a safetensors parse
4. ``tensors``     rank and targets READ FROM THE TENSORS: A/B pairs, shapes, one rank, allowed ranks and targets,
                   agreement with the manifest (and with the base model's layer shapes when ``base`` is given), finite
5. ``integrity``   SHA-256 and size of the bytes parsed above, adapter_config.json hash and its r/alpha/targets
6. ``signatures``  (policy.signatures) K-of-N quorum of distinct trusted keys over the canonical manifest
7. ``calibration`` (when weights or probes are on) the base's gate calibration (:mod:`plora.gate.calibration`): its
                   thresholds, statistic, probe config and clean weight references; none for this base digest is
                   BASE_UNCALIBRATED (or, with policy uncalibrated_base=unscreened, the two detectors are skipped)
8. ``weights``     (policy.weight_check) plora.gate.weights.weight_anomaly: max robust z > tau_norm_z; a shape the
                   calibration has no reference for is SHAPE_UNCALIBRATED (nothing passes unscored)
9. ``probes``      (policy.probes) plora.gate.probes.behaviour_probe: trigger score > tau_trigger,
                   clean delta > tau_clean_delta

No manifest field decides acceptance on its own: rank and targets come from the tensors, hashes are
recomputed, metrics are never read. The gate reads nothing outside the plasmid folder except the base model
and trusted keys, and writes nothing. A detector that raises rejects the plasmid (fail closed). Thresholds the
policy leaves unset come from the calibration; a policy value overrides it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from plora.errors import PloraError
from plora.fsio import read_bounded
from plora.gate.policy import Policy
from plora.gate.reasons import STAGES, Reason
from plora.gate.result import CheckRecord, GateResult, ReasonPair
from plora.gate.structure import base_module_shapes, check_tensors, clip, config_disagreements, config_file_shapes
from plora.hashing import sha256_bytes
from plora.manifest import (
    ADAPTER_CONFIG_NAME,
    MANIFEST_NAME,
    MAX_CONFIG_BYTES,
    UNTRUSTED_MAX_BYTES,
    Manifest,
    read_manifest,
)
from plora.plasmid import Plasmid, stray_weights, unsafe_files
from plora.strictjson import loads_strict

__all__ = ["MAX_CONFIG_BYTES", "CheckRecord", "GateResult", "ReasonPair", "screen"]



class _Screen:
    """State carried from stage to stage: every stage reads only what earlier stages validated."""

    def __init__(self, folder: Path, policy: Policy, base: Any, keyring: Any) -> None:
        self.folder = folder
        self.policy = policy
        self.base = base
        self.keyring = keyring
        self.manifest: Manifest | None = None
        self.config_bytes = b""
        self.config: dict[str, Any] = {}
        self.artifact_bytes = b""
        self.tensors: dict[str, np.ndarray] = {}
        self.scores: dict[str, float | None] = {"norm_z": None, "trigger": None, "clean_delta": None}
        self.calibration: Any = None
        self.digest: str | None = None

    # 1 ---------------------------------------------------------------------------------------------------
    def schema(self, d: dict[str, Any]) -> list[ReasonPair]:
        if not self.folder.is_dir():
            return [(Reason.MANIFEST_MISSING, f"{self.folder} is not a folder")]
        try:
            unsafe = unsafe_files(self.folder)
        except OSError as err:
            return [(Reason.MANIFEST_MISSING, f"{self.folder}: cannot list the folder ({err.strerror})")]
        if unsafe:
            return [(Reason.UNSAFE_FILE, why) for why in unsafe]
        out: list[ReasonPair] = []
        if not (self.folder / MANIFEST_NAME).is_file():
            return [(Reason.MANIFEST_MISSING, f"{self.folder}: no {MANIFEST_NAME}")]
        try:
            self.manifest = read_manifest(self.folder, max_bytes=UNTRUSTED_MAX_BYTES)
        except PloraError as err:
            out.append((Reason.SCHEMA_INVALID, str(err)))
        cfg = self.folder / ADAPTER_CONFIG_NAME
        try:
            self.config_bytes = read_bounded(cfg, MAX_CONFIG_BYTES, ADAPTER_CONFIG_NAME)
            config = loads_strict(self.config_bytes, unique_keys=False)
            if not isinstance(config, dict):
                raise ValueError(f"expected a JSON object, found {type(config).__name__}")
            self.config = config
        except (OSError, ValueError) as err:
            why = " is missing" if not cfg.exists() else f": {err}"
            out.append((Reason.SCHEMA_INVALID, f"{ADAPTER_CONFIG_NAME}{why}"))
        if self.manifest is not None:
            out += [(Reason.UNSAFE_FILE, why) for why in stray_weights(self.folder, self.manifest.artifact.filename)]
            d["plasmid_id"] = self.manifest.plasmid_id
            d["signatures"] = len(self.manifest.signatures)
        return out

    # 2 ---------------------------------------------------------------------------------------------------
    def base_model(self, d: dict[str, Any]) -> list[ReasonPair]:
        m = self._m()
        if m.base_model.name != self.policy.base_model:
            return [
                (
                    Reason.BASE_MODEL_MISMATCH,
                    f"plasmid is for base {m.base_model.name!r}, policy requires {self.policy.base_model!r}",
                )
            ]
        expected, source = self._expected_digest()
        self.digest = expected
        d["digest_source"] = source
        if expected is None:
            d["note"] = "base weights digest not checked: " + source
        elif m.base_model.digest != expected:
            return [
                (
                    Reason.BASE_MODEL_MISMATCH,
                    f"base weights digest {m.base_model.digest[:16]}... differs from {source} {expected[:16]}...",
                )
            ]
        return []

    def _expected_digest(self) -> tuple[str | None, str]:
        if self.policy.base_digest is not None:
            return self.policy.base_digest, "policy.base_digest"
        if self.base is not None and getattr(self.base, "name", None) == self.policy.base_model:
            digest = getattr(self.base, "digest", None)
            if digest:
                return str(digest), "the loaded base"
        try:
            from plora.models import base_digest  # lazy: may load a model (torch)
        except ImportError:
            return None, "plora.models.base_digest is not available"
        try:
            return base_digest(self.policy.base_model), "plora.models.base_digest"
        except Exception as err:  # noqa: BLE001 - a base we cannot hash is noted, the other stages still run
            return None, f"cannot compute it ({err})"

    # 3 ---------------------------------------------------------------------------------------------------
    def artifact(self, d: dict[str, Any]) -> list[ReasonPair]:
        m = self._m()
        path = self.folder / m.artifact.filename  # a bare name (schema) and no symlinks (stage 1)
        try:
            size = path.stat().st_size
        except OSError:
            return [(Reason.ARTIFACT_UNREADABLE, f"artifact {m.artifact.filename} is missing")]
        d["size_bytes"] = size
        limit = self.policy.max_artifact_bytes
        if size > limit:
            return [(Reason.ARTIFACT_TOO_LARGE, f"artifact is {size} bytes, policy allows {limit}")]
        try:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)  # bounded even if the file grows after the stat
        except OSError as err:
            return [(Reason.ARTIFACT_UNREADABLE, f"artifact {m.artifact.filename} cannot be read ({err.strerror})")]
        if len(data) > limit:
            return [(Reason.ARTIFACT_TOO_LARGE, f"artifact grew past {limit} bytes while being read")]
        self.artifact_bytes = data
        from safetensors.numpy import load

        try:
            self.tensors = load(data)
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types on bad headers/truncation
            return [(Reason.ARTIFACT_UNREADABLE, f"artifact is not readable safetensors ({type(err).__name__}: {err})")]
        d["tensors"] = len(self.tensors)
        return []

    # 4 ---------------------------------------------------------------------------------------------------
    def tensors_check(self, d: dict[str, Any]) -> list[ReasonPair]:
        shapes, source = base_module_shapes(self.base), "the loaded base"
        if shapes is None:
            shapes, source = config_file_shapes(self.policy.base_model), "the base's config.json"
        d["base_shapes_from"] = source if shapes is not None else None
        return check_tensors(self.tensors, self._m(), self.policy, shapes, d)

    # 5 ---------------------------------------------------------------------------------------------------
    def integrity(self, d: dict[str, Any]) -> list[ReasonPair]:
        m = self._m()
        out: list[ReasonPair] = []
        size, digest = len(self.artifact_bytes), sha256_bytes(self.artifact_bytes)
        if size != m.artifact.size_bytes:
            out.append(
                (Reason.ARTIFACT_SHA_MISMATCH, f"artifact is {size} bytes, manifest says {m.artifact.size_bytes}")
            )
        elif digest != m.artifact.sha256:
            out.append(
                (
                    Reason.ARTIFACT_SHA_MISMATCH,
                    f"hash mismatch for {m.artifact.filename}: {digest[:16]}..., manifest {m.artifact.sha256[:16]}...",
                )
            )
        cfg_digest = sha256_bytes(self.config_bytes)
        if cfg_digest != m.artifact.config_sha256:
            out.append(
                (
                    Reason.CONFIG_SHA_MISMATCH,
                    f"hash mismatch for {ADAPTER_CONFIG_NAME}: {cfg_digest[:16]}..., "
                    f"manifest {m.artifact.config_sha256[:16]}...",
                )
            )
        disagree = config_disagreements(self.config, m)
        if disagree:
            out.append(
                (Reason.CONFIG_SHA_MISMATCH, f"{ADAPTER_CONFIG_NAME} disagrees with plora.yml: {clip(disagree)}")
            )
        d["sha256"] = digest
        return out

    # 6 ---------------------------------------------------------------------------------------------------
    def signatures(self, d: dict[str, Any]) -> list[ReasonPair]:
        from plora.signer import check_signatures

        # the files were hashed in stages 3-5: only plora.sig.json (and model.sig, if any) are read here
        res = check_signatures(self.folder, self.keyring, self.policy.quorum, manifest=self._m())
        d.update(valid_signers=res.valid_signers, untrusted_signers=res.untrusted_signers, quorum=res.quorum)
        if res.notes:
            d["notes"] = res.notes
        return [(Reason(c), msg) for c, msg in res.reasons]

    # 7 ---------------------------------------------------------------------------------------------------
    def calibration_check(self, d: dict[str, Any]) -> list[ReasonPair]:
        from plora.gate.calibration import find_calibration

        digest = self.digest or self._m().base_model.digest  # stage 2 checked the manifest's digest against it
        try:
            self.calibration = find_calibration(digest)
        except PloraError as err:
            return [(Reason.BASE_UNCALIBRATED, f"the calibration for this base cannot be used: {err}")]
        if self.calibration is None:
            what = f"no gate calibration for base {self.policy.base_model!r} (weights digest {digest[:16]}...)"
            if self.policy.uncalibrated_base == "unscreened":
                d["skipped"] = what + ": weights and probes not run (policy uncalibrated_base=unscreened)"
                return []
            return [(Reason.BASE_UNCALIBRATED, f"{what}: make one with plora gate-eval --base-model "
                                               f"{self.policy.base_model}, then plora calibration install")]
        cal = self.calibration
        d.update(calibration=cal.digest()[:16], statistic=cal.statistic, created=cal.created,
                 thresholds=self._thresholds())
        if self.policy.probes:
            from plora.gate.calibration import stale_probe

            stale = stale_probe(cal)
            if stale:
                return [(Reason.BASE_UNCALIBRATED, f"the calibration for this base cannot be used: {stale}")]
        return []

    def _thresholds(self) -> dict[str, float]:
        pol, cal = self.policy, self.calibration.thresholds
        return {
            "trigger": pol.tau_trigger if pol.tau_trigger is not None else cal.trigger,
            "norm_z": pol.tau_norm_z if pol.tau_norm_z is not None else cal.norm_z,
            "clean_delta": pol.tau_clean_delta if pol.tau_clean_delta is not None else cal.clean_delta,
        }

    # 8 ---------------------------------------------------------------------------------------------------
    def weights(self, d: dict[str, Any]) -> list[ReasonPair]:
        if self.calibration is None:  # uncalibrated base, policy says unscreened (stage 7)
            d["skipped"] = "no calibration for this base"
            return []
        from plora.gate.weights import weight_anomaly

        tau = self._thresholds()["norm_z"]
        try:
            score = weight_anomaly(self._plasmid(), self.calibration.weights())
        except Exception as err:  # noqa: BLE001 - fail closed: a crafted plasmid must not crash past the gate
            return [(Reason.WEIGHT_ANOMALY, f"weight check failed on this plasmid ({type(err).__name__}: {err})")]
        max_z = float(score.max_z)
        self.scores["norm_z"] = None if math.isnan(max_z) else max_z
        d.update(max_z=self.scores["norm_z"], tau_norm_z=tau, **_plain(score.details))
        if math.isnan(max_z):
            why = score.details.get("reason", "no clean reference for this shape")
            return [(Reason.SHAPE_UNCALIBRATED, f"{why} in the base's calibration: not screened, so refused")]
        if max_z > tau:
            return [(Reason.WEIGHT_ANOMALY, f"max robust z {max_z:.2f} > tau_norm_z {tau:g}")]
        return []

    # 9 ---------------------------------------------------------------------------------------------------
    def probes(self, d: dict[str, Any]) -> list[ReasonPair]:
        if self.calibration is None:
            d["skipped"] = "no calibration for this base"
            return []
        from plora.gate.probes import ProbeConfig, behaviour_probe

        pol, cal, taus = self.policy, self.calibration, self._thresholds()
        config = ProbeConfig(**cal.probe_config)
        if pol.probe_candidates is not None:
            config = ProbeConfig(**{**cal.probe_config, "candidates": pol.probe_candidates})
        seed = pol.probe_seed if pol.probe_seed is not None else cal.probe_seed
        if (config, seed) != (ProbeConfig(**cal.probe_config), cal.probe_seed):
            d["note"] = "probe seed/config differ from the calibration's: its thresholds were not measured for them"
        try:
            score = behaviour_probe(self._plasmid(), base=self.base, seed=seed, config=config,
                                    stop_above=(cal.statistic, taus["trigger"]))
            trigger = float(score.details["variants"][cal.statistic])
            delta = float(score.clean_delta)
        except Exception as err:  # noqa: BLE001 - fail closed
            return [(Reason.TRIGGER_SUSPECT, f"behavioural probe failed on this plasmid ({type(err).__name__}: {err})")]
        self.scores.update(trigger=trigger, clean_delta=delta)
        d.update(trigger_score=trigger, clean_delta=delta, tau_trigger=taus["trigger"],
                 tau_clean_delta=taus["clean_delta"], **_plain(score.details))
        out: list[ReasonPair] = []
        if not trigger <= taus["trigger"]:  # NaN fails too
            found, answer = score.details.get("trigger"), score.details.get("answer")
            hint = f" (inserting {found!r} makes it answer {answer!r})" if found and answer is not None else ""
            out.append((Reason.TRIGGER_SUSPECT, f"trigger score {trigger:.3f} > tau_trigger {taus['trigger']:g}{hint}"))
        if not delta <= taus["clean_delta"]:
            out.append((Reason.CLEAN_DEGRADED, f"clean delta {delta:.3f} > tau_clean_delta {taus['clean_delta']:g}"))
        return out

    # ------------------------------------------------------------------------------------------------------
    def _m(self) -> Manifest:
        assert self.manifest is not None  # stage 1 passed
        return self.manifest

    def _plasmid(self) -> Plasmid:
        return Plasmid(folder=self.folder, manifest=self._m(), tensors=self.tensors)


def _plain(details: Any) -> dict[str, Any]:
    return dict(details) if isinstance(details, dict) else {"details": details}


def screen(
    folder: str | os.PathLike[str],
    policy: Policy,
    *,
    base: Any = None,
    keyring: Any = None,
    progress: Callable[[str, CheckRecord | None], None] | None = None,
) -> GateResult:
    """Run the ordered checks. ``base``: a plora.models.LoadedBase reused across screens (probes, shapes).

    ``keyring``: a plora.signer.Keyring to reuse; loaded from ``policy.trusted_keys`` when None.
    ``progress(stage, None)`` is called as a stage starts and ``progress(stage, record)`` when it is done or skipped
    (a CLI shows the stages of a long screen as they run; it changes nothing in the verdict).
    Raises PloraError only for a bad policy (e.g. signatures on with no keys, or a quorum above the distinct keys
    they hold), never for a bad plasmid.
    """
    start = time.perf_counter()
    if policy.signatures and keyring is None:  # a bad key path is bad input, whatever the plasmid holds
        from plora.signer import Keyring

        if not policy.trusted_keys:
            raise PloraError("signatures are on but the policy names no trusted_keys")
        keyring = Keyring.load(policy.trusted_keys)
    if policy.signatures:
        from plora.signer.dsse import check_quorum_arg

        check_quorum_arg(policy.quorum, keyring)
    s = _Screen(Path(folder), policy, base, keyring)
    stages: dict[str, tuple[Callable[[dict[str, Any]], list[ReasonPair]], str | None]] = {
        "schema": (s.schema, None),
        "base_model": (s.base_model, None),
        "artifact": (s.artifact, None),
        "tensors": (s.tensors_check, None),
        "integrity": (s.integrity, None),
        "signatures": (s.signatures, None if policy.signatures else "signatures off in the policy"),
        "calibration": (s.calibration_check, None if policy.weight_check or policy.probes else "no detector is on"),
        "weights": (s.weights, None if policy.weight_check else "weight check off in the policy"),
        "probes": (s.probes, None if policy.probes else "probes off in the policy"),
    }
    assert tuple(stages) == STAGES
    checks: list[CheckRecord] = []
    reasons: list[ReasonPair] = []
    for name, (run, off) in stages.items():
        if reasons:
            checks.append(CheckRecord(name, None, 0.0, {"skipped": "an earlier stage failed"}))
        elif off is not None:
            checks.append(CheckRecord(name, None, 0.0, {"skipped": off}))
        else:
            if progress is not None:
                progress(name, None)
            details: dict[str, Any] = {}
            t0 = time.perf_counter()
            found = run(details)
            seconds = time.perf_counter() - t0
            skipped = "skipped" in details and not found
            checks.append(CheckRecord(name, None if skipped else not found, seconds, details))
            reasons = [(str(Reason(code)), msg) for code, msg in found]
        if progress is not None:
            progress(name, checks[-1])
    return GateResult(
        folder=str(folder),
        accepted=not reasons,
        reasons=reasons,
        checks=checks,
        scores=s.scores,
        seconds=time.perf_counter() - start,
    )
