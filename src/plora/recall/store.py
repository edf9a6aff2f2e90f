"""A receiver's recall state on disk: the revocations it obeys, rollback high-water marks, and quarantine.

    >>> from plora.recall.record import artifact_target, issue_revocation
    >>> from plora.recall.store import RecallStore
    >>> from plora.signer import Keyring
    >>> store = RecallStore("agent/recall", revocation_keys=Keyring.load(["keys/alice.pub"]))
    >>> store.check("out/legal")                       # nothing revoked yet
    []
    >>> env = issue_revocation(artifact_target("out/legal"), "backdoor", "keys/alice", issuer="alice")
    >>> receipt = store.receive(env.to_json())
    >>> receipt.ok, receipt.new, store.receive(env.to_json()).new     # deduplicated by id
    (True, True, False)
    >>> store.check("out/legal")[0][:8]                # refused forever, under any id
    'REVOKED:'
    >>> moved = store.quarantine("out/legal", receipt.id)
    >>> moved.parent.name, (moved / "revoked.json").exists()
    ('quarantine', True)

Layout of the folder (created on first use)::

    revocations/<id>.json     every revocation obeyed, as received (a DSSE envelope; id = SHA-256 of its payload)
    versions.json             rollback high-water marks: {"<signer keyid>/<lineage>": {"version": N, "sha256": ...}}
    quarantine/<id8>-<plasmid id>/   revoked plasmids taken out of the store, with revoked.json (which record, when)

A revocation is obeyed only if it verifies with the revocation keys and quorum (see
:mod:`plora.recall.policy`). One that does not is refused without keeping its id: a copy with a garbled signature,
or the single-signed stage of a 2-of-N record, must never block the valid envelope of the same record (same id)
arriving later; identical refused bytes are answered from a bounded memo. Records kept on disk are verified again
when the store opens, with the keys and quorum it has now (a key removed from the revocation keys, a raised quorum,
or a file dropped into the folder by hand is not obeyed), and only under their own id. A plasmid is revoked when a
record names its artifact SHA-256, or a key its signatures list (``plora.sig.json`` or ``model.sig``).

Rollback protection (TUF's rule, per signer and lineage): a plasmid whose verified signers include a key that already
had a higher ``version`` of the same ``lineage`` accepted is refused (VERSION_ROLLBACK). A manifest without these
fields is version 0 of the lineage named by its plasmid id (:func:`plora.manifest.release_of`), so old plasmids
keep loading, and never roll anything back unless a signer released a higher version of that same id. Rollback
protection needs signatures: without a plasmid keyring (signatures off) no signer is verified and nothing is
checked, because an unsigned "version 1000" would otherwise block every later release of its lineage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plora.fsio import atomic_write_json, atomic_write_text, file_lock, read_bounded
from plora.manifest import OMS_SIGNATURE_NAME, SIGNATURE_NAME, Manifest, read_manifest, release_of
from plora.recall.record import (
    MAX_REVOCATION_BYTES,
    REVOKED,
    VERSION_ROLLBACK,
    Revocation,
    RevocationCheck,
    verify_revocation,
)
from plora.signer.dsse import EnvelopeError, read_envelope
from plora.signer.keys import Keyring

Reason = tuple[str, str]
MAX_REFUSED = 4096  # refused envelopes remembered (by their bytes' hash), oldest forgotten first
MAX_VERSIONS_BYTES = 64 << 20


def _higher(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The two sets of rollback marks merged, each key at its higher version."""
    out = dict(a)
    for key, mark in b.items():
        if key not in out or mark["version"] > out[key]["version"]:
            out[key] = mark
    return out


@dataclass
class Receipt:
    """What :meth:`RecallStore.receive` did with one revocation."""

    id: str | None
    ok: bool
    new: bool
    reasons: list[Reason] = field(default_factory=list)
    record: Revocation | None = None


def listed_signers(folder: str | os.PathLike[str], keyring: Keyring | None = None) -> set[str]:
    """Key ids a plasmid folder lists as its signers (unverified: a signer revocation matches any listing): those of
    plora.sig.json, and the key of model.sig where ``keyring`` holds it (a bundle names its key only by a hint)."""
    try:
        out = {s.keyid for s in read_envelope(Path(folder) / SIGNATURE_NAME).signatures}
    except EnvelopeError:
        out = set()
    if keyring is not None and (Path(folder) / OMS_SIGNATURE_NAME).is_file():
        from plora.signer.oms import listed_key_fingerprints

        out |= listed_key_fingerprints(folder, keyring)
    return out


class RecallStore:
    """See the module docstring. ``revocation_keys``/``quorum`` verify revocations; ``plasmid_keys``/
    ``plasmid_quorum`` (the policy's trusted keys) name the verified signers that rollback protection is kept for."""

    def __init__(self, folder: str | os.PathLike[str], revocation_keys: Keyring | None = None, quorum: int = 1,
                 plasmid_keys: Keyring | None = None, plasmid_quorum: int = 1) -> None:
        self.folder = Path(folder)
        self.revocation_keys = revocation_keys if revocation_keys is not None else Keyring()
        self.quorum = quorum
        self.plasmid_keys = plasmid_keys
        self.plasmid_quorum = plasmid_quorum
        self._lock = threading.RLock()
        self._records: dict[str, Revocation] = {}
        self._refused: dict[str, list[Reason]] = {}  # SHA-256 of refused envelope bytes -> why (bounded)
        self.skipped: dict[str, list[Reason]] = {}  # files under revocations/ not obeyed when the store opened
        (self.folder / "revocations").mkdir(parents=True, exist_ok=True)
        for path in sorted((self.folder / "revocations").glob("*.json")):
            # verified again with today's keys and quorum; a torn, foreign or misnamed file is skipped, not trusted
            try:
                data = read_bounded(path, MAX_REVOCATION_BYTES, "a revocation")
            except OSError as err:
                self.skipped[path.name] = [("ENVELOPE_INVALID", str(err))]
                continue
            check = verify_revocation(data, self.revocation_keys, self.quorum)
            if not check.ok or check.record is None or check.id != path.stem:
                self.skipped[path.name] = check.reasons or [("ENVELOPE_INVALID", f"not stored under its id {check.id}")]
                continue
            self._records[path.stem] = check.record
        self._versions = self._read_versions()

    # ------------------------------------------------------------------------------------------ revocations
    def ids(self) -> list[str]:
        """The ids of every revocation obeyed (what goes into an inventory)."""
        with self._lock:
            return sorted(self._records)

    def has(self, rid: str) -> bool:
        """Whether revocation ``rid`` is obeyed (a refused envelope of it does not count: a valid one may follow)."""
        with self._lock:
            return rid in self._records

    def envelope(self, rid: str) -> bytes | None:
        """The stored envelope bytes of revocation ``rid`` (None if not held)."""
        with self._lock:
            if rid not in self._records:
                return None
        return (self.folder / "revocations" / f"{rid}.json").read_bytes()

    def records(self) -> dict[str, Revocation]:
        with self._lock:
            return dict(self._records)

    def receive(self, data: bytes) -> Receipt:
        """Verify one revocation (envelope bytes) and keep it if valid; the same id is never verified twice."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest in self._refused:
                return Receipt(None, False, False, self._refused[digest])
        check: RevocationCheck = verify_revocation(data, self.revocation_keys, self.quorum)
        rid = check.id
        with self._lock:
            if rid is not None and rid in self._records:
                return Receipt(rid, True, False, [], self._records[rid])
            if not check.ok or check.record is None:
                if len(self._refused) >= MAX_REFUSED:
                    self._refused.pop(next(iter(self._refused)))
                self._refused[digest] = check.reasons
                return Receipt(rid, False, False, check.reasons, check.record)
            atomic_write_text(self.folder / "revocations" / f"{rid}.json", data.decode("utf-8"))
            self._records[rid] = check.record
        return Receipt(rid, True, True, [], check.record)

    def known_keys(self) -> Keyring:
        """Every public key this store holds (trusted plasmid keys and revocation keys): what links a model.sig's
        key hint to a key id."""
        ring = Keyring()
        for source in (self.plasmid_keys, self.revocation_keys):
            for fp, key in (source.keys.items() if source is not None else ()):
                ring.keys.setdefault(fp, key)
        return ring

    def revoked_by(self, sha256: str, signers: set[str] | frozenset[str] = frozenset()) -> str | None:
        """The id of a revocation that names this plasmid, or None."""
        with self._lock:
            return next((rid for rid, rec in sorted(self._records.items()) if rec.revokes(sha256, signers)), None)

    def revoked_ids(self, rid: str, held: dict[str, tuple[str, set[str]]]) -> list[str]:
        """Which of ``held`` (plasmid id -> (artifact sha256, listed signers)) revocation ``rid`` names."""
        with self._lock:
            record = self._records.get(rid)
        if record is None:
            return []
        return sorted(pid for pid, (sha, signers) in held.items() if record.revokes(sha, signers))

    # ------------------------------------------------------------------------------------------- the check
    def check(self, folder: str | os.PathLike[str]) -> list[str]:
        """A fetch check (:data:`plora.grpc.checks.Check`): REVOKED or VERSION_ROLLBACK lines, [] when neither."""
        try:
            manifest = read_manifest(folder)
        except Exception as err:  # noqa: BLE001 - the gate names a bad manifest; this check has nothing to add
            return [f"SCHEMA_INVALID: {err}"]
        rid = self.revoked_by(manifest.artifact.sha256, listed_signers(folder, self.known_keys()))
        if rid is not None:
            return [f"{REVOKED}: {self._records[rid].describe()} (revocation {rid[:16]}...)"]
        return [f"{VERSION_ROLLBACK}: {msg}" for msg in self._rollbacks(folder, manifest)]

    def _verified_signers(self, folder: str | os.PathLike[str], manifest: Manifest) -> list[str]:
        if self.plasmid_keys is None:
            return []
        from plora.signer.plasmid import check_signatures

        return check_signatures(folder, self.plasmid_keys, self.plasmid_quorum, manifest=manifest).valid_signers

    def _rollbacks(self, folder: str | os.PathLike[str], manifest: Manifest) -> list[str]:
        lineage, version = release_of(manifest)
        out = []
        with self._lock:
            self._versions = _higher(self._versions, self._read_versions())  # marks other processes wrote
            for signer in self._verified_signers(folder, manifest):
                best = self._versions.get(f"{signer}/{lineage}")
                if best is not None and version < best["version"]:
                    out.append(f"{lineage} version {version} is older than version {best['version']} already "
                               f"accepted from signer {signer[:16]}...")
        return out

    def accept(self, folder: str | os.PathLike[str]) -> None:
        """Record an accepted plasmid's version for each of its verified signers (after the whole check chain).

        Read, merged and written under a file lock: stores of several processes may share the folder, and a mark
        only ever rises (a stale copy in one process never lowers what another wrote)."""
        manifest = read_manifest(folder)
        lineage, version = release_of(manifest)
        signers = self._verified_signers(folder, manifest)
        if not signers:
            return
        with self._lock, file_lock(self.folder / "versions.lock"):
            self._versions = _higher(self._versions, self._read_versions())
            changed = False
            for signer in signers:
                key = f"{signer}/{lineage}"
                if version >= self._versions.get(key, {"version": -1})["version"]:
                    self._versions[key] = {"version": version, "sha256": manifest.artifact.sha256}
                    changed = True
            if changed:
                atomic_write_json(self.folder / "versions.json", self._versions)

    def _read_versions(self) -> dict[str, dict[str, Any]]:
        """The marks on disk; an entry that is not ``{"version": int >= 0, "sha256": str}`` is dropped."""
        try:
            data = json.loads(read_bounded(self.folder / "versions.json", MAX_VERSIONS_BYTES, "rollback marks"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: {"version": v["version"], "sha256": str(v.get("sha256", ""))} for k, v in data.items()
                if isinstance(k, str) and isinstance(v, dict) and type(v.get("version")) is int and v["version"] >= 0}

    # ---------------------------------------------------------------------------------------- quarantine
    def quarantine(self, folder: str | os.PathLike[str], rid: str) -> Path:
        """Move a revoked plasmid folder out of the store (one rename) into ``quarantine/``, with revoked.json."""
        folder = Path(folder)
        dest_root = self.folder / "quarantine"
        dest_root.mkdir(parents=True, exist_ok=True)
        dest = dest_root / f"{rid[:8]}-{folder.name}"
        n = 1
        while dest.exists():
            n += 1
            dest = dest_root / f"{rid[:8]}-{folder.name}-{n}"
        try:
            os.rename(folder, dest)  # atomic on one filesystem: the store never shows half a plasmid
        except OSError:
            shutil.move(str(folder), dest)
        record = self.records().get(rid)
        atomic_write_json(dest / "revoked.json", {
            "revocation": rid,
            "record": None if record is None else record.model_dump(mode="json", exclude_none=True),
            "quarantined_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
        return dest
