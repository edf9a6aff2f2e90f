"""Runtime: inject / remove / merge plasmids into live GPT-2 (Conv1D) and Llama (Linear) models, checked against PEFT.

Adapters are made with plain PEFT (``get_peft_model`` + ``save_pretrained``, random non-zero factors) on small models
built in-process, so the comparisons are against PEFT's own forward and ``add_weighted_adapter``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from plora.errors import LoaderError
from plora.loader import (
    active_injections,
    check_latency_budget,
    enforce_latency_budget,
    inject,
    injected,
    measure_inject_remove,
    merge_plasmids,
    model_digest,
    remove,
)
from plora.manifest import LoraSpec, Training, now_utc
from plora.plasmid import read_plasmid, write_plasmid

torch.set_num_threads(1)
GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]  # c_proj is both attn.c_proj and mlp.c_proj
LLAMA_TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def _gpt2(width: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=width, n_layer=2, n_head=2, vocab_size=96, n_positions=32)
    return GPT2LMHeadModel(cfg).eval()


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(cfg).eval()


def _peft_adapter(base, folder, targets, seed, r=4, alpha=8, **extra):
    """A raw PEFT adapter folder (no plora.yml) with random, non-zero factors."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False, **extra)
    get_peft_model(copy.deepcopy(base), cfg).save_pretrained(str(folder))
    return folder


def _as_plasmid(peft_folder, out, digest, plasmid_id, target_set="all"):
    """Wrap a PEFT folder as a plora plasmid (adapter_config + tensors unchanged, plus a manifest)."""
    from safetensors.numpy import load_file

    config = json.loads((peft_folder / "adapter_config.json").read_text())
    tensors = load_file(str(peft_folder / "adapter_model.safetensors"))
    targets = config["target_modules"]
    write_plasmid(
        out,
        tensors,
        config,
        plasmid_id=plasmid_id,
        domain=plasmid_id,
        created_at=now_utc(),
        base_model={"name": "test-base", "digest": digest},
        lora=LoraSpec(r=config["r"], alpha=float(config["lora_alpha"]), target_set=target_set, targets=tuple(targets)),
        training=Training(seed=0, samples=1, epochs=1.0, dataset="builtin:test"),
    )
    return out


def _snapshot(model):
    return {k: v.detach().clone().numpy().tobytes() for k, v in model.state_dict().items()}


def _no_hooks(model):
    return all(not m._forward_hooks for m in model.modules())


def _ids():
    return torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _peft_logits(base, folders, names=None, merge=None, **merge_kwargs):
    from peft import PeftModel

    names = names or [f"a{i}" for i in range(len(folders))]
    pm = PeftModel.from_pretrained(copy.deepcopy(base), str(folders[0]), adapter_name=names[0])
    for f, n in zip(folders[1:], names[1:], strict=True):
        pm.load_adapter(str(f), adapter_name=n)
    if merge is not None:
        pm.add_weighted_adapter(names, merge_kwargs.pop("weights"), "merged", combination_type=merge, **merge_kwargs)
        pm.set_adapter("merged")
    pm.eval()
    return pm, pm(_ids()).logits


@pytest.fixture(scope="session")
def gpt2_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader-gpt2")
    base = _gpt2()
    digest = model_digest(base)
    raw = [_peft_adapter(base, root / f"raw{i}", GPT2_TARGETS, seed=10 + i) for i in range(3)]
    plasmids = [_as_plasmid(f, root / f"p{i}", digest, f"p{i}") for i, f in enumerate(raw)]
    return base, digest, raw, plasmids, root


@pytest.fixture(scope="session")
def llama_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader-llama")
    base = _llama()
    # rsLoRA and a per-module alpha: the raw-folder reader must take the scale from adapter_config.json as PEFT does
    raw = _peft_adapter(base, root / "raw", LLAMA_TARGETS, seed=3, use_rslora=True, alpha_pattern={"down_proj": 3})
    return base, raw


def test_an_adapter_that_makes_peft_rewrite_the_base_is_refused(gpt2_setup, tmp_path):
    """PiSSA-style initialisation changes the base weights when PEFT loads the folder, and exclude_modules drops
    factors: the plora loader would run another model than PEFT, so it refuses both."""
    from plora.loader.source import read_adapter

    _, _, raw, _, _ = gpt2_setup
    for key, value in (("init_lora_weights", "pissa"), ("exclude_modules", ["transformer.h.0.attn.c_attn"])):
        folder = Path(shutil.copytree(raw[0], tmp_path / key))
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(LoaderError, match=key):
            read_adapter(folder)


@pytest.mark.parametrize(("key", "value"), [("layers_to_transform", [0]), ("alora_invocation_tokens", [5, 6])])
def test_a_raw_adapter_peft_runs_differently_from_plain_lora_is_refused(gpt2_setup, tmp_path, key, value):
    """PEFT applies a layers_to_transform adapter to the listed layers only, and an aLoRA one only after its invocation
    tokens; injecting every factor everywhere gave logits 5-7 nats away from PEFT's, so the loader refuses them."""
    base, _, raw, _, _ = gpt2_setup
    folder = Path(shutil.copytree(raw[0], tmp_path / key))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, key: value}))
    before = _snapshot(base)
    for mode in ("side", "merged"):
        with pytest.raises(LoaderError, match=f"{key} must be empty"):
            inject(base, folder, mode=mode)
    assert _snapshot(base) == before and _no_hooks(base) and not active_injections(base)


@pytest.mark.parametrize("bad", ["nan", "inf", "huge_alpha"])
def test_factors_that_make_the_model_non_finite_are_refused(gpt2_setup, tmp_path, bad):
    """A NaN or Inf factor (or an alpha whose scale overflows float32) used to be injected: every logit of a side
    path became NaN, and a merged one wrote NaN into the weights. Now refused, the model untouched."""
    from safetensors.numpy import load_file, save_file

    base, _, raw, _, _ = gpt2_setup
    folder = Path(shutil.copytree(raw[0], tmp_path / bad))
    if bad == "huge_alpha":
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 1e300}))
        message = "overflows its torch.float32 weight"
    else:
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        key = sorted(tensors)[-1]
        tensors[key] = tensors[key].copy()
        tensors[key][0, 0] = np.nan if bad == "nan" else -np.inf
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        message = "NaN or Inf in its LoRA factors"
    before = _snapshot(base)
    for mode in ("side", "merged"):
        with pytest.raises(LoaderError, match=message):
            inject(base, folder, mode=mode)
    assert _snapshot(base) == before and _no_hooks(base) and not active_injections(base)


def test_finite_factors_whose_squares_overflow_are_not_mistaken_for_nan(gpt2_setup, tmp_path):
    """The finiteness check makes one pass over the file (a float32 dot product); a large but finite factor
    overflows that sum, and the check then goes factor by factor instead of refusing."""
    from safetensors.numpy import load_file, save_file

    from plora.loader import read_adapter

    _, _, raw, _, _ = gpt2_setup
    folder = Path(shutil.copytree(raw[0], tmp_path / "large"))
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].copy()
    tensors[key][0, 0] = 3e19  # finite; its square is past float32's range
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    assert float(read_adapter(folder).modules[key.split(".lora_")[0].removeprefix("base_model.model.")][0][0, 0]) == \
        np.float32(3e19)


def test_a_merged_inject_into_a_tied_weight_is_refused(gpt2_setup, tmp_path):
    """GPT-2's lm_head.weight is the input embedding: merging a LoRA on lm_head in place changed the embedding too,
    logits 6 nats away from PEFT's (and from side mode). Merged mode refuses it; side mode matches PEFT."""
    from safetensors.numpy import load_file, save_file

    base, _, _, _, _ = gpt2_setup
    folder = _peft_adapter(base, tmp_path / "head", ["lm_head"], seed=5)
    tensors = load_file(str(folder / "adapter_model.safetensors"))  # PEFT also saves the tied base layer: drop it
    save_file({k: v for k, v in tensors.items() if ".lora_" in k}, str(folder / "adapter_model.safetensors"))
    before = _snapshot(base)
    with pytest.raises(LoaderError, match="shares its weight with transformer.wte.weight"):
        inject(base, folder, mode="merged")
    assert _snapshot(base) == before and not active_injections(base)
    _, theirs = _peft_logits(base, [folder])
    with injected(base, folder, mode="side"), torch.no_grad():
        assert torch.equal(base(_ids()).logits, theirs)
    assert _snapshot(base) == before and _no_hooks(base)


@pytest.mark.parametrize("mode", ["side", "merged"])
def test_gpt2_conv1d_logits_match_peft_unmerged(gpt2_setup, mode):
    base, _, raw, plasmids, _ = gpt2_setup
    _, want = _peft_logits(base, [raw[0]])
    before = _snapshot(base)
    with torch.no_grad(), injected(base, raw[0], mode=mode):  # a raw PEFT folder: no plora.yml
        got = base(_ids()).logits
    assert (got - want).abs().max().item() < 1e-5
    with torch.no_grad(), injected(base, plasmids[0], mode=mode):  # the same factors as a plasmid
        assert (base(_ids()).logits - want).abs().max().item() < 1e-5
    assert _snapshot(base) == before and _no_hooks(base)


@pytest.mark.parametrize("mode", ["side", "merged"])
def test_llama_linear_logits_match_peft_unmerged(llama_setup, mode):
    base, raw = llama_setup
    _, want = _peft_logits(base, [raw])
    before = _snapshot(base)
    with torch.no_grad():
        plain = base(_ids()).logits
        h = inject(base, raw, mode=mode)
        got = base(_ids()).logits
        remove(base, h)
    assert (plain - want).abs().max().item() > 1e-3  # the adapter does change the output
    assert (got - want).abs().max().item() < 1e-5
    assert _snapshot(base) == before and _no_hooks(base)


def test_stacked_remove_in_any_order_is_bit_exact(gpt2_setup):
    base, digest, _, plasmids, _ = gpt2_setup
    before = _snapshot(base)
    with torch.no_grad():
        # reference: only p0 then p2 merged into the original model
        h0 = inject(base, plasmids[0], mode="merged", weight=0.7)
        h2 = inject(base, plasmids[2], mode="merged", weight=-0.5)
        only_0_2 = _snapshot(base)
        remove(base, h0)
        remove(base, h2)
        assert _snapshot(base) == before

        handles = [
            inject(base, plasmids[0], mode="merged", weight=0.7),
            inject(base, plasmids[1], mode="merged"),
            inject(base, plasmids[1], mode="side", weight=2.0),
            inject(base, plasmids[2], mode="merged", weight=-0.5),
        ]
        assert [h.mode for h in active_injections(base)] == ["merged", "merged", "side", "merged"]
        remove(base, handles[1])  # from the middle of the merged stack
        assert _snapshot(base) == only_0_2  # as if p1 had never been merged
        for h in (handles[3], handles[2], handles[0]):
            remove(base, h)
    assert _snapshot(base) == before and _no_hooks(base) and not active_injections(base)
    with pytest.raises(LoaderError, match="already removed"):
        remove(base, handles[0])


def test_context_manager_restores_on_exception(gpt2_setup):
    base, _, _, plasmids, _ = gpt2_setup
    before = _snapshot(base)
    for mode in ("side", "merged"):
        with pytest.raises(RuntimeError, match="boom"), injected(base, plasmids[0], mode=mode):
            assert _snapshot(base) != before or not _no_hooks(base)
            raise RuntimeError("boom")
        assert _snapshot(base) == before and _no_hooks(base)


def test_refused_before_touching_weights(gpt2_setup, llama_setup, tmp_path, monkeypatch):
    from plora.loader import source

    base, digest, raw, plasmids, _ = gpt2_setup
    before = _snapshot(base)
    other = _as_plasmid(raw[0], tmp_path / "other", "f" * 64, "other")
    wide = _gpt2(width=96)
    wrong_shape = _as_plasmid(
        _peft_adapter(wide, tmp_path / "wide", GPT2_TARGETS, seed=5), tmp_path / "ws", digest, "ws"
    )
    for mode in ("side", "merged"):
        with pytest.raises(LoaderError, match="another base"):
            inject(base, other, mode=mode)
        with pytest.raises(LoaderError, match="features"):
            inject(base, wrong_shape, mode=mode)
        with pytest.raises(LoaderError, match="does not exist"):
            inject(base, llama_setup[1], mode=mode)  # a Llama adapter into GPT-2
        assert _snapshot(base) == before and _no_hooks(base)
    inject(base, other, check_base=False)  # the caller may waive the base check knowingly
    with pytest.raises(LoaderError, match="another base"):
        inject(base, plasmids[0], expected_digest="0" * 64)
    assert len(active_injections(base)) == 1
    remove(base, active_injections(base)[0])
    # a tampered artifact is refused: its hash no longer matches the manifest
    art = plasmids[0] / "adapter_model.safetensors"
    data = art.read_bytes()
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in plasmids[0].iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    (tampered / art.name).write_bytes(data[:-4] + bytes(4))
    with pytest.raises(LoaderError, match="SHA-256"):
        inject(base, tampered)
    # the hash is remembered per file version only: a verified file changed in place is hashed again and refused
    inplace = tmp_path / "inplace"
    inplace.mkdir()
    for f in plasmids[0].iterdir():
        (inplace / f.name).write_bytes(f.read_bytes())
    os.utime(inplace / art.name, ns=(10**18, 10**18))  # an old mtime: the rewrite below changes it whatever the tick
    monkeypatch.setattr(source, "_RACY_NS", -1)  # files written a moment ago count as settled here
    remove(base, inject(base, inplace))
    assert any(v == read_plasmid(inplace).manifest.artifact.sha256 for v in source._VERIFIED.values())
    (inplace / art.name).write_bytes(data[:-4] + bytes(4))
    with pytest.raises(LoaderError, match="SHA-256"):
        inject(base, inplace)
    assert _snapshot(base) == before and _no_hooks(base)


def test_failure_half_way_leaves_model_as_it_was(gpt2_setup, monkeypatch):
    from plora.loader import hotload as inject_module

    base, _, _, plasmids, _ = gpt2_setup
    before = _snapshot(base)
    real, calls = inject_module._add_delta, []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")
        return real(*args)

    monkeypatch.setattr(inject_module, "_add_delta", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        inject(base, plasmids[0], mode="merged")
    assert len(calls) == 3 and _snapshot(base) == before and not active_injections(base)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("linear", {}),
        ("cat", {}),
        ("svd", {}),
        ("ties", {"density": 0.5}),
        ("dare_linear", {"density": 0.6}),
        ("dare_ties", {"density": 0.6}),
    ],
)
def test_merge_matches_peft_add_weighted_adapter(gpt2_setup, tmp_path, monkeypatch, method, kwargs):
    base, _, raw, plasmids, _ = gpt2_setup
    weights = [0.6, -0.4]
    # PEFT's dare draws its masks from torch's global generator, which its own layer init also consumes; route
    # torch.bernoulli through one generator, reseeded before each merge, so both draw the same masks in the same order.
    gen, bernoulli = torch.Generator(), torch.bernoulli
    monkeypatch.setattr(torch, "bernoulli", lambda t, *a, **k: bernoulli(t, generator=gen))
    from peft import PeftModel

    pm = PeftModel.from_pretrained(copy.deepcopy(base), str(raw[0]), adapter_name="a0")
    pm.load_adapter(str(raw[1]), adapter_name="a1")
    gen.manual_seed(7)
    pm.add_weighted_adapter(["a0", "a1"], weights, "merged", combination_type=method, **kwargs)
    gen.manual_seed(7)
    manifest = merge_plasmids(plasmids[:2], weights, method=method, out=tmp_path / "m", seed=7, **kwargs)
    assert manifest.merge.method == method and [s.weight for s in manifest.merge.sources] == weights
    assert [s.plasmid_id for s in manifest.merge.sources] == ["p0", "p1"]
    merged = read_plasmid(tmp_path / "m")
    worst = 0.0
    for module in merged.modules():
        a, b = (torch.from_numpy(t) for t in merged.pair(module))
        ours = (b @ a) * merged.scaling
        layer = pm.base_model.model.get_submodule(module)
        theirs = layer.lora_B["merged"].weight @ layer.lora_A["merged"].weight * layer.scaling["merged"]
        worst = max(worst, (ours - theirs).abs().max().item())
    assert worst < 1e-5


def test_merge_cli_writes_plasmid_that_loads_in_peft(gpt2_setup, tmp_path):
    from typer.testing import CliRunner

    from plora.cli.main import app

    base, _, _, plasmids, _ = gpt2_setup
    out = tmp_path / "merged"
    args = ["merge", "--plasmids", f"{plasmids[0]},{plasmids[1]}", "--weights", "0.6,0.4", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "p0 x 0.6" in res.output
    m = read_plasmid(out).manifest
    assert m.merge is not None and m.training.dataset == "merge" and m.base_model.digest == model_digest(base)
    # the merged plasmid is PEFT-compatible and our injection gives PEFT's logits
    _, want = _peft_logits(base, [out])
    with torch.no_grad(), injected(base, out):
        assert (base(_ids()).logits - want).abs().max().item() < 1e-5
    bad = CliRunner().invoke(app, ["merge", "--plasmids", str(plasmids[0]), "--weights", "1,2", "--out", str(out)])
    assert bad.exit_code != 0 and isinstance(bad.exception, LoaderError)


def test_merge_refuses_mismatched_sources(gpt2_setup, tmp_path):
    base, digest, raw, plasmids, root = gpt2_setup
    other = _as_plasmid(raw[0], tmp_path / "other", "e" * 64, "other")
    r8 = _as_plasmid(_peft_adapter(base, tmp_path / "r8", GPT2_TARGETS, seed=4, r=8), tmp_path / "p8", digest, "p8")
    with pytest.raises(LoaderError, match="cannot merge"):
        merge_plasmids([plasmids[0], other], [0.5, 0.5], out=tmp_path / "x")
    with pytest.raises(LoaderError, match="equal ranks"):
        merge_plasmids([plasmids[0], r8], [0.5, 0.5], out=tmp_path / "x")
    with pytest.raises(LoaderError, match="density"):
        merge_plasmids([plasmids[0], plasmids[1]], [0.5, 0.5], method="ties", out=tmp_path / "x")
    with pytest.raises(LoaderError, match="plora.yml"):
        merge_plasmids([raw[0], plasmids[1]], [0.5, 0.5], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    m = merge_plasmids([plasmids[0], r8], [0.5, 0.5], method="cat", out=tmp_path / "cat")
    assert m.lora.r == 12


def test_latency_measured_and_budget_enforced(gpt2_setup, monkeypatch):
    base, _, _, plasmids, _ = gpt2_setup
    before = _snapshot(base)
    stats = {mode: measure_inject_remove(base, plasmids[0], mode=mode, repeats=5) for mode in ("side", "merged")}
    assert all(s.repeats == 5 and 0 < s.min_ms <= s.median_ms <= s.max_ms for s in stats.values())
    assert _snapshot(base) == before and _no_hooks(base)
    assert check_latency_budget(stats["side"].median_ms, budget_ms=1e6) == 1e6
    monkeypatch.setenv("PLORA_LATENCY_BUDGET_MS", "0.000001")
    with pytest.raises(LoaderError, match="PLORA_LATENCY_BUDGET_MS"):
        check_latency_budget(stats["side"].median_ms)
    with pytest.raises(LoaderError, match="merged-mode inject"):
        enforce_latency_budget(base, plasmids[0], repeats=2)
    monkeypatch.setenv("PLORA_LATENCY_BUDGET_MS", "250")
    assert check_latency_budget(stats["side"].median_ms) == 250.0
    assert _snapshot(base) == before and _no_hooks(base)


def test_plasmid_object_and_numpy_tensors(gpt2_setup):
    base, _, _, plasmids, _ = gpt2_setup
    p = read_plasmid(plasmids[2])
    assert all(isinstance(v, np.ndarray) for v in p.tensors.values())
    before = _snapshot(base)
    with torch.no_grad():
        h = inject(base, p, mode="merged")
        assert _snapshot(base) != before
        remove(base, h)
    assert _snapshot(base) == before


def test_trained_plasmid_on_plora_tiny(plora_tiny, gpt2_setup, request):
    """The real thing: a plasmid trained by plora on the shipped base, base digest checked, against PEFT."""
    from peft import PeftModel

    from plora.errors import ModelError

    try:
        base = plora_tiny()
    except ModelError as err:
        pytest.skip(f"plora-tiny not built here: {err}")
    legal_plasmid = request.getfixturevalue("legal_plasmid")  # trained once per session by the training fixtures
    model = base.model
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = PeftModel.from_pretrained(copy.deepcopy(model), str(legal_plasmid)).eval()(ids).logits
        before = _snapshot(model)
        for mode in ("side", "merged"):
            with injected(base, legal_plasmid, mode=mode):  # a LoadedBase: its digest is checked, not recomputed
                # float32 rounding only: merged weights round differently, and trained logits reach ~20
                torch.testing.assert_close(model(ids).logits, want, rtol=1e-5, atol=1e-5)
            assert _snapshot(model) == before and _no_hooks(model)
    with pytest.raises(LoaderError, match="another base"):
        inject(gpt2_setup[0], legal_plasmid)  # the same plasmid offered to a different base model


def _folder_tree(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else b"") for p in folder.rglob("*"))


def test_merge_out_never_overwrites_a_source_or_other_files(gpt2_setup, tmp_path):
    from typer.testing import CliRunner

    from plora.cli.main import app
    from plora.outputs import OutputError

    _, _, _, plasmids, root = gpt2_setup
    src = f"{plasmids[0]},{plasmids[1]}"
    sources = {p: _folder_tree(p) for p in plasmids[:2]}

    def merge(out, *extra):
        return CliRunner().invoke(app, ["merge", "--plasmids", src, "--out", str(out), *extra])

    for out in (plasmids[0], root, plasmids[1] / "inner"):  # a source, a folder holding them, a folder inside one
        for extra in ((), ("--force",)):
            res = merge(out, *extra)
            assert isinstance(res.exception, OutputError) and "overlaps the source" in str(res.exception)
    with pytest.raises(OutputError, match="overlaps the source"):  # the library refuses too
        merge_plasmids([plasmids[0], plasmids[1]], [0.5, 0.5], out=plasmids[1])
    assert {p: _folder_tree(p) for p in plasmids[:2]} == sources
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    res = merge(busy)
    assert isinstance(res.exception, OutputError) and "notes.txt" in str(res.exception)
    assert (busy / "notes.txt").read_text() == "mine"
    assert merge(busy, "--force").exit_code == 0
    assert sorted(p.name for p in busy.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "plora.yml"]


def test_a_folder_where_a_file_belongs_is_a_loader_error(gpt2_setup, tmp_path):
    from plora.loader.source import read_adapter

    base, _, _, plasmids, _ = gpt2_setup
    before = _snapshot(base)
    for name in ("adapter_model.safetensors", "adapter_config.json", "plora.yml"):
        bad = tmp_path / name.split(".")[0]
        bad.mkdir()
        for f in plasmids[0].iterdir():
            (bad / f.name).write_bytes(f.read_bytes())
        (bad / name).unlink()
        (bad / name).mkdir()
        calls = (
            (read_adapter, (bad,), {}),
            (inject, (base, bad), {}),
            (merge_plasmids, ([bad, plasmids[1]], [0.5, 0.5]), {"out": tmp_path / "m"}),
        )
        for call, args, kwargs in calls:
            with pytest.raises(LoaderError) as err:
                call(*args, **kwargs)
            assert name in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(base) == before and _no_hooks(base) and not (tmp_path / "m").exists()


def test_merge_library_keeps_a_users_folder_unless_force(gpt2_setup, tmp_path):
    from plora.outputs import OutputError

    _, _, _, plasmids, _ = gpt2_setup
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        merge_plasmids(plasmids[:2], [0.5, 0.5], out=busy)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"] and (busy / "notes.txt").read_text() == "mine"
    first = merge_plasmids(plasmids[:2], [0.5, 0.5], out=tmp_path / "m")  # a folder holding only a plasmid ...
    again = merge_plasmids(plasmids[:2], [0.7, 0.3], out=tmp_path / "m")  # ... is replaced without force
    assert first.artifact.sha256 != again.artifact.sha256 == read_plasmid(tmp_path / "m").manifest.artifact.sha256
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out in (afile, plasmids[1]):  # force never replaces a file or a source
        with pytest.raises(OutputError):
            merge_plasmids(plasmids[:2], [0.5, 0.5], out=out, force=True)
    assert afile.read_text() == "mine"
    merge_plasmids(plasmids[:2], [0.5, 0.5], out=busy, force=True)
    assert sorted(p.name for p in busy.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "plora.yml"]


def _rewritten_safetensors(src, dst, edit):
    """Copy the adapter folder ``src`` to ``dst`` with its safetensors rebuilt by ``edit(entries, body)`` ->
    (entries as a list of (key, value) pairs, so a key may repeat, body bytes)."""
    shutil.copytree(src, dst)
    raw = (dst / "adapter_model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    entries, body = edit(list(json.loads(raw[8 : 8 + n]).items()), raw[8 + n :])
    text = ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in entries) + "}").encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors writes it
    (dst / "adapter_model.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + body)
    return dst


def test_safetensors_files_safetensors_refuses_are_refused(gpt2_setup, tmp_path):
    from safetensors.torch import load

    from plora.loader.source import read_adapter

    base, _, raw, _, _ = gpt2_setup
    a_attn, a_proj = (f"base_model.model.transformer.h.0.attn.{m}.lora_A.weight" for m in ("c_attn", "c_proj"))

    def trailing(entries, body):
        return entries, body + b"\0" * 16

    def overlapping(entries, body):  # two (4, 64) factors read from the same bytes
        offsets = dict(entries)[a_attn]["data_offsets"]
        return [(k, {**v, "data_offsets": offsets} if k == a_proj else v) for k, v in entries], body

    def duplicate(entries, body):
        return entries + [e for e in entries if e[0] == a_attn], body

    before = _snapshot(base)
    cases = {"trailing": (trailing, "not fully covered"), "overlap": (overlapping, "without gaps or overlaps")}
    cases["duplicate"] = (duplicate, "duplicate key")
    for name, (edit, message) in cases.items():
        bad = _rewritten_safetensors(raw[0], tmp_path / name, edit)
        if name != "duplicate":  # safetensors' own rule (its JSON reader keeps one of two equal keys)
            with pytest.raises(Exception, match="(?i)invalid offset|not fully covered"):
                load((bad / "adapter_model.safetensors").read_bytes())
        for call in (read_adapter, lambda f: inject(base, f)):
            with pytest.raises(LoaderError, match=message) as err:
                call(bad)
            assert "adapter_model.safetensors" in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(base) == before and _no_hooks(base)
    read_adapter(_rewritten_safetensors(raw[0], tmp_path / "same", lambda e, b: (e, b)))  # the rebuild itself is fine


def test_factors_outside_the_declared_targets_or_given_twice_are_refused(gpt2_setup, tmp_path):
    from safetensors.numpy import load_file, save_file

    from plora.loader.source import read_adapter

    base, digest, _, plasmids, _ = gpt2_setup
    raw = _peft_adapter(base, tmp_path / "raw", ["c_attn", "c_proj"], seed=21)
    tensors = load_file(str(raw / "adapter_model.safetensors"))
    extra = {f"base_model.model.transformer.h.0.mlp.c_fc.lora_{w}.weight": np.ones(s, np.float32) * 0.1
             for w, s in (("A", (4, 64)), ("B", (256, 4)))}
    # a plasmid whose manifest (sha fixed) and adapter_config declare c_attn, c_proj but whose file adds c_fc
    smuggled = _as_plasmid(raw, tmp_path / "smuggled", digest, "smuggled", target_set="custom")
    config = json.loads((raw / "adapter_config.json").read_text())
    write_plasmid(smuggled, {**tensors, **extra}, config, **{
        k: getattr(read_plasmid(smuggled).manifest, k)
        for k in ("plasmid_id", "domain", "created_at", "base_model", "lora", "training")
    })
    b_key = "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"
    twice = tmp_path / "twice"  # lora_B given as .weight and as .default.weight: which one would PEFT take?
    shutil.copytree(raw, twice)
    save_file({**tensors, b_key.replace(".weight", ".default.weight"): tensors[b_key] * 2},
              str(twice / "adapter_model.safetensors"))
    regex = tmp_path / "regex"  # a regex target_modules, as PEFT writes it, matched against the whole name
    shutil.copytree(raw, regex)
    (regex / "adapter_config.json").write_text(json.dumps({**config, "target_modules": r".*\.attn\.c_attn"}))
    before = _snapshot(base)
    cases = [
        (smuggled, "mlp.c_fc, outside the declared"),
        (read_plasmid(smuggled), "mlp.c_fc, outside the declared lora.targets"),
        (twice, "two lora_B tensors"),
        (regex, r"attn.c_proj.*outside the declared target_modules '\.\*"),
    ]
    for bad, message in cases:
        for call in (read_adapter, lambda p: inject(base, p, mode="merged")):
            with pytest.raises(LoaderError, match=message) as err:
                call(bad)
            assert "\n" not in str(err.value)
    with pytest.raises(LoaderError, match="mlp.c_fc, outside the declared"):
        merge_plasmids([plasmids[0], smuggled], [0.5, 0.5], out=tmp_path / "m")
    assert _snapshot(base) == before and _no_hooks(base) and not (tmp_path / "m").exists()
    (regex / "adapter_config.json").write_text(json.dumps({**config, "target_modules": r".*\.(c_attn|c_proj)"}))
    _, want = _peft_logits(base, [regex])
    with torch.no_grad(), injected(base, regex):
        assert (base(_ids()).logits - want).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lora_alpha": "abc"}, "lora_alpha must be a finite number"),
        ({"lora_alpha": [1]}, "lora_alpha must be a finite number"),
        ({"lora_alpha": float("nan")}, "lora_alpha must be a finite number"),
        ({"r": None}, "r must be a positive integer"),
        ({"r": 0}, "r must be a positive integer"),
        ({"r": True}, "r must be a positive integer"),
        ({"rank_pattern": {"(": 2}}, "rank_pattern key '\\(' is not a valid regex"),
        ({"rank_pattern": [1]}, "rank_pattern must map module patterns to positive integers"),
        ({"rank_pattern": {"c_fc": 0}}, "rank_pattern must map module patterns to positive integers"),
        ({"alpha_pattern": {"c_fc": "x"}}, "alpha_pattern must map module patterns to finite numbers"),
    ],
)
def test_bad_adapter_config_values_are_one_line_errors(gpt2_setup, tmp_path, capsys, change, message):
    from plora.cli.main import main
    from plora.loader.source import read_adapter

    base, _, raw, plasmids, _ = gpt2_setup
    bad = tmp_path / "bad"
    shutil.copytree(raw[0], bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**config, **change}))
    for call in (read_adapter, lambda f: inject(base, f)):
        with pytest.raises(LoaderError, match=message):
            call(bad)
    assert _no_hooks(base)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["merge", "--plasmids", f"{plasmids[0]},{bad}", "--out", str(tmp_path / "xx")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message.split()[0] in err
    assert not (tmp_path / "xx").exists()


def test_latency_budget_must_be_a_positive_finite_number(monkeypatch):
    from plora.errors import PloraError
    from plora.settings import get_settings

    for raw in ("nan", "inf", "-inf", "0", "-5", "abc"):
        monkeypatch.setenv("PLORA_LATENCY_BUDGET_MS", raw)
        with pytest.raises(PloraError, match=f"PLORA_LATENCY_BUDGET_MS must be a positive number.*{raw}"):
            get_settings()
        with pytest.raises(PloraError, match="PLORA_LATENCY_BUDGET_MS"):
            check_latency_budget(1e9)  # never passes silently
    for budget in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(LoaderError, match="budget_ms must be a positive number"):
            check_latency_budget(1e9, budget_ms=budget)
    monkeypatch.setenv("PLORA_LATENCY_BUDGET_MS", " 0.5 ")
    assert get_settings().latency_budget_ms == 0.5


def test_a_single_source_merge_records_and_prints_the_linear_merge_applied(gpt2_setup, tmp_path):
    from typer.testing import CliRunner

    from plora.cli.main import app

    base, _, _, plasmids, _ = gpt2_setup
    out = tmp_path / "one"
    args = ["merge", "--plasmids", str(plasmids[0]), "--method", "ties", "--density", "0.3", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "(linear)" in res.output and "(ties)" not in res.output and "merged linearly" in res.output
    m = read_plasmid(out).manifest
    assert m.merge.method == "linear" and m.merge.density is None
    # what was recorded is what was applied: the same factors as an explicit linear merge
    linear = merge_plasmids([plasmids[0]], [1.0], method="linear", out=tmp_path / "lin")
    assert linear.artifact.sha256 == m.artifact.sha256
    two = merge_plasmids(plasmids[:2], [0.5, 0.5], method="ties", density=0.3, out=tmp_path / "two")
    assert (two.merge.method, two.merge.density) == ("ties", 0.3)


def test_latency_repeats_and_warmup_are_checked_with_one_line_errors(gpt2_setup):
    import subprocess
    import sys

    base, _, _, plasmids, _ = gpt2_setup
    for kwargs, message in (({"warmup": -1, "repeats": 1}, "warmup must be"), ({"repeats": 0}, "repeats must be")):
        with pytest.raises(LoaderError, match=message):
            measure_inject_remove(base, plasmids[0], **kwargs)
    assert measure_inject_remove(base, plasmids[0], warmup=0, repeats=1).repeats == 1
    bench = Path(__file__).resolve().parents[1] / "bench" / "runtime.py"
    for flag in ("--repeats", "--threads", "--rank"):
        done = subprocess.run([sys.executable, str(bench), flag, "0"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and flag in done.stderr, done.stderr
        assert ">= 1, got 0" in done.stderr and "Traceback" not in done.stderr


def test_injections_do_not_share_the_callers_factor_arrays(gpt2_setup):
    from plora.loader.source import read_adapter

    base, _, _, plasmids, _ = gpt2_setup
    clean = _snapshot(base)
    with torch.no_grad():
        p = read_plasmid(plasmids[2])
        with injected(base, p, mode="merged"):
            alone = _snapshot(base)  # p merged alone, as a fresh injection gives it
        src = read_adapter(plasmids[2])
        for source, arrays in ((p, list(p.tensors.values())), (src, [t for f in src.modules.values() for t in f[:2]])):
            h = inject(base, source, mode="side")
            want = base(_ids()).logits
            for t in arrays:
                t *= 3.0  # the caller changes its arrays after the injection
            assert torch.equal(base(_ids()).logits, want)
            remove(base, h)
        p = read_plasmid(plasmids[2])
        # merged: an out-of-order remove replays p's factors; they must be the ones injected
        first = inject(base, plasmids[0], mode="merged")
        h = inject(base, p, mode="merged")
        for t in p.tensors.values():
            t *= 3.0
        remove(base, first)
        assert _snapshot(base) == alone
        remove(base, h)
    assert _snapshot(base) == clean and _no_hooks(base)


def test_merged_swaps_reuse_their_backup_buffers_and_stay_bit_exact(gpt2_setup):
    """A merged remove keeps the freed backup for the module's next merged inject (fresh pages cost more than the
    copy); the weights stay bit for bit; release_buffers frees what is kept."""
    from plora.loader import release_buffers
    from plora.loader.hotload import _state

    base, _, _, plasmids, _ = gpt2_setup
    release_buffers(base)
    before = _snapshot(base)
    h = inject(base, plasmids[0], mode="merged")
    st = _state(base)
    first = {name: stack[-1].backup.data_ptr() for name, stack in st.stacks.items()}
    remove(base, h)
    assert _snapshot(base) == before and set(st.spare) == set(first)
    h = inject(base, plasmids[1], mode="merged", weight=0.5)  # the same modules: their buffers are reused
    assert {name: stack[-1].backup.data_ptr() for name, stack in st.stacks.items()} == first and not st.spare
    with_p1 = _snapshot(base)
    remove(base, h)
    assert _snapshot(base) == before
    again = inject(base, plasmids[1], mode="merged", weight=0.5)
    assert _snapshot(base) == with_p1  # a reused buffer changes nothing in the result
    remove(base, again)
    assert release_buffers(base) == len(first) and not st.spare and _snapshot(base) == before
