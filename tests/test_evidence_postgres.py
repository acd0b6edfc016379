"""The evidence sink on PostgreSQL behind the real gateway: records made by Envoy with the
built filter land in a PostgreSQL schema, verify, and their inclusion proofs check out
against the signed tree head with independent code; a second sink replica on the same
database serves the same tree and appends to it.

PostgreSQL comes from MERCATOR_TEST_POSTGRES_URL, which scripts/test-postgres.sh (run by
`make test`) sets after starting a throwaway server. Without it these tests are skipped
with that command named, unless MERCATOR_TEST_POSTGRES_REQUIRED is set: then they fail.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from support import (
    BIN,
    Stack,
    free_port,
    http_get_json,
    http_post,
    start_stack,
    verify_independently,
    wait_for,
)
from test_evidence_audit import call_as, inclusion_holds, leaf_of, tree_head_holds

HOW_TO_RUN = (
    "run `scripts/test-postgres.sh .venv/bin/python -m pytest tests/test_evidence_postgres.py` "
    "(or `make test`), which starts a throwaway PostgreSQL server and sets "
    "MERCATOR_TEST_POSTGRES_URL"
)


def postgres_url() -> str:
    url = os.environ.get("MERCATOR_TEST_POSTGRES_URL", "")
    if url:
        return url
    if os.environ.get("MERCATOR_TEST_POSTGRES_REQUIRED"):
        pytest.fail(f"MERCATOR_TEST_POSTGRES_URL is not set: {HOW_TO_RUN}")
    pytest.skip(f"MERCATOR_TEST_POSTGRES_URL is not set: {HOW_TO_RUN}")


def psql(url: str, sql: str) -> str:
    return subprocess.run(
        ["psql", url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def resigned(record: dict, seed_base64: str) -> dict:
    """The record under a fresh id, signed again with the gateway's key, as a second
    gateway would send it."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    unsigned = {name: value for name, value in record.items() if name != "signature"}
    unsigned["id"] = "evt_" + "".join(secrets.choice(alphabet) for _ in range(26))
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_base64))
    signature = base64.b64encode(key.sign(rfc8785.dumps(unsigned))).decode()
    return {**unsigned, "signature": signature}


@pytest.fixture(scope="module")
def database() -> str:
    """A sink `--db` URL whose search_path is a new, empty schema."""
    url = postgres_url()
    schema = f"pytest_{os.getpid()}_{time.monotonic_ns()}"
    psql(url, f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=" + urllib.parse.quote(f"-csearch_path={schema}")


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory, database) -> Stack:
    running = start_stack(tmp_path_factory.mktemp("postgres-stack"), db=database)
    yield running
    running.stop()


def test_gateway_records_land_in_postgres_and_their_proofs_check_out(pg_stack, database):
    ids = [call_as(pg_stack, "finance") for _ in range(3)] + [call_as(pg_stack, "engineering")]
    keys = pg_stack.public_keys()
    tree_key = http_get_json(f"{pg_stack.sink_url}/v1/tree/key")

    stored = psql(database, "SELECT id FROM evidence ORDER BY seq").split()
    assert stored[-4:] == ids
    assert "postgres://" in (pg_stack.workdir / "sink.log").read_text()
    for evidence_id in ids:
        record = pg_stack.evidence(evidence_id)
        assert verify_independently(record, keys)
        proof = http_get_json(f"{pg_stack.sink_url}/v1/evidence/{evidence_id}/proof")
        head = proof["tree_head"]
        assert tree_head_holds(head, tree_key)
        assert proof["leaf_hash"] == leaf_of(record).hex()
        assert inclusion_holds(
            leaf_of(record),
            proof["leaf_index"],
            head["tree_size"],
            [bytes.fromhex(h) for h in proof["inclusion_proof"]],
            bytes.fromhex(head["root_hash"]),
        )
    # The database refuses an edit even from someone who holds it.
    refused = subprocess.run(
        ["psql", database, "-X", "-v", "ON_ERROR_STOP=1", "-c",
         f"UPDATE evidence SET record = '{{}}' WHERE id = '{ids[0]}'"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "append-only" in refused.stderr


def test_a_second_sink_replica_on_the_same_database_serves_and_extends_one_tree(
    pg_stack, database, tmp_path
):
    call_as(pg_stack, "finance")
    port = free_port()
    dev = pg_stack.dev_dir
    log = open(tmp_path / "replica.log", "wb")
    replica = subprocess.Popen(
        [
            str(BIN / "evidence-sink"),
            "--listen", f"127.0.0.1:{port}",
            "--db", database,
            "--keys", str(dev / "sink-keys.json"),
            "--tree-key", str(dev / "sink-tree.key"),
            "--operator-token-sha256", (dev / "operator-token.sha256").read_text().strip(),
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        replica_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get_json(f"{replica_url}/healthz"), "the second sink replica")
        first = http_get_json(f"{pg_stack.sink_url}/v1/tree")
        assert http_get_json(f"{replica_url}/v1/tree")["root_hash"] == first["root_hash"]

        # The replica accepts a record of its own while the gateway's sink appends one.
        fresh = resigned(pg_stack.evidence(call_as(pg_stack, "finance")), pg_stack.signing_key)
        before = http_get_json(f"{pg_stack.sink_url}/v1/tree")
        status, answer = http_post(f"{replica_url}/v1/evidence", json.dumps(fresh).encode())
        assert (status, answer) == (201, {"accepted": 1, "duplicates": 0})
        gateway_id = call_as(pg_stack, "engineering")

        on_gateway_sink = http_get_json(f"{pg_stack.sink_url}/v1/tree")
        on_replica = http_get_json(f"{replica_url}/v1/tree")
        assert on_replica["tree_size"] == before["tree_size"] + 2
        assert on_gateway_sink["tree_size"] == on_replica["tree_size"]
        assert on_gateway_sink["root_hash"] == on_replica["root_hash"]
        leaves = {
            http_get_json(f"{url}/v1/evidence/{evidence_id}/proof")["leaf_index"]
            for url in (pg_stack.sink_url, replica_url)
            for evidence_id in (fresh["id"], gateway_id)
        }
        assert leaves == {before["tree_size"], before["tree_size"] + 1}
        proof = http_get_json(
            f"{replica_url}/v1/tree/consistency"
            f"?first={first['tree_size']}&second={on_replica['tree_size']}"
        )
        assert proof["consistency_proof"]
    finally:
        replica.terminate()
        replica.wait(timeout=10)
