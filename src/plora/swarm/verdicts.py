"""The swarm's one verdict cache: the gate's verdict on a plasmid under a policy, screened once, shared on disk.

    >>> from plora.gate.policy import load_policy
    >>> from plora.swarm.verdicts import VerdictCache
    >>> cache = VerdictCache(load_policy("policy.json", probes=False))   # probes off: keeps this example quick
    >>> v = cache.verdict("out/legal")            # screened by plora.gate.screen, then stored
    >>> v.accepted, v.codes, v.by
    (True, (), 'plora')
    >>> cache.verdict("out/legal") == v, cache.screens, cache.hits   # the second call reads the stored verdict
    (True, 1, 1)
    >>> cache("out/legal")                       # a fetch check too: [] accepted, else "CODE: message" lines
    []

Swarm Sim v2 (:meth:`plora.swarm.pool.PlasmidPool.verdicts`) and every networked agent (:mod:`plora.swarm.agent`)
go through :class:`VerdictCache`, so a plasmid costs one screen per policy, whoever screens it first.

Where: ``PLORA_HOME/verdicts/<verdict_key>.json`` with ``verdict_key(policy, folder) = <policy key>/<plasmid key>``:

* the **plasmid key** hashes what the gate reads of the folder: every entry's name and kind, each regular file's
  bytes, each symlink's target (an extra pickle file or a symlink changes the verdict, so it changes the key);
* the **policy key** hashes the effective policy (target keywords expanded), the base weights digest, the bytes of
  every trusted key file, and :func:`gate_fingerprint`: the probe's version and statistic and the gate's calibration
  data (the reference files shipped in ``plora/assets/gate/`` and any in ``PLORA_HOME/gate/``). Change any of them
  and the old verdicts are simply not found.

One schema (:class:`VerdictRecord`, ``schema_version`` 1): key, plasmid id, artifact SHA-256, accepted, reasons as
``{code, message}``, numeric scores, seconds, and who screened it. A file that does not parse as that schema (an older
layout, a torn disk) counts as missing and is screened again; a verdict on a folder that changed while it was screened
is returned but not stored. One lock: :func:`plora.fsio.file_lock` on
``<key>.lock``, so processes (and threads) that want the same verdict at once wait for the first screen and read it.
Within a process, screens run one at a time because they share one loaded base model.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import stat
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class ReasonRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str
    message: str


class VerdictRecord(BaseModel):
    """One stored verdict (the file's whole content)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = 1
    key: str
    plasmid: str
    sha256: str | None
    accepted: bool
    reasons: tuple[ReasonRecord, ...] = ()
    scores: dict[str, float | None] = {}
    seconds: float
    by: str

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def lines(self) -> list[str]:
        """``CODE: message`` per reason, as :func:`plora.grpc.client.fetch` reports a check's refusal."""
        return [f"{r.code}: {r.message}" for r in self.reasons]


# ------------------------------------------------------------------------------------------------------------ keys
def _sha256_file(path: Path) -> str:
    from plora.hashing import sha256_file

    return sha256_file(path)


def gate_fingerprint(policy: Any, base_digest: str) -> str:
    """SHA-256 of everything of the gate's own that decides a verdict besides the policy's fields and the plasmid:
    the gate's rules version, the probe's version and default statistic, and the digest of the calibration the gate
    uses for ``base_digest``
    (:func:`plora.gate.calibration.find_calibration`; "uncalibrated" when none). A recalibration, installed or
    shipped, changes the digest, so no verdict made under the old one is reused."""
    from plora.gate.calibration import CalibrationError, find_calibration, probe_constants

    try:
        cal = find_calibration(base_digest)
        calibration = cal.digest() if cal is not None else "uncalibrated"
    except CalibrationError as err:
        calibration = f"unusable: {err}"
    from plora.gate.reasons import RULES_VERSION

    body = {"base_digest": base_digest, "probes": probe_constants(), "calibration": calibration,
            "rules": RULES_VERSION}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _key_files(paths: list[str]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for raw in paths:
        p = Path(raw)
        files = sorted(c for c in p.iterdir() if c.is_file()) if p.is_dir() else [p]
        out += [[str(f), _sha256_file(f) if f.is_file() else None] for f in files]
    return out


def policy_key(policy: Any) -> str:
    """The policy half of :func:`verdict_key`: effective policy, base digest, trusted key bytes, gate fingerprint."""
    from plora.models import base_digest

    body = policy.effective().model_dump(mode="json")
    body.pop("recall", None)  # who may revoke and how peers are scored never change what the gate decides
    digest = body.get("base_digest") or base_digest(policy.base_model)
    body["_base_digest"] = digest
    body["_trusted_key_files"] = _key_files([str(k) for k in policy.trusted_keys])
    body["_gate"] = gate_fingerprint(policy, digest)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def plasmid_key(folder: str | os.PathLike[str]) -> str:
    """The plasmid half of :func:`verdict_key`: every entry of the folder as the gate sees it (name, kind, bytes)."""
    folder = Path(folder)
    h = hashlib.sha256(b"plora.plasmid-key/1\0")
    try:
        children = sorted(folder.iterdir())
    except OSError:
        children = []
        h.update(b"unreadable\0")
    for child in children:
        st = child.lstat()
        if stat.S_ISLNK(st.st_mode):
            h.update(f"L\0{child.name}\0{os.readlink(child)}\0".encode())
        elif stat.S_ISREG(st.st_mode):
            h.update(f"F\0{child.name}\0{_sha256_file(child)}\0".encode())
        else:  # folders, fifos, devices: never read (a fifo would block), but their names can decide a verdict
            h.update(f"O\0{child.name}\0{stat.S_IFMT(st.st_mode)}\0".encode())
    return h.hexdigest()[:32]


def verdict_key(policy: Any, folder: str | os.PathLike[str]) -> str:
    """``<policy key>/<plasmid key>``: the verdict's path under ``PLORA_HOME/verdicts/``, without ``.json``."""
    return f"{policy_key(policy)}/{plasmid_key(folder)}"


# ----------------------------------------------------------------------------------------------------------- cache
class VerdictCache:
    """The gate behind the on-disk cache, for one policy (see the module docstring).

    ``by`` names who screens in the stored record (``sim``, ``agent``...). ``hits`` and ``screens`` count what this
    object did. Calling the object is a :data:`plora.grpc.checks.Check`.
    """

    def __init__(self, policy: Any, by: str = "plora") -> None:
        from plora.settings import cache_dir

        self.policy = policy
        self.by = by
        self.policy_key = policy_key(policy)
        self.folder = cache_dir("verdicts", self.policy_key)
        self.hits = 0
        self.screens = 0
        self._base: Any = None
        self._screen_lock = threading.Lock()

    def key(self, folder: str | os.PathLike[str]) -> str:
        return f"{self.policy_key}/{plasmid_key(folder)}"

    def path(self, folder: str | os.PathLike[str]) -> Path:
        return self.folder.parent / f"{self.key(folder)}.json"

    @staticmethod
    def _read(path: Path, key: str) -> VerdictRecord | None:
        try:
            record = VerdictRecord.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            return None
        return record if record.key == key else None

    def verdict(self, folder: str | os.PathLike[str], plasmid_id: str | None = None) -> VerdictRecord:
        """The stored verdict on ``folder``, or the gate's, screened now and stored (one screen per key, ever)."""
        from plora.fsio import atomic_write_text, file_lock

        key = self.key(folder)
        path = self.folder.parent / f"{key}.json"
        if (hit := self._read(path, key)) is not None:
            self.hits += 1
            return hit
        with file_lock(path.with_suffix(".lock")):  # whoever screens this key now, elsewhere, finishes first
            if (hit := self._read(path, key)) is not None:
                self.hits += 1
                return hit
            record = self._screen(Path(folder), key, plasmid_id)
            # stored only if the folder still hashes to the key: one changed while it was screened (a signature
            # added, a file swapped) got a verdict on other bytes than the key's, which must never be found for them
            if self.key(folder) == key:
                atomic_write_text(path, record.model_dump_json(indent=1))
        return record

    def _screen(self, folder: Path, key: str, plasmid_id: str | None) -> VerdictRecord:
        from plora.gate import screen

        with self._screen_lock:
            if self._base is None and self.policy.probes:
                from plora.models import load_base

                self._base = load_base(self.policy.base_model)  # once per process, and only if it screens
            result = screen(folder, self.policy, base=self._base)
            self.screens += 1
        from plora.manifest import read_manifest

        try:
            sha: str | None = read_manifest(folder).artifact.sha256
        except Exception:  # noqa: BLE001 - an unreadable manifest is the gate's to report, not the cache's
            sha = None
        return VerdictRecord(
            key=key,
            plasmid=plasmid_id or folder.name,
            sha256=sha,
            accepted=result.accepted,
            reasons=tuple(ReasonRecord(code=str(c), message=str(m)) for c, m in result.reasons),
            scores={
                k: None if v is None else float(v)
                for k, v in result.scores.items()
                if v is None or isinstance(v, numbers.Real)
            },
            seconds=round(result.seconds, 3),
            by=self.by,
        )

    def __call__(self, folder: Path) -> list[str]:
        """A fetch check: [] when accepted, else one ``CODE: message`` line per reason."""
        record = self.verdict(folder)
        return [] if record.accepted else record.lines() or ["GATE_REJECTED: rejected without a reason"]
