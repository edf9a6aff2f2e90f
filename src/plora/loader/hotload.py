"""Hot-load a plasmid into a live model and take it out again without a trace.

    >>> import torch
    >>> from plora.models import load_base
    >>> from plora.loader import inject, remove, injected
    >>> base = load_base("plora-tiny")
    >>> ids = base.tokenizer("Question: What reporter is 'A.2d'? Answer:", return_tensors="pt").input_ids
    >>> plain = base.model(ids).logits
    >>> h = inject(base, "out/legal", mode="side")
    >>> bool((base.model(ids).logits - plain).abs().max() > 0)     # the plasmid changes the output
    True
    >>> remove(base, h)                                              # state dict equal to before, bit for bit
    >>> with injected(base, "out/medical", mode="merged", weight=0.5):
    ...     tokens = base.model.generate(ids, max_new_tokens=3, do_sample=False)
    >>> torch.equal(base.model(ids).logits, plain)
    True

Two modes:

* ``side``: a forward hook on each target module adds ``B(A(x)) * scale * weight`` to its output, exactly PEFT's
  unmerged LoRA forward. No base weight is copied or written, so removal is unhooking.
* ``merged``: each touched weight is backed up, then ``(B @ A) * scale * weight`` (transposed for GPT-2's Conv1D,
  whose weight is (in, out)) is added in place by one fused ``addmm_`` (PEFT's ``merge`` up to float rounding).
  Forward passes cost nothing extra; removal ``copy_``s the backup back (add-then-subtract is not bit-exact in
  float32). The backup buffer a removal frees is kept for the module's next merged inject (fresh pages cost more
  than the copy: ~25,000 page faults per swap on SmolLM2); :func:`release_buffers` frees them. Not thread-safe:
  inject and remove from the thread that runs the model.

Stacking: any number of plasmids, in both modes, may be injected at once; side paths add up. Merged plasmids touch a
weight in injection order, ``W0 + d1 + d2 + ...``. Removing one, in any order, leaves each touched weight bit for bit
as if only the remaining plasmids had been injected into the original model, in their original order; removing them
all gives back the original weights exactly.

Validation happens before any weight is touched: every target module must exist and be ``nn.Linear`` or GPT-2's
``Conv1D``, every factor must fit its weight (in merged mode, a weight no other module shares), and (for a plasmid
with a manifest) the live model's weights digest must equal ``manifest.base_model.digest``. Computing that digest
reads every weight, so it is cached per model object; pass ``expected_digest`` (e.g. ``LoadedBase.digest``) to skip
it, ``check_base=False`` to skip the check, or :func:`forget_digest` after changing the weights yourself. A failure
half-way through leaves the model as it was.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from plora.errors import LoaderError
from plora.loader.source import AdapterSource, read_adapter
from plora.plasmid import Plasmid

Mode = Literal["side", "merged"]
PlasmidLike = str | os.PathLike[str] | Plasmid | AdapterSource
_ids = itertools.count(1)


@dataclass(eq=False)
class InjectionHandle:
    """What :func:`inject` did; pass it to :func:`remove`. ``active`` turns False once removed."""

    label: str
    mode: Mode
    weight: float
    modules: tuple[str, ...]
    id: int = field(default_factory=lambda: next(_ids))
    active: bool = True
    _model: Any = field(default=None, repr=False)
    _hooks: list[Any] = field(default_factory=list, repr=False)
    # merged mode: module name -> (A, B, scale * weight, conv1d) so a weight can be rebuilt after an out-of-order remove
    _factors: dict[str, tuple[torch.Tensor, torch.Tensor, float, bool]] = field(default_factory=dict, repr=False)


@dataclass
class _Entry:
    handle: InjectionHandle
    backup: torch.Tensor  # the weight's value just before this handle's delta was added


@dataclass
class _ModelState:
    digest: str | None = None
    stacks: dict[str, list[_Entry]] = field(default_factory=dict)  # module name -> merged entries, oldest first
    handles: list[InjectionHandle] = field(default_factory=list)
    # module name -> a backup buffer freed by a merged remove, reused by the next merged inject of that module:
    # allocating ~100 MB of fresh pages per inject (SmolLM2) cost more than copying into them (release_buffers)
    spare: dict[str, torch.Tensor] = field(default_factory=dict)
    shared: dict[int, list[str]] | None = None  # _shared_weights, found once per model (74 us on plora-tiny)


_STATE: weakref.WeakKeyDictionary[nn.Module, _ModelState] = weakref.WeakKeyDictionary()


def _state(model: nn.Module) -> _ModelState:
    st = _STATE.get(model)
    if st is None:
        st = _STATE[model] = _ModelState()
    return st


def _unwrap(model: Any) -> tuple[nn.Module, str | None]:
    """Accept a module or a ``plora.models.LoadedBase`` (whose known digest then saves recomputing it)."""
    if isinstance(model, nn.Module):
        return model, None
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner, getattr(model, "digest", None)
    raise LoaderError(f"expected a torch model or a LoadedBase, got {type(model).__name__}")


def model_digest(model: nn.Module | Any) -> str:
    """``plora.models.weights_digest`` of the model's original weights, cached per model object."""
    model, known = _unwrap(model)
    st = _state(model)
    if known is not None:
        st.digest = known
    if st.digest is None:
        if st.stacks:
            raise LoaderError(
                "cannot compute the base digest of a model that carries merged plasmids; "
                "pass expected_digest=... or check_base=False"
            )
        try:
            from plora.models import weights_digest
        except ImportError:  # the package re-export may not be there in a partial checkout
            from plora.models.digest import weights_digest

        st.digest = weights_digest(model)
    return st.digest


def forget_digest(model: nn.Module) -> None:
    """Drop the cached digest and tied-weight map (call after changing the base weights or ties outside the loader)."""
    st = _STATE.get(_unwrap(model)[0])
    if st is not None:
        st.digest = None
        st.shared = None


def release_buffers(model: nn.Module | Any) -> int:
    """Free the backup buffers kept for the next merged inject (one per module a merged plasmid touched and no
    longer does: as much memory as those weights); returns how many were freed. Nothing else changes."""
    st = _STATE.get(_unwrap(model)[0])
    if st is None:
        return 0
    n = len(st.spare)
    st.spare.clear()
    return n


def _backup(st: _ModelState, name: str, w: torch.Tensor) -> torch.Tensor:
    """A copy of ``w``: into the module's spare buffer when it fits, else freshly allocated."""
    spare = st.spare.pop(name, None)
    if spare is None or spare.shape != w.shape or spare.dtype != w.dtype or spare.device != w.device:
        return w.detach().clone()
    return spare.copy_(w)


def active_injections(model: nn.Module | Any) -> list[InjectionHandle]:
    """Handles still injected in ``model``, oldest first."""
    st = _STATE.get(_unwrap(model)[0])
    return list(st.handles) if st else []


def _find(model: nn.Module, name: str) -> nn.Module | None:
    # get_submodule goes through nn.Module.__getattr__ for every dotted part; submodules live in _modules, and
    # reading that dict directly is several times faster on the inject hot path.
    module = model
    for part in name.split("."):
        module = module._modules.get(part)
        if module is None:
            return None
    return module


def _layout(
    model: nn.Module, name: str, a: torch.Tensor, b: torch.Tensor, label: str
) -> tuple[nn.Module, torch.Tensor, bool]:
    """The target module and whether it is a Conv1D (weight (in, out)); LoaderError when the factors do not fit."""
    module = _find(model, name)
    if module is None:
        raise LoaderError(f"{label}: module {name!r} does not exist in the live model (another architecture?)")
    weight = module._parameters.get("weight")
    if isinstance(module, nn.Linear):
        conv1d, (out_f, in_f) = False, tuple(weight.shape)
    elif type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        conv1d, (in_f, out_f) = True, tuple(weight.shape)
    else:
        raise LoaderError(f"{label}: module {name!r} is a {type(module).__name__}, not a Linear or Conv1D layer")
    if not weight.is_floating_point():
        raise LoaderError(f"{label}: module {name!r} has a {weight.dtype} weight (quantised?), cannot inject")
    if a.shape[1] != in_f or b.shape[0] != out_f:
        raise LoaderError(
            f"{label}: module {name!r} takes {in_f} -> {out_f} features, the plasmid's factors are "
            f"A {tuple(a.shape)} and B {tuple(b.shape)}, expected A (r, {in_f}) and B ({out_f}, r)"
        )
    return module, weight, conv1d


def _shared_weights(model: nn.Module) -> dict[int, list[str]]:
    """Data address -> the parameter names that hold it, for addresses more than one name holds (tied weights:
    GPT-2's lm_head.weight is transformer.wte.weight)."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(p.data_ptr(), []).append(name)
    return {ptr: n for ptr, n in names.items() if len(n) > 1}


def _like(t: torch.Tensor, w: torch.Tensor, copy: bool) -> torch.Tensor:
    """``t`` in ``w``'s dtype and device; a copy when ``copy`` (factors the caller owns and could change later)."""
    return t.to(device=w.device, dtype=w.dtype, copy=copy)


def _side_hook(a: torch.Tensor, b: torch.Tensor, scale: float):
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor) -> torch.Tensor:
        x = args[0] if args else next(iter(kwargs.values()))
        # PEFT's unmerged forward: result + lora_B(lora_A(dropout(x))) * scaling, with dropout off at inference
        return output + F.linear(F.linear(x.to(a.dtype), a), b) * scale

    return hook


def _add_delta(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float, conv1d: bool) -> None:
    # W += scale * B @ A in one fused pass (PEFT's merge up to float rounding). A Conv1D weight is (in, out), so
    # its delta is A^T @ B^T, produced directly in W's layout: adding a transposed view instead is 20x slower.
    if conv1d:
        w.addmm_(a.T, b.T, alpha=scale)
    else:
        w.addmm_(b, a, alpha=scale)


def _check_base(model: nn.Module, src: AdapterSource, check_base: bool, expected: str | None) -> None:
    want = src.base_digest
    if not check_base or want is None:
        return
    have = expected if expected is not None else model_digest(model)
    if have != want:
        raise LoaderError(
            f"{src.label}: made for base model {src.base_name!r} (weights digest {want[:12]}...), "
            f"the live model's digest is {have[:12]}...; refusing to inject into another base"
        )


def inject(
    model: nn.Module | Any,
    plasmid: PlasmidLike,
    *,
    mode: Mode = "side",
    weight: float = 1.0,
    check_base: bool = True,
    expected_digest: str | None = None,
    verify: bool = True,
) -> InjectionHandle:
    """Inject ``plasmid`` (folder, raw PEFT folder, Plasmid or AdapterSource) into ``model``; see the module docs.

    ``weight`` multiplies the plasmid's own scale (alpha / r). ``verify`` checks the artifact hash against the
    manifest. Raises LoaderError, with the model untouched, when the plasmid does not fit.
    """
    if mode not in ("side", "merged"):
        raise LoaderError(f"mode must be 'side' or 'merged', got {mode!r}")
    weight = float(weight)
    if not math.isfinite(weight):
        raise LoaderError(f"weight must be a finite number, got {weight}")
    model, known = _unwrap(model)
    src = read_adapter(plasmid, verify=verify)
    _check_base(model, src, check_base, expected_digest if expected_digest is not None else known)

    # An AdapterSource passed in is the caller's: its factors are copied. One read here (from a folder or a Plasmid,
    # whose arrays read_adapter copies) is private already.
    owned = plasmid is src
    plan = []  # validate everything before touching anything
    st = _state(model)
    if mode == "merged" and st.shared is None:
        st.shared = _shared_weights(model)
    shared = st.shared if mode == "merged" and st.shared is not None else {}
    for name, (a, b, scale) in src.modules.items():
        module, w, conv1d = _layout(model, name, a, b, src.label)
        tied = [t for t in shared.get(w.data_ptr(), []) if t != f"{name}.weight"]
        if tied:
            # a delta added in place would reach every module holding the weight (the input embedding, for a tied
            # lm_head), which PEFT's LoRA on this one module never does
            raise LoaderError(
                f"{src.label}: module {name!r} shares its weight with {', '.join(tied)} (tied weights)"
                ": a merged inject would change them all; inject it in side mode"
            )
        if not abs(scale * weight) <= torch.finfo(w.dtype).max:
            raise LoaderError(
                f"{src.label}: scale alpha/r x weight = {scale * weight:g} for {name!r} overflows its {w.dtype} weight"
            )
        plan.append((name, module, w, _like(a, w, owned), _like(b, w, owned), scale * weight, conv1d))

    handle = InjectionHandle(src.label, mode, weight, tuple(p[0] for p in plan), _model=weakref.ref(model))
    if mode == "side":
        try:
            for _, module, _, a, b, scale, _ in plan:
                handle._hooks.append(module.register_forward_hook(_side_hook(a, b, scale), with_kwargs=True))
        except BaseException:
            for h in handle._hooks:
                h.remove()
            raise
    else:
        done: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        try:
            with torch.no_grad():
                for name, _, w, a, b, scale, conv1d in plan:
                    done.append((name, w, _backup(st, name, w)))
                    _add_delta(w, a, b, scale, conv1d)
                    handle._factors[name] = (a, b, scale, conv1d)
        except BaseException:
            with torch.no_grad():
                for _, w, backup in done:
                    w.copy_(backup)
            raise
        for name, _, backup in done:
            st.stacks.setdefault(name, []).append(_Entry(handle, backup))
    st.handles.append(handle)
    return handle


def remove(model: nn.Module | Any, handle: InjectionHandle) -> None:
    """Take ``handle``'s plasmid out of ``model``: unhook (side) or restore the backed-up weights (merged)."""
    model, _ = _unwrap(model)
    if not handle.active:
        raise LoaderError(f"{handle.label}: already removed")
    if handle._model is None or handle._model() is not model:
        raise LoaderError(f"{handle.label}: this handle belongs to another model")
    st = _state(model)
    if handle.mode == "side":
        for h in handle._hooks:
            h.remove()
    else:
        with torch.no_grad():
            for name in handle.modules:
                stack = st.stacks[name]
                i = next(k for k, e in enumerate(stack) if e.handle is handle)
                w = _find(model, name)._parameters["weight"]
                w.copy_(stack[i].backup)
                # Replay the later plasmids on top, in order, so the bits equal a fresh injection without this one.
                for later in stack[i + 1 :]:
                    later.backup.copy_(w)
                    _add_delta(w, *later.handle._factors[name])
                st.spare[name] = stack[i].backup  # free now: the next merged inject of this module copies into it
                del stack[i]
                if not stack:
                    del st.stacks[name]
    handle.active = False
    handle._hooks.clear()
    handle._factors.clear()
    st.handles.remove(handle)


def remove_all(model: nn.Module | Any) -> int:
    """Remove every active plasmid (newest first); returns how many were removed."""
    handles = active_injections(model)
    for h in reversed(handles):
        remove(model, h)
    return len(handles)


@contextlib.contextmanager
def injected(model: nn.Module | Any, plasmid: PlasmidLike, **kwargs: Any) -> Iterator[InjectionHandle]:
    """``with injected(model, path, mode=...):`` inject for the block, remove on exit (exceptions included)."""
    handle = inject(model, plasmid, **kwargs)
    try:
        yield handle
    finally:
        if handle.active:
            remove(model, handle)
