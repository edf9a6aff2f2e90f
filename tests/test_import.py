"""`plora import`: a real PEFT adapter (written by peft's own save_pretrained on plora-tiny) becomes a plasmid that
signs, verifies, passes the gate and loads back into PEFT; folders that cannot be described are refused."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from trust_helpers import session_keys
from typer.testing import CliRunner

from plora.cli.main import app
from plora.gate import Policy, screen
from plora.manifest import read_manifest
from plora.models import base_digest, tiny_folder
from plora.signer import Keyring, sign_plasmid, verify_plasmid

runner = CliRunner()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    return session_keys(tmp_path_factory)


def save_peft(base: Any, out: Path, *, r: int = 4, targets: list[str] | None = None, seed: int = 0) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets or ["c_attn"], init_lora_weights=False)
    get_peft_model(base.model, config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory, plora_tiny: Callable[[], Any]) -> Path:
    """A LoRA adapter on plora-tiny's attention, as PEFT writes it (README.md, adapter_config, safetensors)."""
    return save_peft(plora_tiny(), tmp_path_factory.mktemp("peft") / "adapter")


def import_cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["import", *map(str, args)])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_import_wraps_a_peft_adapter_into_a_plasmid(peft_adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    code, text = import_cli(peft_adapter, "--out", out, "--domain", "legal")
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "plora.yml"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):  # byte for byte
        assert (out / name).read_bytes() == (peft_adapter / name).read_bytes()
    m = read_manifest(out)
    assert (m.plasmid_id, m.domain, m.lora.r, m.lora.alpha, m.lora.targets) == ("mine", "legal", 4, 8.0, ("c_attn",))
    assert m.base_model.name == "plora-tiny" and m.base_model.digest == base_digest("plora-tiny")
    assert m.training.dataset == "import:peft" and m.metrics is None


def test_imported_plasmid_signs_verifies_gates_and_loads(
    peft_adapter: Path, tmp_path: Path, keys: dict[str, Path], plora_tiny: Callable[[], Any]
) -> None:
    out = tmp_path / "mine"
    assert import_cli(peft_adapter, "--out", out, "--id", "byo-legal")[0] == 0
    sign_plasmid(out, keys["alice"])
    sign_plasmid(out, keys["dave"], format="oms")
    assert verify_plasmid(out, Keyring.load([keys["trusted"]]), quorum=2).ok
    policy = Policy(signatures=True, trusted_keys=[str(keys["trusted"])], quorum=2, probes=False,
                    allowed_targets=["attention"])  # fmt: skip
    verdict = screen(out, policy)
    assert verdict.accepted, verdict.reasons
    tensors = next(c for c in verdict.checks if c.name == "tensors")
    assert tensors.details["rank"] == [4] and tensors.details["base_shapes_from"]
    from peft import PeftModel

    model = PeftModel.from_pretrained(plora_tiny().model, str(out))  # still a PEFT folder
    assert any("lora_A" in n for n, _ in model.named_parameters())


def _other_base(tmp: Path, *, width: int | None = None) -> Path:
    """A local GPT-2 base: plora-tiny's config (or another width) with fresh random weights, and its tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config.from_pretrained(str(tiny_folder()))
    if width is not None:
        config.n_embd = width
    torch.manual_seed(1)
    folder = tmp / f"base-{width or 'same'}"
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_folder() / name, folder / name)
    return folder


def test_an_adapter_that_does_not_fit_the_named_base_is_refused(peft_adapter: Path, tmp_path: Path) -> None:
    narrow = _other_base(tmp_path, width=64)
    code, text = import_cli(peft_adapter, "--out", tmp_path / "x", "--base-model", narrow)
    assert code == 2 and "does not fit base" in text and "128->384, base 64->192" in text
    assert not (tmp_path / "x").exists()


def test_an_adapter_made_on_another_base_is_refused(
    tmp_path: Path, plora_tiny: Callable[[], Any], peft_adapter: Path
) -> None:
    from plora.models import load_base

    same_shapes = _other_base(tmp_path)
    adapter = save_peft(load_base(str(same_shapes)), tmp_path / "adapter")  # names its base folder in the config
    code, text = import_cli(adapter, "--out", tmp_path / "x")  # but claimed for plora-tiny
    assert code == 2 and "weights digest" in text and f"--base-model {same_shapes}" in text
    code, text = import_cli(adapter, "--out", tmp_path / "ok", "--base-model", same_shapes)
    assert code == 0, text
    assert read_manifest(tmp_path / "ok").base_model.digest == base_digest(str(same_shapes))


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: (d / "adapter_model.safetensors").unlink(), "no adapter_model.safetensors"),
        (lambda d: (d / "adapter_model.safetensors").rename(d / "adapter_model.bin"), "pickle"),
        (lambda d: _edit_config(d, r=8), "rank 4, adapter_config says r=8"),
        (lambda d: _edit_config(d, target_modules="c_.*"), "pattern"),
        (lambda d: _edit_config(d, target_modules=["c_attn", "c_fc"]), "targets ['c_fc'] unused"),
        (lambda d: _edit_config(d, use_dora=True), "use_dora"),
        (lambda d: _edit_config(d, peft_type="IA3"), "only LoRA"),
        (lambda d: (d / "adapter_config.json").write_text("{nope"), "not valid JSON"),
        (lambda d: (d / "plora.yml").write_text("x: 1"), "a plasmid already"),
        (lambda d: _replace(d / "adapter_config.json", os.mkfifo), "adapter_config.json: not a regular file"),
        (lambda d: _replace(d / "adapter_config.json", lambda p: p.symlink_to("/dev/zero")), "not a regular file"),
        (lambda d: _replace(d / "adapter_config.json", Path.mkdir), "adapter_config.json: not a regular file"),
        (lambda d: _replace(d / "adapter_model.safetensors", os.mkfifo), "safetensors: not a regular file"),
        (lambda d: _replace(d / "adapter_model.safetensors", lambda p: p.symlink_to("/dev/zero")), "not a regular"),
        (lambda d: _replace(d / "adapter_model.safetensors", Path.mkdir), "safetensors: not a regular file"),
        (lambda d: _poison(d, float("nan")), "NaN or Inf in base_model.model."),
        (lambda d: _poison(d, float("inf")), "NaN or Inf in base_model.model."),
    ],
    ids=["no-tensors", "pickle", "rank", "regex-targets", "unused-target", "dora", "not-lora", "bad-json", "plasmid",
         "config-fifo", "config-dev-zero", "config-dir", "tensors-fifo", "tensors-dev-zero", "tensors-dir",
         "nan", "inf"],
)
def test_folders_a_plasmid_cannot_describe_are_refused(
    peft_adapter: Path, tmp_path: Path, breakage: Callable[[Path], Any], message: str
) -> None:
    src = Path(shutil.copytree(peft_adapter, tmp_path / "src"))
    breakage(src)
    code, text = import_cli(src, "--out", tmp_path / "out")
    assert code == 2 and message in text, text
    assert len(text.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_import_never_overwrites_without_force(peft_adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, text = import_cli(peft_adapter, "--out", out)
    assert code == 2 and "--force" in text and (out / "keep.txt").read_text() == "mine"
    assert import_cli(peft_adapter, "--out", out, "--force")[0] == 0
    assert not (out / "keep.txt").exists() and (out / "plora.yml").exists()
    code, text = import_cli(peft_adapter, "--out", peft_adapter)
    assert code == 2 and "PEFT folder itself" in text


def test_an_id_or_domain_a_manifest_cannot_hold_is_one_line_naming_the_option(
    peft_adapter: Path, tmp_path: Path
) -> None:
    """These were refused only once the manifest was built, after every tensor was read and the base hashed, with
    pydantic's multi-part text ("1 validation error for Manifest ... For further information visit ...")."""
    for args, message in (
        (["--id", "../evil"], "--id '../evil' cannot be the plasmid's plasmid_id: String should match pattern"),
        (["--domain", "a b"], "--domain 'a b' cannot be the plasmid's domain: String should match pattern"),
        ([], "--out folder name '_x' cannot be the plasmid's plasmid_id: String should match pattern"),
    ):
        code, text = import_cli(peft_adapter, "--out", tmp_path / "_x" if not args else tmp_path / "ok", *args)
        assert code == 2 and message in text and "pydantic" not in text and len(text.strip().splitlines()) == 1, text
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("change", "message"),
    [({"lora_alpha": 0}, "lora.alpha: Input should be greater than 0"),
     ({"lora_dropout": 2.0}, "lora.dropout: Input should be less than 1")],
)
def test_config_values_a_manifest_cannot_hold_are_one_short_line(
    peft_adapter: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """They used to come out as pydantic's whole text, cut at 300 characters ("1 validation error for Manifest ...")."""
    src = Path(shutil.copytree(peft_adapter, tmp_path / "peft"))
    _edit_config(src, **change)
    code, text = import_cli(src, "--out", tmp_path / "out")
    assert code == 2 and f"cannot describe this adapter in plora.yml: {message}" in text, text
    assert "validation error" not in text and not (tmp_path / "out").exists()


def test_import_never_replaces_the_working_directory_or_the_source(
    peft_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "w"
    src = Path(shutil.copytree(peft_adapter, work / "peft"))
    (work / "work").mkdir()
    (work / "work" / "notes.txt").write_text("mine")
    monkeypatch.chdir(work / "work")
    for out in (work / "work", Path(".")):
        code, text = import_cli(src, "--out", out, "--force")
        assert code == 2 and "working directory" in text, text
    monkeypatch.chdir(tmp_path)
    code, text = import_cli(src, "--out", work, "--force")  # the source's parent
    assert code == 2 and "overlaps the source" in text, text
    assert (work / "work" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in src.iterdir()) == sorted(p.name for p in peft_adapter.iterdir())


def _replace(path: Path, make: Callable[[Path], Any]) -> None:
    path.unlink()
    make(path)


def _poison(folder: Path, value: float) -> None:
    from safetensors.numpy import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].copy()
    tensors[first].flat[0] = value
    save_file(tensors, str(path))


def _edit_config(folder: Path, **changes: Any) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
