"""Recall: signed revocation records, the receiver's store (obey, deduplicate, refuse forever), rollback protection,
peer scores, and hot-unloading from a live model, through the library and the CLI a user calls."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from trust_helpers import adapter_config, lora_tensors, session_keys
from typer.testing import CliRunner

from plora.cli.main import app
from plora.manifest import read_manifest, release_of, write_manifest
from plora.plasmid import write_plasmid
from plora.recall import RecallStore, artifact_target, cosign_revocation, issue_revocation, verify_revocation
from plora.recall.record import REVOCATION_PAYLOAD_TYPE, signer_target
from plora.recall.release import stamp_release
from plora.recall.scoring import PeerScores, Scoring
from plora.signer import (
    Keyring,
    fingerprint,
    load_private_key,
    load_public_key,
    sign_envelope,
    sign_plasmid,
    verify_plasmid,
)
from plora.signer.dsse import Envelope

runner = CliRunner()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return session_keys(tmp_path_factory)


def plasmid(out: Path, seed: int = 0, digest: str = "ab" * 32, **fields: object) -> Path:
    """A crafted plasmid (plora-tiny shapes); ``fields`` go into its manifest (lineage, version)."""
    write_plasmid(out, lora_tensors(seed=seed), adapter_config(), plasmid_id=out.name, domain="legal",
                  created_at="2026-11-27T00:00:00Z", base_model={"name": "plora-tiny", "digest": digest},
                  lora={"r": 4, "alpha": 8.0, "target_set": "custom", "targets": ["attn.c_attn"]},
                  training={"seed": seed, "samples": 64, "epochs": 1.0, "dataset": "builtin:legal"}, **fields)
    return out


def trusted(keys: dict[str, Path], *names: str) -> Keyring:
    return Keyring.load([str(keys[n]) + ".pub" for n in names])


def forged(env: Envelope, **changes: object) -> Envelope:
    return Envelope.model_validate({**env.model_dump(by_alias=True), **changes})


# ------------------------------------------------------------------------------------------------------ records
def test_revocation_round_trip_and_k_of_n_quorum(keys, tmp_path):
    p = plasmid(tmp_path / "legal")
    path = tmp_path / "rev.json"
    env = issue_revocation(artifact_target(p), "backdoor: trigger found", keys["alice"], issuer="alice", out=path)
    ring = trusted(keys, "alice", "bob")
    one = verify_revocation(path, ring)
    assert one.ok and one.record.target.sha256 == read_manifest(p).artifact.sha256
    assert one.record.target.plasmid_id == "legal" and one.valid_signers == [fingerprint(load_public_key(
        str(keys["alice"]) + ".pub"))]
    two = verify_revocation(path, ring, quorum=2)
    assert not two.ok and two.codes == ["QUORUM_NOT_MET"]
    cosign_revocation(path, keys["bob"])
    cosign_revocation(path, keys["alice"])  # signing again replaces alice's signature: still two signers
    again = verify_revocation(path, ring, quorum=2)
    assert again.ok and len(again.valid_signers) == 2 and again.id == one.id  # the id names the record
    cosign_revocation(path, keys["carol"])  # an outsider's signature is noted, never counted
    three = verify_revocation(path, ring, quorum=3)
    assert not three.ok and set(three.codes) == {"SIGNER_UNTRUSTED", "QUORUM_NOT_MET"}
    assert env.payload_type == REVOCATION_PAYLOAD_TYPE == "application/vnd.plora.revocation.v1+json"


def test_tampered_or_untrusted_revocations_are_refused(keys, tmp_path):
    env = issue_revocation(artifact_target(sha256="1" * 64), "x", keys["alice"], issuer="ops")
    ring = trusted(keys, "alice")
    body = json.loads(env.payload_bytes)
    body["target"]["sha256"] = "2" * 64  # point the signed revocation at another plasmid
    other = forged(env, payload=base64.b64encode(json.dumps(body).encode()).decode())
    assert verify_revocation(other, ring).codes == ["SIGNATURE_INVALID", "QUORUM_NOT_MET"]
    sig = env.signatures[0].model_dump()
    raw = bytearray(base64.b64decode(sig["sig"]))
    raw[10] ^= 1
    bad_sig = forged(env, signatures=[{**sig, "sig": base64.b64encode(bytes(raw)).decode()}])
    assert "SIGNATURE_INVALID" in verify_revocation(bad_sig, ring).codes
    stranger = issue_revocation(artifact_target(sha256="1" * 64), "x", keys["carol"], issuer="carol")
    assert verify_revocation(stranger, ring).codes == ["SIGNER_UNTRUSTED", "QUORUM_NOT_MET"]


@pytest.mark.parametrize("payload,why", [
    (b'{"schema_version":1,"target":{"kind":"artifact","sha256":"' + b"a" * 64 + b'"},"reason":"r","issued_at":'
     b'"2026-01-01T00:00:00Z","issuer":"i","expires":"never"}', "unknown field"),
    (b'{"schema_version":1,"target":{"kind":"artifact","sha256":"' + b"a" * 64 + b'","extra":1},"reason":"r",'
     b'"issued_at":"2026-01-01T00:00:00Z","issuer":"i"}', "unknown field in the target"),
    (b'{"schema_version":1,"target":{"kind":"artifact","sha256":"xyz"},"reason":"r","issued_at":'
     b'"2026-01-01T00:00:00Z","issuer":"i"}', "not a SHA-256"),
    (b'{"schema_version":1,"target":{"kind":"plasmid","id":"legal"},"reason":"r","issued_at":'
     b'"2026-01-01T00:00:00Z","issuer":"i"}', "unknown target kind"),
    (b'{"schema_version":true,"target":{"kind":"signer","keyid":"' + b"a" * 64 + b'"},"reason":"r","issued_at":'
     b'"2026-01-01T00:00:00Z","issuer":"i"}', "schema_version not an integer"),
    (b'{"schema_version":1,"target":{"kind":"signer","keyid":"' + b"a" * 64 + b'"},"reason":"r","issued_at":'
     b'"2026-01-01T00:00:00","issuer":"i"}', "no time zone"),
    (b'{"schema_version":1,"target":{"kind":"signer","keyid":"' + b"a" * 64 + b'"},"reason":"r","reason":"s",'
     b'"issued_at":"2026-01-01T00:00:00Z","issuer":"i"}', "duplicate key"),
    (b'{"schema_version":1,"target":{"kind":"signer","keyid":"' + b"a" * 64 + b'"},"reason":NaN,"issued_at":'
     b'"2026-01-01T00:00:00Z","issuer":"i"}', "NaN"),
    (b'{"schema_version":1,"target":{"kind":"signer","keyid":"' + b"a" * 64 + b'"},"reason":"","issued_at":'
     b'"2026-01-01T00:00:00Z","issuer":"i"}', "empty reason"),
])
def test_a_signed_record_that_breaks_the_schema_is_refused(keys, payload, why):
    env = sign_envelope(REVOCATION_PAYLOAD_TYPE, payload, load_private_key(keys["alice"]))
    check = verify_revocation(env, trusted(keys, "alice"))
    assert not check.ok and check.codes == ["SCHEMA_INVALID"], why


def test_malformed_envelopes_are_refused(keys, tmp_path):
    env = issue_revocation(artifact_target(sha256="1" * 64), "x", keys["alice"], issuer="ops")
    data = json.loads(env.to_json())
    cases = {"unknown field": {**data, "extra": 1}, "no signatures": {**data, "signatures": []}}
    for why, body in cases.items():
        (tmp_path / "r.json").write_text(json.dumps(body))
        assert verify_revocation(tmp_path / "r.json", trusted(keys, "alice")).codes == ["ENVELOPE_INVALID"], why
    (tmp_path / "r.json").write_bytes(b"{" + b" " * (70 * 1024) + b"}")
    assert verify_revocation(tmp_path / "r.json", trusted(keys, "alice")).codes == ["ENVELOPE_INVALID"]


def test_a_signature_of_one_record_kind_never_verifies_as_the_other(keys, tmp_path):
    p = plasmid(tmp_path / "legal")
    sign_plasmid(p, keys["alice"])
    ring = trusted(keys, "alice")
    sig_file = p / "plora.sig.json"
    assert verify_revocation(sig_file, ring).codes == ["PAYLOAD_TYPE_MISMATCH"]  # a plasmid's envelope
    plasmid_env = Envelope.model_validate_json(sig_file.read_bytes())
    relabelled = forged(plasmid_env, payloadType=REVOCATION_PAYLOAD_TYPE)  # same bytes, same signatures
    assert "SIGNATURE_INVALID" in verify_revocation(relabelled, ring).codes  # PAE binds the type
    rev = issue_revocation(artifact_target(p), "x", keys["alice"], issuer="ops")
    sig_file.write_bytes(rev.to_json())  # a revocation where a plasmid's signatures belong
    assert "PAYLOAD_TYPE_MISMATCH" in verify_plasmid(p, ring).codes


def test_cli_revoke_and_verify(keys, tmp_path):
    p = plasmid(tmp_path / "legal")
    rev = tmp_path / "revs" / "legal.json"
    rev.parent.mkdir()
    ok = runner.invoke(app, ["revoke", "--plasmid", str(p), "--reason", "backdoor", "--key", str(keys["alice"]),
                             "--out", str(rev)])
    assert ok.exit_code == 0 and "1 signature(s)" in ok.output, ok.output
    keydir = str(keys["trusted"])
    res = runner.invoke(app, ["verify", str(rev), "--trusted-keys", keydir])
    assert res.exit_code == 0 and res.output.startswith("OK revocation") and "(legal): backdoor" in res.output
    res = runner.invoke(app, ["verify", str(rev), "--trusted-keys", keydir, "--quorum", "2"])
    assert res.exit_code == 1 and "QUORUM_NOT_MET" in res.output
    assert runner.invoke(app, ["revoke", "--cosign", str(rev), "--key", str(keys["bob"])]).exit_code == 0
    res = runner.invoke(app, ["verify", str(rev), "--trusted-keys", keydir, "--quorum", "2", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["record"]["target"]["plasmid_id"] == "legal"
    res = runner.invoke(app, ["revoke", "--signer", str(keys["carol"]) + ".pub", "--reason", "stolen key", "--key",
                              str(keys["alice"]), "--out", str(tmp_path / "revs" / "carol.json")])
    assert res.exit_code == 0 and "every plasmid signed by key" in res.output
    before = sorted(x.name for x in rev.parent.iterdir())
    bad = [
        ["revoke", "--reason", "x", "--key", str(keys["alice"]), "--out", str(tmp_path / "revs" / "a.json")],
        ["revoke", "--plasmid", str(p), "--sha256", "1" * 64, "--reason", "x", "--key", str(keys["alice"]),
         "--out", str(tmp_path / "revs" / "b.json")],
        ["revoke", "--plasmid", str(p), "--reason", "x", "--key", str(keys["alice"]), "--out", str(rev)],
        ["revoke", "--sha256", "zz", "--reason", "x", "--key", str(keys["alice"]), "--out",
         str(tmp_path / "revs" / "c.json")],
        ["revoke", "--cosign", str(rev), "--key", str(keys["bob"]), "--reason", "x"],
        ["revoke", "--plasmid", str(p), "--reason", "x", "--key", str(keys["alice"]) + ".pub", "--out",
         str(tmp_path / "revs" / "d.json")],
        ["revoke", "--plasmid", str(p), "--reason", "x", "--key", str(keys["alice"]), "--out", str(rev.parent)],
        ["verify", str(p / "plora.yml"), "--trusted-keys", keydir],  # a file that cannot be a revocation
    ]
    for args in bad:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and res.output.count("\n") == 1 and "Traceback" not in res.output, (args, res.output)
    assert sorted(x.name for x in rev.parent.iterdir()) == before  # nothing written by a refused command
    (tmp_path / "junk.json").write_text("[1, 2")
    res = runner.invoke(app, ["verify", str(tmp_path / "junk.json"), "--trusted-keys", keydir])
    assert res.exit_code == 1 and "ENVELOPE_INVALID" in res.output


# -------------------------------------------------------------------------------------------------------- store
def test_receivers_obey_deduplicate_and_refuse_forever_under_any_id(keys, tmp_path):
    p = plasmid(tmp_path / "store" / "legal")
    store = RecallStore(tmp_path / "recall", revocation_keys=trusted(keys, "alice"))
    assert store.check(p) == []
    env = issue_revocation(artifact_target(p), "backdoor", keys["alice"], issuer="ops")
    first, second = store.receive(env.to_json()), store.receive(env.to_json())
    assert first.ok and first.new and second.ok and not second.new and store.ids() == [first.id]
    assert store.check(p)[0].startswith("REVOKED: artifact ")
    renamed = shutil.copytree(p, tmp_path / "elsewhere" / "totally-new")  # the same artifact under another id
    m = read_manifest(renamed)
    write_manifest(renamed, m.model_copy(update={"plasmid_id": "totally-new"}))
    assert store.check(renamed)[0].startswith("REVOKED:")
    # kept on disk: obeyed after a restart (verified again with the keys of then)
    assert RecallStore(tmp_path / "recall", revocation_keys=trusted(keys, "alice")).ids() == [first.id]
    moved = store.quarantine(p, first.id)
    assert not p.exists() and (moved / "revoked.json").exists() and moved.parent == tmp_path / "recall" / "quarantine"
    assert json.loads((moved / "revoked.json").read_text())["record"]["reason"] == "backdoor"
    forged_one = issue_revocation(artifact_target(sha256="3" * 64), "x", keys["carol"], issuer="carol")
    refused = store.receive(forged_one.to_json())
    assert not refused.ok and "QUORUM_NOT_MET" in [c for c, _ in refused.reasons] and not store.has(refused.id)
    assert store.receive(forged_one.to_json()).reasons == refused.reasons  # the same bytes: answered from memory
    assert store.ids() == [first.id]


def test_a_refused_copy_never_blocks_the_valid_envelope_of_the_same_record(keys, tmp_path):
    p = plasmid(tmp_path / "store" / "legal")
    store = RecallStore(tmp_path / "recall", revocation_keys=trusted(keys, "alice"))
    env = issue_revocation(artifact_target(p), "backdoor", keys["alice"], issuer="ops")
    sig = env.signatures[0]
    garbled = forged(env, signatures=[{"keyid": sig.keyid, "sig": base64.b64encode(b"x" * 64).decode()}])
    refused = store.receive(garbled.to_json())
    assert not refused.ok and refused.id == store.receive(env.to_json()).id  # same record, same id
    assert store.check(p)[0].startswith("REVOKED:")
    # 2-of-N: the single-signed stage arrives first and is refused; the cosigned envelope (same id) is obeyed
    two = RecallStore(tmp_path / "recall2", revocation_keys=trusted(keys, "alice", "bob"), quorum=2)
    path = tmp_path / "r.json"
    first = issue_revocation(artifact_target(p), "backdoor", keys["alice"], issuer="ops", out=path)
    assert [c for c, _ in two.receive(first.to_json()).reasons] == ["QUORUM_NOT_MET"]
    cosigned = cosign_revocation(path, keys["bob"])
    assert two.receive(cosigned.to_json()).ok and two.check(p)[0].startswith("REVOKED:")


def test_cosigners_working_at_once_lose_no_signature(keys, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from plora.signer import generate_keypair

    cosigners = [generate_keypair("ed25519", tmp_path / "k" / f"c{i}")[0] for i in range(6)]
    path = tmp_path / "r.json"
    issue_revocation(artifact_target(sha256="5" * 64), "backdoor", keys["alice"], issuer="ops", out=path)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda k: cosign_revocation(path, k), cosigners))
    ring = Keyring.load([str(k) + ".pub" for k in cosigners] + [str(keys["alice"]) + ".pub"])
    assert verify_revocation(path, ring, quorum=7).ok


def test_saved_revocations_are_verified_again_when_the_store_opens(keys, tmp_path):
    p = plasmid(tmp_path / "store" / "legal")
    store = RecallStore(tmp_path / "recall", revocation_keys=trusted(keys, "alice"))
    rid = store.receive(issue_revocation(artifact_target(p), "backdoor", keys["alice"], issuer="ops").to_json()).id
    assert RecallStore(tmp_path / "recall", revocation_keys=trusted(keys, "alice")).check(p) != []
    # alice's key removed from the revocation keys, or a quorum raised: her record is no longer obeyed
    for reopened in (RecallStore(tmp_path / "recall", revocation_keys=trusted(keys, "bob")),
                     RecallStore(tmp_path / "recall", revocation_keys=trusted(keys, "alice", "bob"), quorum=2)):
        assert reopened.ids() == [] and reopened.check(p) == [] and f"{rid}.json" in reopened.skipped
    # a file put there by hand: forged, or valid but under another name
    folder = tmp_path / "recall" / "revocations"
    carol = issue_revocation(artifact_target(sha256="4" * 64), "x", keys["carol"], issuer="carol")
    (folder / "whatever.json").write_bytes(carol.to_json())
    (folder / ("0" * 64 + ".json")).write_bytes((folder / f"{rid}.json").read_bytes())
    reopened = RecallStore(tmp_path / "recall", revocation_keys=trusted(keys, "alice"))
    assert reopened.ids() == [rid] and sorted(reopened.skipped) == sorted(["whatever.json", "0" * 64 + ".json"])


def test_rollback_marks_of_stores_sharing_a_folder_only_rise(keys, tmp_path):
    ring = trusted(keys, "alice")
    a, b = (RecallStore(tmp_path / "recall", plasmid_keys=ring) for _ in range(2))  # two processes, one folder
    v2 = plasmid(tmp_path / "v2", seed=2, lineage="legal", version=2)
    v0 = plasmid(tmp_path / "v0", seed=1, lineage="legal", version=0)
    for p in (v2, v0):
        sign_plasmid(p, keys["alice"])
    a.accept(v2)
    assert b.check(v0) != []  # b sees the mark a wrote
    b.accept(v0)  # even if its check was skipped: a lower version never lowers the mark on disk
    assert RecallStore(tmp_path / "recall", plasmid_keys=ring).check(v0)[0].startswith("VERSION_ROLLBACK")
    (tmp_path / "recall" / "versions.json").write_text(json.dumps({"x/legal": 5, "y/legal": {"version": "7"}}))
    assert RecallStore(tmp_path / "recall", plasmid_keys=ring).check(v0) == []  # bad entries dropped, no crash


def test_a_signer_revocation_names_every_plasmid_that_key_signed(keys, tmp_path):
    by_bob = plasmid(tmp_path / "b", seed=1)
    by_alice = plasmid(tmp_path / "a", seed=2)
    sign_plasmid(by_bob, keys["bob"])
    sign_plasmid(by_alice, keys["alice"])
    store = RecallStore(tmp_path / "recall", revocation_keys=trusted(keys, "alice"))
    env = issue_revocation(signer_target(str(keys["bob"]) + ".pub"), "bob's key leaked", keys["alice"], issuer="ops")
    assert store.receive(env.to_json()).ok
    assert store.check(by_bob)[0].startswith("REVOKED: every plasmid signed by key")
    assert store.check(by_alice) == []


def test_rollback_to_an_older_version_is_refused(keys, tmp_path):
    ring = trusted(keys, "alice", "bob")
    store = RecallStore(tmp_path / "recall", plasmid_keys=ring)
    v2 = plasmid(tmp_path / "v2", seed=2, lineage="legal", version=2)
    v1 = plasmid(tmp_path / "v1", seed=1, lineage="legal", version=1)
    v3 = plasmid(tmp_path / "v3", seed=3, lineage="legal", version=3)
    for p in (v2, v1, v3):
        sign_plasmid(p, keys["alice"])
    assert store.check(v2) == []
    store.accept(v2)
    refusal = store.check(v1)
    assert len(refusal) == 1 and refusal[0].startswith("VERSION_ROLLBACK: legal version 1 is older than version 2")
    assert store.check(v3) == []
    by_bob = shutil.copytree(v1, tmp_path / "v1-bob")
    (by_bob / "plora.sig.json").unlink()
    sign_plasmid(by_bob, keys["bob"])
    assert store.check(by_bob) == []  # per signer: bob never released a higher version of this lineage
    assert RecallStore(tmp_path / "recall", plasmid_keys=ring).check(v1) != []  # the mark survives a restart
    unsigned_store = RecallStore(tmp_path / "recall2")  # signatures off: no verified signer, nothing to compare
    unsigned_store.accept(v2)
    assert unsigned_store.check(v1) == []


def test_manifests_without_a_version_still_load_and_keep_their_signatures(keys, tmp_path):
    old = plasmid(tmp_path / "old")
    sign_plasmid(old, keys["alice"])
    text = (old / "plora.yml").read_text()
    assert "version" not in text.replace("schema_version", "") and "lineage" not in text
    assert release_of(read_manifest(old)) == ("old", 0)
    assert verify_plasmid(old, trusted(keys, "alice")).ok  # canonical bytes unchanged by the new optional fields
    res = runner.invoke(app, ["release", str(old), "--version", "4", "--lineage", "legal-line"])
    assert res.exit_code == 0 and "plora sign" in res.output, res.output
    assert release_of(read_manifest(old)) == ("legal-line", 4)
    assert "SIGNATURE_INVALID" in verify_plasmid(old, trusted(keys, "alice")).codes  # the version is signed
    sign_plasmid(old, keys["alice"])
    assert verify_plasmid(old, trusted(keys, "alice")).ok
    assert runner.invoke(app, ["release", str(old), "--version", "-1"]).exit_code == 2
    (old / "adapter_model.safetensors").write_bytes(b"broken")
    with pytest.raises(Exception, match="refusing to stamp"):
        stamp_release(old, 5)


def test_peer_scores_decay_and_graylist_below_the_threshold():
    book = PeerScores(Scoring(penalty_rejected=1.0, penalty_revoked=4.0, decay=0.5, threshold=-3.0))
    book.penalise("p", 1, rejected=2)
    assert book.score("p", 1) == -2.0 and not book.graylisted("p", 1)
    book.penalise("p", 1, revoked=1)
    assert book.score("p", 1) == -6.0 and book.graylisted("p", 1) and book.graylisted("p", 1 + 0)
    assert book.score("p", 2) == -3.0 and not book.graylisted("p", 2)  # decays back: graylisted "for a while"
    assert not book.graylisted("never-seen", 5) and book.snapshot(2) == {"p": -3.0}


# --------------------------------------------------------------------------------------------------- live model
def test_hot_unload_restores_the_live_weights_bit_for_bit(legal_plasmid, trojan_plasmid, tmp_path):
    import torch

    from plora.recall.live import LiveModel

    live = LiveModel("plora-tiny")
    pristine = {k: v.clone() for k, v in live.base.model.state_dict().items()}
    before = live.digest()
    live.inject(legal_plasmid, "legal")
    after_clean = live.digest()
    live.inject(trojan_plasmid, "trojan")
    assert live.digest() not in (before, after_clean)  # merged: the trojan really changed the weights
    check = live.unload("trojan")
    assert check["equal"] and check["after_removal"] == check["pre_injection"] == after_clean
    # revoked while a later plasmid is on top: equal to a fresh base with only the others, in order
    live.inject(trojan_plasmid, "trojan")
    live.inject(shutil.copytree(legal_plasmid, tmp_path / "legal2"), "legal2")
    check = live.unload("trojan")
    assert check["equal"] and check["later_injections"] == 1 and live.injected() == ["legal", "legal2"]
    live.unload("legal2")
    live.unload("legal")
    assert live.digest() == before
    assert all(torch.equal(v, pristine[k]) for k, v in live.base.model.state_dict().items())


def test_an_agent_restarted_after_a_revocation_never_offers_what_it_names(keys, tmp_path):
    """A revocation is saved before its purge: an agent stopped in between purges at start-up, before serving."""
    from plora.swarm.agent import Agent, AgentConfig

    p = plasmid(tmp_path / "store" / "legal")
    other = plasmid(tmp_path / "store" / "medical", seed=3)
    saved = RecallStore(tmp_path / "store.recall", revocation_keys=trusted(keys, "alice"))
    assert saved.receive(issue_revocation(artifact_target(p), "backdoor", keys["alice"], issuer="ops").to_json()).ok
    agent = Agent(AgentConfig(listen="127.0.0.1:0", root=tmp_path / "store", name="a", security=False,
                              revocation_keys=[str(keys["alice"]) + ".pub"]))
    try:
        assert sorted(agent.holdings()) == [other.name] and not p.exists()
        assert [d.name.split("-", 1)[1] for d in (tmp_path / "store.recall" / "quarantine").iterdir()] == ["legal"]
    finally:
        agent.stop(0)


def test_an_agent_asks_other_peers_for_a_record_one_peer_sent_garbled(keys, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from plora.swarm import agent_recall
    from plora.swarm.agent_recall import AgentRecall

    p = plasmid(tmp_path / "store" / "legal")
    env = issue_revocation(artifact_target(p), "backdoor", keys["alice"], issuer="ops")
    garbled = forged(env, signatures=[{"keyid": env.signatures[0].keyid, "sig": base64.b64encode(b"x" * 64).decode()}])
    served = {"evil": garbled.to_json(), "good": env.to_json()}
    asked: list[str] = []

    def get_revocations(peer, ids, limits):
        asked.append(peer)
        return [served[peer]]

    monkeypatch.setattr(agent_recall, "get_revocations", get_revocations)
    recall = AgentRecall(tmp_path / "store", None, revocation_keys=[str(keys["alice"]) + ".pub"])
    index = SimpleNamespace(refresh=lambda: {})
    rid = RecallStore(tmp_path / "probe", revocation_keys=trusted(keys, "alice")).receive(env.to_json()).id
    refs = {peer: [SimpleNamespace(id=rid, size=len(data))] for peer, data in served.items()}
    for _ in range(2):
        recall.take_revocations("evil", "evil", refs["evil"], 1, None, index)
    assert asked == ["evil"] and not recall.store.has(rid)  # refused once; the same copy is not asked for again
    recall.take_revocations("good", "good", refs["good"], 1, None, index)
    assert asked == ["evil", "good"] and recall.store.has(rid) and recall.store.check(p)[0].startswith("REVOKED")


def test_a_standalone_agent_obeys_a_revocation_file_from_the_start(keys, tmp_path):
    from plora.errors import PloraError
    from plora.swarm.agent import Agent, AgentConfig

    p = plasmid(tmp_path / "store" / "legal")
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    issue_revocation(artifact_target(p), "backdoor", keys["alice"], issuer="ops", out=good)
    issue_revocation(artifact_target(p), "backdoor", keys["carol"], issuer="carol", out=bad)
    cfg = AgentConfig(listen="127.0.0.1:0", root=tmp_path / "store", name="a", security=False,
                      revocation_keys=[str(keys["alice"]) + ".pub"], revocations=[str(bad)])
    with pytest.raises(PloraError, match=r"--revocation .*bad.json: refused \(SIGNER_UNTRUSTED.*QUORUM_NOT_MET"):
        Agent(cfg)
    assert p.exists()
    cfg.revocations = [str(good)]
    agent = Agent(cfg)
    try:
        assert agent.holdings() == {} and len(agent.recall.store.ids()) == 1  # purged, and listed to peers
    finally:
        agent.stop(0)
