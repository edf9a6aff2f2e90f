"""Bring your own adapter: wrap a plain PEFT LoRA folder (no plora.yml) into a plasmid.

    >>> from peft import LoraConfig, get_peft_model
    >>> from plora.models import load_base
    >>> from plora.importer import import_peft
    >>> peft_model = get_peft_model(load_base("plora-tiny").model, LoraConfig(r=4, target_modules=["c_attn"]))
    >>> peft_model.save_pretrained("peft-out")              # a plain PEFT adapter folder
    >>> done = import_peft("peft-out/", "out/mine", base_model="plora-tiny", domain="legal")
    >>> done.manifest.lora.r, done.manifest.lora.targets
    (4, ('c_attn',))

    $ plora import peft-out/ --out out/mine --domain legal && plora sign out/mine --key keys/alice

What is read, and from where (the folder is a stranger's until signed, so nothing is taken on its word):

* rank: from the factor shapes (A is r x in, B is out x r), and it must equal adapter_config's ``r``;
* targets: adapter_config's ``target_modules`` (what PEFT and the gate compare), each of which must match modules
  present in the tensors, and every module in the tensors must match one of them;
* the base: ``--base-model`` (or PLORA_BASE_MODEL, or plora-tiny) gives the name and weights digest written into
  the manifest; every LoRA module must exist in that base with the shapes the factors map between; when
  adapter_config's ``base_model_name_or_path`` is a local model folder, its weights digest must equal the named
  base's (a name that is not a folder, such as a hub id, is noted, not checked: it cannot be hashed offline);
* settings the manifest cannot describe are refused, as the gate would: DoRA, rsLoRA, rank or alpha patterns,
  modules_to_save, layer selections, pickle-format weights, bfloat16 tensors (numpy, which the gate reads with,
  has no bfloat16: save the adapter in float32 or float16).

The plasmid gets adapter_config.json and adapter_model.safetensors byte for byte (``PeftModel.from_pretrained``
still loads it) plus plora.yml, with ``training.dataset: import:peft`` (seed, samples and epochs unknown: 0)
and no metrics. It is written atomically; then it signs, gates, merges and travels like any plasmid.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from plora.errors import ManifestError, ModelError, PloraError, first_validation_error
from plora.fsio import read_bounded, staging_dir
from plora.hashing import sha256_bytes, sha256_file
from plora.manifest import (
    ADAPTER_CONFIG_NAME,
    ARTIFACT_NAME,
    MANIFEST_NAME,
    MAX_CONFIG_BYTES,
    Artifact,
    Manifest,
    now_utc,
    write_manifest,
)
from plora.outputs import check_output_dir
from plora.plasmid import parse_lora_key, suffix_match
from plora.strictjson import loads_strict

FLOAT_DTYPES = ("F16", "F32", "F64")
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")


class AdapterImportError(PloraError):
    """A PEFT folder that cannot become a plasmid (one line, exit 2 in the CLI)."""


@dataclass
class ImportResult:
    folder: Path
    manifest: Manifest
    notes: list[str] = field(default_factory=list)


def _read_config(src: Path) -> tuple[bytes, dict[str, Any]]:
    path = src / ADAPTER_CONFIG_NAME
    if not path.exists() and not path.is_symlink():
        raise AdapterImportError(f"{src}: no {ADAPTER_CONFIG_NAME} (expected a folder written by PEFT save_pretrained)")
    raw = read_bounded(path, MAX_CONFIG_BYTES, "a PEFT adapter_config.json", AdapterImportError)
    try:
        cfg = loads_strict(raw, unique_keys=False)
    except ValueError as err:
        raise AdapterImportError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise AdapterImportError(f"{path}: expected a JSON object")
    return raw, cfg


def _check_label(field: str, value: str, option: str) -> None:
    """``value`` as the manifest's ``field`` takes it, checked before any work (the manifest is built last)."""
    from typing import Annotated

    from pydantic import TypeAdapter

    info = Manifest.model_fields[field]
    try:
        TypeAdapter(Annotated[info.annotation, *info.metadata]).validate_python(value)
    except ValidationError as err:
        message = first_validation_error(err).removeprefix(": ")
        hint = "; pass --id ID" if option.startswith("--out") else ""
        raise AdapterImportError(f"{option} {value!r} cannot be the plasmid's {field}: {message}{hint}") from None


def _number(cfg: dict[str, Any], key: str, default: float | None = None) -> float:
    value = cfg.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise AdapterImportError(f"adapter_config {key} must be a number, found {value!r}")
    return float(value)


def _factor_shapes(path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """``{module: {"A": (r, in), "B": (out, r)}}`` from the safetensors header (no tensor is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as fh:
            slices = {k: fh.get_slice(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is not a Mapping
            info = {k: (sl.get_dtype(), tuple(sl.get_shape())) for k, sl in slices.items()}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types on bad headers
        raise AdapterImportError(f"{path}: not readable safetensors ({type(err).__name__}: {err})") from None
    factors: dict[str, dict[str, tuple[int, int]]] = {}
    stray, bad = [], []
    for key, (dtype, shape) in sorted(info.items()):
        parsed = parse_lora_key(key)
        if parsed is None:
            stray.append(key)
        elif dtype not in FLOAT_DTYPES or len(shape) != 2:
            bad.append(f"{key} {dtype}{list(shape)}")
        else:
            factors.setdefault(parsed[0], {})[parsed[1]] = (int(shape[0]), int(shape[1]))
    if stray:
        raise AdapterImportError(
            f"tensors that are not LoRA A/B factors (modules_to_save, DoRA, embeddings?): {stray[:3]}"
        )
    if bad:
        raise AdapterImportError(
            f"LoRA factors must be 2-D float16/32/64 (numpy has no bfloat16: save the adapter in float32): {bad[:3]}"
        )
    if not factors:
        raise AdapterImportError(f"{path}: no LoRA factors")
    return factors


def _check_finite(path: Path) -> None:
    """Every factor finite: a NaN or Inf adapter would poison any model it is merged into (the gate refuses it too)."""
    import numpy as np
    from safetensors import safe_open

    nonfinite = []
    try:
        with safe_open(str(path), framework="np") as fh:
            for key in sorted(fh.keys()):  # noqa: SIM118 - safe_open is not a Mapping
                if not np.isfinite(fh.get_tensor(key)).all():
                    nonfinite.append(key)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types on bad data
        raise AdapterImportError(f"{path}: not readable safetensors ({type(err).__name__}: {err})") from None
    if nonfinite:
        more = f" and {len(nonfinite) - 3} more" if len(nonfinite) > 3 else ""
        raise AdapterImportError(f"{path}: NaN or Inf in {', '.join(nonfinite[:3])}{more}")


def _rank(factors: dict[str, dict[str, tuple[int, int]]]) -> int:
    ranks = set()
    for module, ab in sorted(factors.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterImportError(f"{module}: needs one lora_A and one lora_B factor, found {sorted(ab)}")
        if ab["A"][0] != ab["B"][1]:
            raise AdapterImportError(f"{module}: A {list(ab['A'])} and B {list(ab['B'])} disagree on the rank")
        ranks.add(ab["A"][0])
    if len(ranks) != 1:
        raise AdapterImportError(f"modules have different ranks {sorted(ranks)}: a plasmid has one rank")
    return ranks.pop()


def _base_shapes(cname: str) -> dict[str, tuple[int, int]]:
    from plora.gate.structure import base_module_shapes, config_module_shapes
    from plora.models import load_base, model_folder

    config = Path(model_folder(cname)) / "config.json"
    shapes = None
    if config.is_file():
        shapes = config_module_shapes(json.loads(config.read_text(encoding="utf-8")))
    if shapes is None:
        shapes = base_module_shapes(load_base(cname))  # another family: read the layers from the model itself
    if not shapes:
        raise AdapterImportError(f"cannot read the layer shapes of base {cname}")
    return shapes


def _check_named_base(declared: Any, cname: str, digest: str, notes: list[str]) -> None:
    """adapter_config's base_model_name_or_path against the named base (see the module docstring)."""
    from plora.models import base_digest, canonical_name, model_folder

    if not isinstance(declared, str) or not declared:
        notes.append(f"adapter_config names no base; recorded as {cname}")
        return
    folder = Path(declared).expanduser()
    if folder.is_dir():
        if folder.resolve() == Path(model_folder(cname)).resolve():
            return
        theirs = base_digest(str(folder.resolve()))
        if theirs != digest:
            raise AdapterImportError(
                f"the adapter was made on {declared} (weights digest {theirs[:16]}...), not on {cname} "
                f"({digest[:16]}...); pass --base-model {declared}"
            )
        return
    try:
        same = canonical_name(declared) == cname
    except (ModelError, PloraError):
        same = False
    if not same:
        notes.append(
            f"adapter_config names base {declared!r}, not a local folder: recorded as {cname} (its layers fit)"
        )


def _target_set(cname: str, targets: list[str]) -> str:
    from plora.models import target_modules

    for name in ("attention", "mlp", "all"):
        try:
            if sorted(target_modules(cname, name)) == sorted(targets):
                return name
        except PloraError:
            return "custom"
    return "custom"


def import_peft(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    base_model: str | None = None,
    plasmid_id: str | None = None,
    domain: str = "imported",
    overwrite: bool = False,
) -> ImportResult:
    """Wrap the PEFT LoRA folder ``src`` into the plasmid ``out`` (see the module docstring)."""
    from plora.gate.structure import config_disagreements
    from plora.models import base_digest, canonical_name

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise AdapterImportError(f"{src}: not a folder")
    if (src / MANIFEST_NAME).exists():
        raise AdapterImportError(f"{src} is a plasmid already (it has {MANIFEST_NAME})")
    artifact = src / ARTIFACT_NAME
    if artifact.exists() or artifact.is_symlink():
        if not artifact.is_file():
            raise AdapterImportError(f"{artifact}: not a regular file (expected the adapter's safetensors)")
    else:
        pickled = [n for n in PICKLE_NAMES if (src / n).exists()]
        hint = f" ({pickled[0]} is pickle, never accepted: save with safe_serialization=True)" if pickled else ""
        raise AdapterImportError(f"{src}: no {ARTIFACT_NAME}{hint}")
    if out.exists() and out.resolve() == src.resolve():
        raise AdapterImportError(f"--out {out} is the PEFT folder itself; choose another folder")
    check_output_dir(out, force=overwrite, sources=[src])
    if out.exists() and not overwrite:
        raise AdapterImportError(f"{out} already exists; choose another --out or pass --force")
    _check_label("plasmid_id", plasmid_id or out.name, "--id" if plasmid_id else "--out folder name")
    _check_label("domain", domain, "--domain")
    config_raw, cfg = _read_config(src)
    if cfg.get("peft_type") != "LORA":
        raise AdapterImportError(f"peft_type is {cfg.get('peft_type')!r}: only LoRA adapters become plasmids")
    targets = cfg.get("target_modules")
    if isinstance(targets, str):
        raise AdapterImportError(f"target_modules is a pattern ({targets!r}): a plasmid needs a list of module names")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise AdapterImportError(f"target_modules must be a list of module names, found {targets!r}")
    factors = _factor_shapes(artifact)
    r = _rank(factors)
    _check_finite(artifact)
    if cfg.get("r") != r:
        raise AdapterImportError(f"the tensors have rank {r}, adapter_config says r={cfg.get('r')!r}")
    modules = sorted(factors)
    undeclared = [m for m in modules if not any(suffix_match(m, t) for t in targets)]
    unused = [t for t in targets if not any(suffix_match(m, t) for m in modules)]
    if undeclared or unused:
        raise AdapterImportError(
            f"tensors and target_modules disagree: modules {undeclared[:3]} undeclared, targets {unused[:3]} unused"
        )
    cname = canonical_name(base_model)
    digest = base_digest(cname)
    shapes = _base_shapes(cname)
    misfit = []
    for m in modules:
        want, got = shapes.get(m), (factors[m]["A"][1], factors[m]["B"][0])
        if want != got:
            misfit.append(
                f"{m} (no such layer)" if want is None else f"{m} maps {got[0]}->{got[1]}, base {want[0]}->{want[1]}"
            )
    if misfit:
        raise AdapterImportError(f"the adapter does not fit base {cname}: {'; '.join(misfit[:3])}")
    notes: list[str] = []
    _check_named_base(cfg.get("base_model_name_or_path"), cname, digest, notes)
    lora = {
        "r": r,
        "alpha": _number(cfg, "lora_alpha"),
        "dropout": _number(cfg, "lora_dropout", 0.0),
        "target_set": _target_set(cname, targets),
        "targets": targets,
    }
    try:
        manifest = Manifest(
            plasmid_id=plasmid_id or out.name,
            domain=domain,
            created_at=now_utc(),
            base_model={"name": cname, "digest": digest},
            lora=lora,
            artifact=Artifact(
                filename=ARTIFACT_NAME,
                sha256=sha256_file(artifact),
                size_bytes=artifact.stat().st_size,
                config_sha256=sha256_bytes(config_raw),
            ),
            training={"seed": 0, "samples": 0, "epochs": 0.0, "dataset": "import:peft"},
        )
    except ValidationError as err:  # adapter_config's own values: lora_alpha 0, lora_dropout 2.0
        raise AdapterImportError(f"cannot describe this adapter in plora.yml: {first_validation_error(err)}") from None
    except (ValueError, TypeError) as err:
        raise AdapterImportError(
            f"cannot describe this adapter in plora.yml: {' '.join(str(err).split())[:300]}"
        ) from None
    disagree = config_disagreements(cfg, manifest)
    if disagree:
        raise AdapterImportError(f"adapter_config settings a plasmid cannot carry: {'; '.join(disagree[:3])}")
    with staging_dir(out) as stage:
        (stage / ADAPTER_CONFIG_NAME).write_bytes(config_raw)
        shutil.copyfile(artifact, stage / ARTIFACT_NAME)
        if sha256_file(stage / ARTIFACT_NAME) != manifest.artifact.sha256:  # the source changed while importing
            raise ManifestError(f"{artifact} changed while it was imported; try again")
        write_manifest(stage, manifest)
    return ImportResult(out, manifest, notes)
