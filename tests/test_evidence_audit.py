"""Evidence an auditor can trust, end to end: records made by the real gateway (Envoy with
the built filter) land in the sink's Merkle tree; a stranger checks a record's inclusion
proof and the signed tree head with independent code (hashlib, rfc8785, cryptography);
`mercator audit` checks a whole bundle and the consistency of two tree heads with no
network; erasure keeps every other proof valid; an edit in the database is caught.

These tests use a stack of their own, because they erase and tamper with its evidence.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import sqlite3
import subprocess
import urllib.error
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from support import BIN, Stack, http_get_json, http_get_text, http_post, start_stack

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Audit me"}]}


@pytest.fixture(scope="module")
def audit_stack(tmp_path_factory) -> Stack:
    running = start_stack(
        tmp_path_factory.mktemp("audit-stack"),
        extra_users={"gdpr-subject": {"department": "finance"}},
    )
    yield running
    running.stop()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_of(record: dict) -> bytes:
    """RFC 9162 leaf: SHA-256(0x00 || RFC 8785 JSON of the record, signature included)."""
    return sha256(b"\x00" + rfc8785.dumps(record))


def inclusion_holds(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162, 2.1.3.2, written from the RFC's text."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = sha256(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def tree_head_holds(head: dict, tree_key: dict) -> bool:
    """The head's Ed25519 signature over the RFC 8785 JSON of the head without it."""
    public = base64.b64decode(tree_key["public_key"])
    assert tree_key["key_id"] == "ed25519:" + hashlib.sha256(public).hexdigest()[:16]
    unsigned = {name: value for name, value in head.items() if name != "signature"}
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            base64.b64decode(head["signature"]), rfc8785.dumps(unsigned)
        )
        return True
    except Exception:
        return False


def call_as(stack: Stack, label: str) -> str:
    """One call (allowed or denied: each leaves a record); its record's id once stored."""
    reply = stack.call(CHAT, key=stack.keys[label].key)
    assert reply.evidence_id, reply.headers
    stack.evidence(reply.evidence_id)
    return reply.evidence_id


def mercator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "mercator"), *args], capture_output=True, text=True, check=False
    )


def save(path: Path, value) -> Path:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_a_stranger_verifies_a_gateway_records_inclusion_with_independent_code(audit_stack):
    evidence_id = call_as(audit_stack, "finance")
    record = audit_stack.evidence(evidence_id)
    tree_key = http_get_json(f"{audit_stack.sink_url}/v1/tree/key")

    # Proofs and tree heads are public: no operator token.
    proof = http_get_json(f"{audit_stack.sink_url}/v1/evidence/{evidence_id}/proof")
    head = proof["tree_head"]

    assert tree_head_holds(head, tree_key)
    assert head["tree_size"] == proof["tree_size"]
    assert proof["leaf_hash"] == leaf_of(record).hex()
    assert inclusion_holds(
        leaf_of(record),
        proof["leaf_index"],
        head["tree_size"],
        [bytes.fromhex(h) for h in proof["inclusion_proof"]],
        bytes.fromhex(head["root_hash"]),
    )
    other = dict(record, cost=123.0)
    assert not inclusion_holds(
        leaf_of(other),
        proof["leaf_index"],
        head["tree_size"],
        [bytes.fromhex(h) for h in proof["inclusion_proof"]],
        bytes.fromhex(head["root_hash"]),
    )


def test_mercator_audit_checks_a_bundle_and_two_tree_heads_offline(audit_stack, tmp_path):
    for _ in range(3):
        call_as(audit_stack, "finance")
    old_head = http_get_json(f"{audit_stack.sink_url}/v1/tree")
    call_as(audit_stack, "engineering")
    new_head = http_get_json(f"{audit_stack.sink_url}/v1/tree")
    proof = http_get_json(
        f"{audit_stack.sink_url}/v1/tree/consistency"
        f"?first={old_head['tree_size']}&second={new_head['tree_size']}"
    )
    bundle = http_get_text(
        f"{audit_stack.sink_url}/v1/evidence/bundle?user_id=demo-finance",
        audit_stack.operator_token,
    )
    tree_key = save(tmp_path / "tree-key.json", http_get_json(f"{audit_stack.sink_url}/v1/tree/key"))
    keys = str(audit_stack.dev_dir / "sink-keys.json")

    audited = mercator("audit", "bundle", "--keys", keys, "--tree-key", str(tree_key),
                       str(save(tmp_path / "bundle.jsonl", bundle)))  # fmt: skip
    consistent = mercator(
        "audit", "consistency", "--tree-key", str(tree_key),
        "--old", str(save(tmp_path / "old.json", old_head)),
        "--new", str(save(tmp_path / "new.json", new_head)),
        "--proof", str(save(tmp_path / "proof.json", proof)),
    )  # fmt: skip
    swapped = mercator(
        "audit", "consistency", "--tree-key", str(tree_key),
        "--old", str(tmp_path / "new.json"), "--new", str(tmp_path / "old.json"),
        "--proof", str(tmp_path / "proof.json"),
    )  # fmt: skip

    finance_records = len(bundle.splitlines()) - 2
    assert finance_records >= 3
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert f"{finance_records} records: every signature verified" in audited.stdout
    assert consistent.returncode == 0, consistent.stdout + consistent.stderr
    assert consistent.stdout.startswith("consistent")
    assert swapped.returncode == 1
    assert swapped.stdout.startswith("FAIL")


def test_query_and_export_need_the_operator_token(audit_stack):
    with pytest.raises(urllib.error.HTTPError) as refused:
        http_get_json(f"{audit_stack.sink_url}/v1/evidence/export")

    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"]["code"] == "operator_token_required"
    assert "records" in audit_stack.sink_get("/v1/evidence?limit=1")


def test_erasing_a_user_keeps_everyone_elses_proofs_and_the_tree(audit_stack, tmp_path):
    erased_ids = [call_as(audit_stack, "gdpr-subject") for _ in range(2)]
    kept_id = call_as(audit_stack, "finance")
    before = http_get_json(f"{audit_stack.sink_url}/v1/tree")

    status, answer = http_post(
        f"{audit_stack.sink_url}/v1/erasure",
        json.dumps({"user_id": "gdpr-subject"}).encode(),
        token=audit_stack.operator_token,
    )

    assert status == 200, answer
    assert answer["erased"] == 2
    with pytest.raises(urllib.error.HTTPError) as gone:
        audit_stack.evidence(erased_ids[0])
    assert gone.value.code == 410
    assert json.loads(gone.value.read())["error"]["code"] == "erased"
    after = http_get_json(f"{audit_stack.sink_url}/v1/tree?tree_size={before['tree_size']}")
    assert after["root_hash"] == before["root_hash"]
    proof = http_get_json(f"{audit_stack.sink_url}/v1/evidence/{kept_id}/proof")
    assert inclusion_holds(
        leaf_of(audit_stack.evidence(kept_id)),
        proof["leaf_index"],
        proof["tree_size"],
        [bytes.fromhex(h) for h in proof["inclusion_proof"]],
        bytes.fromhex(proof["tree_head"]["root_hash"]),
    )
    erased_proof = http_get_json(f"{audit_stack.sink_url}/v1/evidence/{erased_ids[1]}/proof")
    assert erased_proof["status"] == "erased"


def test_a_record_edited_in_the_sinks_database_fails_the_audit(audit_stack, tmp_path):
    evidence_id = call_as(audit_stack, "engineering")
    database = sqlite3.connect(audit_stack.workdir / "evidence.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        database.execute("UPDATE evidence SET model = 'x' WHERE id = ?", (evidence_id,))
    database.execute("DROP TRIGGER evidence_is_never_updated")
    database.execute(
        "UPDATE evidence SET record = replace(record, '\"model\":\"gpt-4\"', "
        "'\"model\":\"gpt-5\"') WHERE id = ?",
        (evidence_id,),
    )
    database.commit()
    database.close()
    bundle = http_get_text(
        f"{audit_stack.sink_url}/v1/evidence/bundle?user_id=demo-engineering",
        audit_stack.operator_token,
    )
    tree_key = save(tmp_path / "tree-key.json", http_get_json(f"{audit_stack.sink_url}/v1/tree/key"))

    audited = mercator(
        "audit", "bundle", "--keys", str(audit_stack.dev_dir / "sink-keys.json"),
        "--tree-key", str(tree_key), str(save(tmp_path / "bundle.jsonl", bundle)),
    )  # fmt: skip

    assert audited.returncode == 1
    assert audited.stdout.startswith("FAIL line")
    assert evidence_id in audited.stdout


def test_a_hundred_megabyte_upload_is_refused_with_413_before_it_is_sent(audit_stack):
    connection = http.client.HTTPConnection("127.0.0.1", audit_stack.sink_port, timeout=10)
    connection.putrequest("POST", "/v1/evidence")
    connection.putheader("content-type", "application/json")
    connection.putheader("content-length", str(100 * 1024 * 1024))
    connection.endheaders()
    # Not a byte of the body is sent: the sink answers from the declared length alone.
    response = connection.getresponse()

    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "body_too_large"
    connection.close()
    assert http_get_json(f"{audit_stack.sink_url}/healthz") == {"status": "ok"}
