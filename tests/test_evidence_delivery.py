"""Delivery of evidence from the filter to the sink through the real Envoy, while the sink
crashes (SIGKILL) and comes back on the same port, database and keys:

- fail closed (the default): a burst of requests across a crash loses no record and
  stores none twice; with a full buffer new requests get 503 `evidence_unavailable` in
  the caller's API shape, and are served again once the sink is back;
- drop mode: requests keep being served, and every record is either stored or counted in
  Envoy's `mercator_evidence_dropped` stat, never both, never neither.

Each test runs its own stack, since it kills that stack's sink. The crash-under-load test
runs on both of the sink's stores: SQLite, and PostgreSQL (a fresh schema on the server
that scripts/test-postgres.sh starts for `make test`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from support import Stack, start_stack
from test_evidence_postgres import database  # noqa: F401  (a fixture: a fresh schema)

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Deliver me"}]}
ANTHROPIC = {
    "model": "claude-3-sonnet",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Deliver me"}],
}
# Short waits between delivery attempts so that a test does not wait out a long backoff
# after the sink is back.
FAST_RETRY = {"flush_interval_ms": 50, "max_backoff_ms": 300}


def wait_until_stored(stack: Stack, expected: int, timeout: float = 60.0) -> list[str]:
    """The sink's record ids once it holds at least `expected` records (or at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        ids = stack.all_evidence_ids()
        if len(ids) >= expected or time.monotonic() > deadline:
            return ids
        time.sleep(0.2)


def envoy_log_with(stack: Stack, line: str, timeout: float = 10.0) -> str:
    """Envoy's log once it holds `line` (the filter reports on its next timer tick)."""
    deadline = time.monotonic() + timeout
    while True:
        text = (stack.workdir / "envoy.log").read_text(errors="replace")
        if line in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def assert_stored_exactly_once(stack: Stack, served_ids: list[str]) -> None:
    ids = wait_until_stored(stack, len(served_ids))
    # Let any late duplicate land before judging.
    time.sleep(1.0)
    ids = stack.all_evidence_ids()

    twice = [evidence_id for evidence_id, n in Counter(ids).items() if n > 1]
    missing = set(served_ids) - set(ids)
    unexpected = set(ids) - set(served_ids)
    assert not twice, f"stored more than once: {twice[:5]}"
    assert not missing, f"{len(missing)} records never arrived, e.g. {sorted(missing)[:5]}"
    assert not unexpected, f"records nobody was served: {sorted(unexpected)[:5]}"
    assert stack.sink_get("/v1/tree")["tree_size"] == len(served_ids)


@pytest.fixture(params=["sqlite", "postgres"])
def sink_db(request) -> str | None:
    """The sink's `--db`: its default SQLite file, or a new schema on PostgreSQL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("database")


def test_sink_killed_and_restarted_during_a_burst_loses_no_record_and_stores_none_twice(
    tmp_path, sink_db
):
    stack = start_stack(tmp_path, evidence=FAST_RETRY, db=sink_db)
    total, threads = 200, 4
    # The sink is killed once `kill_at` requests are answered and some records stored;
    # requests from `kill_gate` on wait for the kill, and from `restart_gate` on for the
    # restart, so that whatever the machine's speed, requests are sent while the sink is
    # down and again after it is back.
    kill_at, kill_gate, restart_gate = 60, 80, 140
    killed, restarted = threading.Event(), threading.Event()
    served: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    next_request = iter(range(total))

    def caller() -> None:
        while True:
            with lock:
                index = next(next_request, None)
            if index is None:
                return
            if index >= restart_gate:
                restarted.wait(timeout=60)
            elif index >= kill_gate:
                killed.wait(timeout=60)
            reply = stack.call(CHAT, stack.keys["finance"].key)
            with lock:
                if reply.status == 200 and reply.evidence_id:
                    served.append(reply.evidence_id)
                else:
                    failures.append(f"{reply.status} {reply.body[:200]!r}")
            # A steady stream rather than a flood, so that the crash lands with records
            # delivered, in flight and queued.
            time.sleep(0.02)

    def done() -> int:
        with lock:
            return len(served) + len(failures)

    def wait_until(condition, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    try:
        workers = [threading.Thread(target=caller) for _ in range(threads)]
        for worker in workers:
            worker.start()

        wait_until(lambda: done() >= kill_at, "the first requests")
        wait_until(lambda: len(stack.all_evidence_ids()) > 0, "a first delivery")
        stack.kill_sink()
        killed.set()

        wait_until(lambda: done() >= restart_gate, "the requests while the sink is down")
        stack.start_sink()
        restarted.set()
        for worker in workers:
            worker.join(timeout=120)

        assert not failures, failures[:5]
        assert len(served) == total
        assert_stored_exactly_once(stack, served)
    except AssertionError:
        print(stack.logs())
        raise
    finally:
        killed.set()
        restarted.set()
        stack.stop()


def test_a_full_buffer_with_the_sink_down_refuses_requests_until_the_sink_is_back(tmp_path):
    stack = start_stack(tmp_path, evidence={**FAST_RETRY, "max_buffered_records": 3})
    try:
        first = stack.call(CHAT, stack.keys["finance"].key)
        assert first.status == 200
        served = [first.evidence_id]
        stack.evidence(first.evidence_id)
        stack.kill_sink()

        # Each Envoy worker holds at most 3 records: after that every request is refused.
        refused_in_a_row = 0
        for _ in range(100):
            reply = stack.call(CHAT, stack.keys["finance"].key)
            if reply.status == 200:
                served.append(reply.evidence_id)
                refused_in_a_row = 0
                continue
            assert reply.status == 503, reply.body
            error = reply.json()["error"]
            assert error["code"] == "evidence_unavailable", error
            assert "evidence" in error["message"], error
            assert reply.headers.get("retry-after"), reply.headers
            assert reply.evidence_id is None, "a refusal with no record names none"
            refused_in_a_row += 1
            if refused_in_a_row == 5:
                break
        assert refused_in_a_row == 5, f"still serving after {len(served)} requests"

        headers = {"x-api-key": stack.keys["finance"].key, "anthropic-version": "2023-06-01"}
        anthropic = stack.call(ANTHROPIC, path="/v1/messages", headers=headers)
        assert anthropic.status == 503
        assert anthropic.json()["type"] == "error"
        assert anthropic.json()["error"]["type"] == "api_error"
        assert stack.stat("mercator_evidence_refused") >= 6
        report = "requests refused with 503 since the last report"
        assert report in envoy_log_with(stack, report)

        stack.start_sink()
        deadline = time.monotonic() + 30
        while True:
            reply = stack.call(CHAT, stack.keys["finance"].key)
            if reply.status == 200:
                served.append(reply.evidence_id)
                break
            assert reply.status == 503 and time.monotonic() < deadline, reply.body
            time.sleep(0.2)

        # Fail closed loses nothing: every served request's record arrives, once.
        assert_stored_exactly_once(stack, served)
    except AssertionError:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def test_drop_mode_keeps_serving_and_counts_every_record_it_drops(tmp_path):
    stack = start_stack(
        tmp_path, evidence={**FAST_RETRY, "max_buffered_records": 3, "when_full": "drop"}
    )
    try:
        assert stack.stat("mercator_evidence_dropped") == 0, "Envoy should show the stat"
        stack.kill_sink()

        # Each Envoy worker keeps 3 records; go on until drops begin, then a few more.
        served = []
        more = 10
        while more > 0 and len(served) < 500:
            reply = stack.call(CHAT, stack.keys["finance"].key)
            assert reply.status == 200, reply.body
            served.append(reply.evidence_id)
            if stack.stat("mercator_evidence_dropped"):
                more -= 1
        dropped = stack.stat("mercator_evidence_dropped")
        assert dropped is not None and dropped > 0, (dropped, len(served))

        stack.start_sink()
        ids = wait_until_stored(stack, len(served) - dropped)
        time.sleep(1.0)
        ids = stack.all_evidence_ids()

        # Every record is either stored once or counted as dropped.
        assert len(ids) == len(set(ids))
        assert set(ids) <= set(served)
        assert len(ids) + dropped == len(served), (len(ids), dropped)
        envoy_log = envoy_log_with(stack, "records dropped since the last report")
        assert "records dropped since the last report" in envoy_log
        assert "evidence=dropped" in envoy_log
        assert "Deliver me" not in envoy_log, "a drop is logged without content"
    except AssertionError:
        print(stack.logs())
        raise
    finally:
        stack.stop()
