"""The ``plora.yml`` manifest: strict schema, YAML I/O, and the one canonical byte form that is hashed and signed.

    >>> from plora.manifest import read_manifest, canonical_bytes
    >>> m = read_manifest("out/legal")
    >>> m.domain, m.lora.r, m.artifact.filename
    ('legal', 4, 'adapter_model.safetensors')
    >>> canonical_bytes(m)[:30]                     # sorted-key compact JSON, without the signatures
    b'...'
    >>> canonical_bytes(m) == canonical_bytes(read_manifest("out/legal"))   # the same bytes every time: what is signed
    True

Every model forbids unknown fields and coerces no types when reading a file (``r: "4"``, ``r: true`` or
``size_bytes: 10.0`` are refused; NaN/Inf are refused everywhere). The YAML reader refuses duplicate keys
and aliases (anchors). The canonical form is the manifest without the legacy ``signatures`` field, as
JSON with sorted keys, no spaces, UTF-8: any field a gate reads (base model, rank, targets, alpha,
artifact hash and size, the adapter_config hash) is covered by every signature. Signatures are detached, in
``plora.sig.json`` beside the manifest (see :mod:`plora.signer`); ``signatures`` inside plora.yml is the old
format, still parsed so that verify can refuse it by name.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plora.errors import ManifestError, first_validation_error
from plora.fsio import atomic_write_text, read_bounded

SCHEMA_VERSION = 1
MANIFEST_NAME = "plora.yml"
ADAPTER_CONFIG_NAME = "adapter_config.json"
ARTIFACT_NAME = "adapter_model.safetensors"
# Signatures live beside the manifest, never in it (plora.signer): a DSSE envelope, and an optional OpenSSF
# model-signing bundle. They are the only files a plasmid folder holds besides the three above.
SIGNATURE_NAME = "plora.sig.json"
OMS_SIGNATURE_NAME = "model.sig"
SIGNATURE_FILES = (SIGNATURE_NAME, OMS_SIGNATURE_NAME)


def is_plasmid_file(name: str) -> bool:
    """A file name a plasmid folder holds: plora.yml, adapter_config.json, its .safetensors artifact, signatures. A
    folder of nothing else is an earlier plasmid, which a new one may replace (train/merge/import --out, fetch)."""
    return name in (MANIFEST_NAME, ADAPTER_CONFIG_NAME, *SIGNATURE_FILES) or name.endswith(".safetensors")
# Manifests from strangers (gate, verify): a real one is a few KB; PyYAML needs
# about a second per 32 KB of tokens on these CPUs, so a 1 MB one would cost tens of seconds per screen.
UNTRUSTED_MAX_BYTES = 32 * 1024
MAX_MANIFEST_BYTES = 1 << 20  # a manifest on this machine (the loader, plora sign, recall)
MAX_CONFIG_BYTES = 1 << 20  # adapter_config.json, as the gate, plora verify and plora sign read it
MAX_RANK = 1024  # the largest LoRA rank a plasmid's manifest describes
MAX_ALPHA = 65536

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="64 lowercase hex digits")]
Identifier = Annotated[
    str,
    Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="id: letters, digits, . _ -"
    ),
]
TargetSet = Literal["attention", "mlp", "all", "custom"]
SignatureAlgo = Literal["rsa-pss-sha256", "ed25519"]


class _Strict(BaseModel):
    # strict: a YAML "4" or true is not an int; allow_inf_nan: canonical JSON cannot hold NaN/Inf anyway.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numpy_scalars_to_python(cls, data: Any) -> Any:
        # Strict mode refuses numpy ints; code that builds a manifest from computed values may pass them.
        if isinstance(data, dict):
            return {k: v.item() if type(v).__module__ == "numpy" and hasattr(v, "item") else v for k, v in data.items()}
        return data


class BaseModelRef(_Strict):
    name: str = Field(min_length=1, max_length=256, description="base model name: plora-tiny, smollm2-135m, hub id")
    digest: Sha256 = Field(description="SHA-256 over the base model's weights (see plora.models.weights_digest)")


class LoraSpec(_Strict):
    r: int = Field(ge=1, le=MAX_RANK, description="LoRA rank")
    alpha: float = Field(gt=0, le=MAX_ALPHA, description="LoRA alpha; the update is scaled by alpha / r")
    dropout: float = Field(ge=0.0, lt=1.0, default=0.0)
    target_set: TargetSet = Field(description="named target set used at training time")
    targets: tuple[str, ...] = Field(min_length=1, strict=False, description="module name suffixes, e.g. c_attn")

    @field_validator("targets")
    @classmethod
    def _targets_are_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for t in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", t):
                raise ValueError(f"target module name {t!r} is not a dotted identifier")
        return tuple(sorted(set(v)))


class Artifact(_Strict):
    filename: str = Field(description="bare .safetensors file name in the plasmid folder")
    sha256: Sha256
    size_bytes: int = Field(ge=1)
    config_sha256: Sha256 = Field(description="SHA-256 of adapter_config.json")

    @field_validator("filename")
    @classmethod
    def _bare_safetensors(cls, v: str) -> str:
        if "/" in v or "\\" in v or v in {".", ".."} or ".." in v or v.startswith("."):
            raise ValueError(f"artifact filename {v!r} must be a bare file name (no path separators, no '..')")
        if not v.endswith(".safetensors"):
            raise ValueError(f"artifact filename {v!r} must end in .safetensors (pickle/.bin is never accepted)")
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", v):
            raise ValueError(f"artifact filename {v!r} has characters outside [A-Za-z0-9._-]")
        return v


class Training(_Strict):
    seed: int
    samples: int = Field(ge=0)
    epochs: float = Field(ge=0)
    dataset: str = Field(
        min_length=1, max_length=512, description="builtin:<domain>, hub:<id>, file:<name>, merge, or import:peft"
    )
    learning_rate: float | None = Field(default=None, ge=0)
    steps: int | None = Field(default=None, ge=0)
    seconds: float | None = Field(default=None, ge=0)


class Metrics(_Strict):
    """Measured on the domain's dev split (answer tokens only)."""

    dev_size: int = Field(ge=0)
    nll_before: float | None = None
    nll_after: float | None = None
    ppl_before: float | None = None
    ppl_after: float | None = None
    exact_match_before: float | None = Field(default=None, ge=0, le=1)
    exact_match_after: float | None = Field(default=None, ge=0, le=1)

    @field_validator("nll_before", "nll_after", "ppl_before", "ppl_after")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("metrics must be finite numbers")
        return v


class Source(_Strict):
    plasmid_id: Identifier
    sha256: Sha256
    weight: float


class Merge(_Strict):
    method: Literal["linear", "svd", "ties", "dare_linear", "dare_ties", "cat"]
    sources: tuple[Source, ...] = Field(min_length=1, strict=False)
    density: float | None = Field(default=None, gt=0, le=1)


class Signature(_Strict):
    """An old-format signature (inside plora.yml, before DSSE envelopes): read so that verify can name it
    (SIGNATURE_LEGACY), never written and never accepted."""

    algo: SignatureAlgo
    key_fingerprint: Sha256 = Field(description="SHA-256 of the signer's public key (DER SubjectPublicKeyInfo)")
    signature: str = Field(min_length=1, max_length=4096, pattern=r"^[A-Za-z0-9+/]+={0,2}$", description="base64")


class Manifest(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    plasmid_id: Identifier
    domain: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    created_at: datetime = Field(strict=False)
    base_model: BaseModelRef
    lora: LoraSpec
    artifact: Artifact
    training: Training
    metrics: Metrics | None = None
    merge: Merge | None = None
    # Rollback protection (plora.recall): None when absent, so manifests written before these fields keep their
    # canonical bytes (and signatures); read them through release_of().
    lineage: Identifier | None = Field(
        default=None, description="the line of releases this plasmid belongs to; absent: its plasmid_id"
    )
    version: int | None = Field(
        default=None, ge=0, le=2**53, description="release number within the lineage, per signer; absent: 0"
    )
    signatures: tuple[Signature, ...] = Field(
        default=(), strict=False, description="legacy only: signatures are in plora.sig.json beside the manifest"
    )

    @field_validator("schema_version", mode="before")
    @classmethod
    def _schema_version_is_int(cls, v: Any) -> Any:
        # Literal[1] alone would take true or 1.0 (they compare equal to 1).
        if type(v) is not int:
            raise ValueError(f"schema_version must be the integer {SCHEMA_VERSION}")
        return v



def release_of(manifest: Manifest) -> tuple[str, int]:
    """(lineage, version) of a plasmid for rollback protection: a manifest without them is version 0 of the lineage
    named by its plasmid_id."""
    return manifest.lineage or manifest.plasmid_id, manifest.version or 0


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _plain(manifest: Manifest) -> dict[str, Any]:
    return manifest.model_dump(mode="json", exclude_none=True)


def canonical_bytes(manifest: Manifest) -> bytes:
    """The bytes that are hashed and signed (the DSSE payload of plora.sig.json): every field except the legacy
    ``signatures``, sorted-key compact JSON."""
    body = _plain(manifest)
    body.pop("signatures", None)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _format_validation(err: ValidationError) -> str:
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{first_validation_error(err, '<root>')}{more}"


def parse_manifest(data: Any, source: str = "plora.yml") -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping at the top level, found {type(data).__name__}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        raise ManifestError(f"{source}: {_format_validation(err)}") from None


def manifest_path(folder_or_file: str | os.PathLike[str]) -> Path:
    p = Path(folder_or_file)
    return p / MANIFEST_NAME if p.is_dir() else p


def read_manifest(folder_or_file: str | os.PathLike[str], max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest:
    """The manifest of a plasmid folder (or the file itself); a missing, oversized, non-regular (a FIFO is never
    waited on) or undecodable one is a one-line ManifestError."""
    path = manifest_path(folder_or_file)
    if not os.path.lexists(path):
        raise ManifestError(f"{path}: no manifest (expected a plasmid folder with {MANIFEST_NAME})")
    data = read_bounded(path, max_bytes, "a plasmid manifest", ManifestError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: cannot read manifest: {err}") from None
    return loads_manifest(text, source=str(path))


class _StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (last-one-wins hides edits) and aliases (expansion bombs)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: SafeLoader reports it below
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


MAX_FLOW_DEPTH = 32


def _too_deep(text: str, limit: int = MAX_FLOW_DEPTH) -> bool:
    """``[``/``{`` nesting deeper than ``limit``, quotes ignored (an over-estimate): linear, stops early."""
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth = max(0, depth - 1)
    return False


def loads_manifest(text: str, source: str = "plora.yml") -> Manifest:
    # PyYAML's scanner is quadratic in flow nesting: a 1 MB "[[[[..." would take hours, so refuse it first.
    if _too_deep(text):
        raise ManifestError(f"{source}: malformed YAML: nested deeper than {MAX_FLOW_DEPTH} levels")
    try:
        data = yaml.load(text, Loader=_StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None)
        raise ManifestError(f"{source}: malformed YAML{where}{': ' + problem if problem else ''}") from None
    except RecursionError:
        raise ManifestError(f"{source}: malformed YAML: nested too deeply") from None
    return parse_manifest(data, source)


_YAML_BREAKS = ("\x85", "\u2028", "\u2029")  # line breaks to YAML beyond \r and \n


class _ManifestDumper(yaml.SafeDumper):
    """SafeDumper whose strings always load back as written: PyYAML folds a NEL (U+0085) inside a plain or
    single-quoted scalar into a space, so a string holding a YAML line break is written double-quoted (escaped)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if any(b in value for b in _YAML_BREAKS) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def dumps_manifest(manifest: Manifest) -> str:
    return yaml.dump(
        _plain(manifest), Dumper=_ManifestDumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )


def write_manifest(folder: str | os.PathLike[str], manifest: Manifest) -> Path:
    return atomic_write_text(Path(folder) / MANIFEST_NAME, dumps_manifest(manifest))
