"""A live model that hot-loads plasmids and unloads revoked ones, proving the weights come back bit for bit.

    >>> from plora.recall.live import LiveModel
    >>> live = LiveModel("plora-tiny")
    >>> before = live.digest()
    >>> live.inject("out/legal", "legal")                    # merged: the weights change
    >>> live.digest() != before, live.injected()
    (True, ['legal'])
    >>> check = live.unload("legal")                         # plora.loader.remove: the backed-up weights restored
    >>> check["equal"], check["after_removal"] == before, live.injected()
    (True, True, [])

Plasmids are injected in ``merged`` mode, so an injection really rewrites weights and its removal has something to
prove. :meth:`LiveModel.unload` returns the evidence: the weights digest (:func:`plora.models.weights_digest`: every
tensor's bytes) just before the plasmid was injected, just after its removal, and the digest it must equal: the
pre-injection one when nothing was injected after it, else that of a fresh copy of the base with the remaining
plasmids injected in their order (the loader's stacking guarantee, checked on an independent model).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class _Injected:
    plasmid_id: str
    folder: str
    handle: Any
    before: str  # weights digest just before this injection


class LiveModel:
    """One base model, loaded once, serving the plasmids injected into it (torch is imported here)."""

    def __init__(self, base_model: str | None = None) -> None:
        from plora.models import load_base

        self.base_model = base_model
        self.base = load_base(base_model)
        self._stack: list[_Injected] = []

    def digest(self) -> str:
        from plora.models import weights_digest

        return weights_digest(self.base.model)

    def injected(self) -> list[str]:
        return [e.plasmid_id for e in self._stack]

    def inject(self, folder: str | os.PathLike[str], plasmid_id: str) -> None:
        """Hot-load a plasmid (merged into the weights); refused by the loader if made for another base."""
        from plora.loader import inject

        before = self.digest()
        handle = inject(self.base, folder, mode="merged", expected_digest=self.base.digest)
        self._stack.append(_Injected(plasmid_id, str(folder), handle, before))

    def unload(self, plasmid_id: str) -> dict[str, Any]:
        """Remove a plasmid with :func:`plora.loader.remove`; returns the digests that prove the restore."""
        from plora.loader import inject, remove

        i = next(k for k, e in enumerate(self._stack) if e.plasmid_id == plasmid_id)
        entry = self._stack.pop(i)
        remove(self.base, entry.handle)
        after = self.digest()
        later = self._stack[i:]
        if not later:
            expected = entry.before
        else:  # as if only the others had been injected, in order: rebuilt on a fresh copy of the base
            fresh = LiveModel(self.base_model)
            for e in self._stack:
                inject(fresh.base, e.folder, mode="merged", expected_digest=fresh.base.digest)
            expected = fresh.digest()
        return {"plasmid": plasmid_id, "pre_injection": entry.before, "after_removal": after, "expected": expected,
                "later_injections": len(later), "equal": after == expected}
