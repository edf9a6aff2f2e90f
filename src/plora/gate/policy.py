"""The gate's policy: one pydantic object, loaded from JSON, a targets list file, then overrides.

    >>> from plora.gate.policy import load_policy
    >>> p = load_policy("policy.json", "assets/allowed_targets.txt", quorum=2, tau_norm_z=None)
    >>> p.quorum, p.allowed_ranks
    (2, [4, 8, 16])
    >>> p.target_suffixes()
    ('attn.c_attn', 'attn.c_proj', 'k_proj', 'o_proj', 'q_proj', 'v_proj')

Precedence: defaults < ``--policy_file`` (JSON object with any of the fields below) < ``--allowed_targets_file``
(one module-name suffix per line, ``#`` comments; replaces ``allowed_targets``) < overrides that are not None.
Passing ``trusted_keys`` as an override without ``signatures`` turns signatures on (asking for trusted keys
means asking for verification). Relative key paths are relative to the working directory.

``allowed_targets`` holds module-name suffixes (``c_attn`` matches ``transformer.h.0.attn.c_attn``) and the
keywords ``attention``, ``mlp`` and ``all``, expanded for the policy's base model by
``plora.models.target_modules(name, set)`` when that exists, else by this table:

| family (base model name) | attention | mlp |
|---|---|---|
| GPT-2 (default, incl. plora-tiny) | attn.c_attn, attn.c_proj | mlp.c_fc, mlp.c_proj |
| Llama (name contains llama or smollm) | q_proj, k_proj, v_proj, o_proj | gate_proj, up_proj, down_proj |
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plora.errors import PloraError, first_validation_error
from plora.recall.policy import RecallPolicy
from plora.strictjson import loads_strict

KEYWORDS = ("attention", "mlp", "all")
DEFAULT_MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
MAX_POLICY_BYTES = 1 << 20

_FALLBACK_TARGETS: dict[str, dict[str, tuple[str, ...]]] = {
    "gpt2": {"attention": ("attn.c_attn", "attn.c_proj"), "mlp": ("mlp.c_fc", "mlp.c_proj")},
    "llama": {"attention": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")},
}
_SUFFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_0-9][A-Za-z0-9_]*)*$")


class PolicyError(PloraError):
    """A policy file or override that does not parse or breaks the schema."""


def _csv(v: Any) -> Any:
    if isinstance(v, str):
        return [part.strip() for part in v.split(",") if part.strip()]
    if isinstance(v, tuple):
        return list(v)
    return v


def _ranks_text(v: Any) -> Any:
    """``"4,8,16"`` (the flag's spelling) to ``[4, 8, 16]``; each part must be written as a whole number."""
    parts = _csv(v)
    if not isinstance(v, str):
        return parts
    for part in parts:
        if not part.isascii() or not part.isdigit():
            raise ValueError(f"rank {part!r} is not a whole number")
    return [int(part) for part in parts]


Threshold = Annotated[float, Field(allow_inf_nan=False)]


class Policy(BaseModel):
    """What the gate accepts. Every field has a default; unknown fields are refused.

    Types are strict (a security policy says what it means): ``true`` is not a rank or a quorum, ``"2"`` is not a
    number, ``1`` is not ``true``. The spellings the flags use stay accepted: ``"4,8,16"`` for ``allowed_ranks`` (and
    comma-separated targets and keys), ``"on"`` / ``"off"`` for the switches."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    base_model: str = Field(default="plora-tiny", min_length=1, description="base model name the plasmid must declare")
    base_digest: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="expected weights digest; None: computed with plora.models.base_digest(base_model)",
    )
    allowed_ranks: list[int] = Field(default=[4, 8, 16], min_length=1, description="LoRA ranks accepted")
    allowed_targets: list[str] = Field(
        default=["attention"], min_length=1, description="module suffixes, or attention / mlp / all"
    )
    max_artifact_bytes: int = Field(default=DEFAULT_MAX_ARTIFACT_BYTES, ge=1, description="largest artifact file")
    signatures: bool = Field(default=False, description="require signatures from trusted keys")
    trusted_keys: list[str] = Field(default=[], description="public key files or folders")
    quorum: int = Field(default=1, ge=1, description="distinct trusted signers required")
    tau_trigger: Threshold | None = Field(
        default=None, description="reject above this trigger score (None: the base's calibration)"
    )
    tau_norm_z: Threshold | None = Field(
        default=None, ge=0,
        description="reject above this weight-anomaly robust z, 0 or more (None: the base's calibration)",
    )
    tau_clean_delta: Threshold | None = Field(
        default=None, description="reject above this clean-probe NLL increase, nats (None: the base's calibration)"
    )
    weight_check: bool = Field(default=True, description="run the weight-anomaly detector")
    probes: bool = Field(default=True, description="run the behavioural probes")
    uncalibrated_base: Literal["refuse", "unscreened"] = Field(
        default="refuse",
        description="a base with no gate calibration: refuse (BASE_UNCALIBRATED) or accept without weights/probes",
    )
    probe_seed: int | None = Field(default=None, description="seed of the behavioural probes (None: the calibration's)")
    probe_candidates: int | None = Field(
        default=None, ge=1, le=1 << 20,
        description="vocabulary tokens the trigger scan inserts (None: the calibration's; its thresholds assume it)",
    )
    recall: RecallPolicy = Field(
        default_factory=RecallPolicy,
        description="revocation keys and quorum, peer scoring (plora.recall.policy); never changes a gate verdict",
    )

    @field_validator("allowed_targets", "trusted_keys", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        return _csv(v)

    @field_validator("allowed_ranks", mode="before")
    @classmethod
    def _comma_separated_ranks(cls, v: Any) -> Any:
        return _ranks_text(v)

    @field_validator("signatures", "weight_check", "probes", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in {"on", "off"}:
            return v.strip().lower() == "on"
        return v

    @field_validator("allowed_ranks")
    @classmethod
    def _ranks(cls, v: list[int]) -> list[int]:
        for r in v:
            if not 1 <= r <= 1024:
                raise ValueError(f"rank {r} outside 1..1024")
        return sorted(set(v))

    @field_validator("allowed_targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        for t in v:
            if t not in KEYWORDS and not _SUFFIX.match(t):
                raise ValueError(f"target {t!r} is neither attention/mlp/all nor a module-name suffix")
        return list(dict.fromkeys(v))

    def target_suffixes(self) -> tuple[str, ...]:
        """``allowed_targets`` with the keywords expanded for ``base_model`` (sorted, unique)."""
        out: set[str] = set()
        for t in self.allowed_targets:
            if t == "all":
                out.update(expand_keyword(self.base_model, "attention"))
                out.update(expand_keyword(self.base_model, "mlp"))
            elif t in KEYWORDS:
                out.update(expand_keyword(self.base_model, t))
            else:
                out.add(t)
        return tuple(sorted(out))

    def target_allowed(self, module: str) -> bool:
        return any(module == s or module.endswith("." + s) for s in self.target_suffixes())

    def effective(self) -> Policy:
        """The same policy with target keywords expanded: what the gate enforces, reusable as a policy file."""
        return self.model_copy(update={"allowed_targets": list(self.target_suffixes())})


@functools.lru_cache(maxsize=64)
def expand_keyword(base_model: str, keyword: str) -> tuple[str, ...]:
    """Suffixes of a target set for a base model name (cached: the swarm screens many plasmids)."""
    try:
        from plora.models import target_modules  # lazy: plora.models may pull torch, or not exist yet
    except ImportError:
        target_modules = None
    if target_modules is not None:
        try:
            got = tuple(target_modules(base_model, keyword))
        except Exception:  # noqa: BLE001 - unknown model or set there: the family table below decides
            got = ()
        if got and all(isinstance(t, str) and _SUFFIX.match(t) for t in got):
            return got
    family = "llama" if any(k in base_model.lower() for k in ("llama", "smollm")) else "gpt2"
    if keyword == "all":
        return _FALLBACK_TARGETS[family]["attention"] + _FALLBACK_TARGETS[family]["mlp"]
    return _FALLBACK_TARGETS[family][keyword]


def read_targets_file(path: str | os.PathLike[str]) -> list[str]:
    """One suffix (or keyword) per line; ``#`` starts a comment; blank lines ignored."""
    from plora.fsio import read_bounded

    path = Path(path)
    try:
        text = read_bounded(path, MAX_POLICY_BYTES, "allowed targets file", PolicyError).decode("utf-8")
    except UnicodeDecodeError as err:
        raise PolicyError(f"{path}: cannot read allowed targets file ({err})") from None
    targets = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    targets = [t for t in targets if t]
    if not targets:
        raise PolicyError(f"{path}: no targets listed")
    return targets


def _format(err: ValidationError, source: str) -> str:
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {first_validation_error(err, '<root>')}{more}"


def load_policy(
    policy_file: str | os.PathLike[str] | None = None,
    allowed_targets_file: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Policy:
    """Defaults, then the JSON file, then the targets file, then the overrides that are not None."""
    data: dict[str, Any] = {}
    source = "policy"
    if policy_file is not None:
        source = str(policy_file)
        from plora.fsio import read_bounded

        try:
            raw = read_bounded(policy_file, MAX_POLICY_BYTES, "policy file", PolicyError).decode("utf-8")
        except UnicodeDecodeError as err:
            raise PolicyError(f"{policy_file}: cannot read policy file ({err})") from None
        try:
            loaded = loads_strict(raw, unique_keys=False)
        except ValueError as err:
            raise PolicyError(f"{policy_file}: malformed JSON ({err})") from None
        if not isinstance(loaded, dict):
            raise PolicyError(f"{policy_file}: expected a JSON object, found {type(loaded).__name__}")
        data.update(loaded)
    if allowed_targets_file is not None:
        data["allowed_targets"] = read_targets_file(allowed_targets_file)
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(Policy.model_fields))
    if unknown:
        raise PolicyError(f"unknown policy setting(s): {', '.join(unknown)}")
    if "trusted_keys" in given and "signatures" not in given:
        given["signatures"] = True
    data.update(given)
    try:
        return Policy.model_validate(data)
    except ValidationError as err:
        raise PolicyError(_format(err, source)) from None
