"""A governed chat completion, end to end, through a real Envoy with the built filter.

Every call the gateway answers must leave exactly one evidence record in the sink, and
that record must verify with the sink's published key using independent RFC 8785 and
Ed25519 code (not the project's).
"""

import json
import socket
import ssl

import openai
import pytest

from support import Reply, Stack, http_post, verify_independently

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Summarise our Q3 numbers"}]}


def recorded_once(stack: Stack, reply: Reply) -> dict:
    """The one verified record behind a reply."""
    assert reply.evidence_id and reply.evidence_id.startswith("evt_"), reply.headers
    record = stack.evidence(reply.evidence_id)
    assert record["id"] == reply.evidence_id
    assert verify_independently(record, stack.public_keys()), record
    assert len(stack.records_for_request(record["request_id"])) == 1
    return record


def test_allowed_call_through_the_openai_sdk_returns_the_providers_answer(stack: Stack):
    client = openai.OpenAI(
        base_url=f"{stack.gateway_url}/v1",
        api_key=stack.keys["finance"].key,
        http_client=openai.DefaultHttpx2Client(
            verify=ssl.create_default_context(cafile=str(stack.ca_file))
        ),
    )

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4", messages=[{"role": "user", "content": "Hello from the SDK"}]
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "Stand-in reply to: Hello from the SDK"
    record = recorded_once(stack, Reply(raw.status_code, dict(raw.headers), b""))
    assert record["decision"] == "allow"
    assert record["user_id"] == "demo-finance"
    assert record["model"] == "gpt-4"
    assert record["token_usage"] == {
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
        "total_tokens": completion.usage.total_tokens,
    }
    expected_cost = (
        completion.usage.prompt_tokens * 30 + completion.usage.completion_tokens * 60
    ) / 1_000_000
    assert record["cost"] == pytest.approx(expected_cost)
    assert record["policy_bundle"].startswith("sha256:")
    assert record["policy_decisions"] == [
        {"policy": "department", "phase": "request", "decision": "allow", "code": None,
         "reason": None}
    ]
    assert json.loads(record["response"]["body"])["id"] == completion.id


def test_allowed_call_reaches_the_provider_with_the_provider_key_not_the_callers(stack: Stack):
    marker = "marker-for-key-swap"
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": marker}]}

    reply = stack.call(body, key=stack.keys["finance"].key, headers={"x-mercator-user-id": "ceo"})

    assert reply.status == 200, reply.body
    [seen] = [r for r in stack.provider_requests() if marker in r["body"]]
    headers = {name: value for name, value in seen["headers"]}
    assert headers["authorization"] == f"Bearer {stack.provider_key}"
    assert stack.keys["finance"].key not in json.dumps(seen)
    assert not any(name.startswith("x-mercator-") for name in headers)
    assert recorded_once(stack, reply)["user_id"] == "demo-finance"


def test_engineering_may_use_gpt_3_5_turbo(stack: Stack):
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hi"}]}

    reply = stack.call(body, key=stack.keys["engineering"].key)

    assert reply.status == 200, reply.body
    assert recorded_once(stack, reply)["user_id"] == "demo-engineering"


def test_finance_asking_for_gpt_3_5_turbo_is_denied_with_403_and_the_reason(stack: Stack):
    marker = "marker-for-denied-call"
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": marker}]}

    reply = stack.call(body, key=stack.keys["finance"].key)

    assert reply.status == 403
    error = reply.json()["error"]
    assert error["message"] == "Department not authorized for this model"
    assert error["code"] == "policy_denied"
    assert not [r for r in stack.provider_requests() if marker in r["body"]]
    record = recorded_once(stack, reply)
    assert record["decision"] == "deny"
    assert record["policy_decisions"][0]["reason"] == "Department not authorized for this model"


@pytest.mark.parametrize(
    "label, key, code",
    [
        ("missing", None, "missing_api_key"),
        ("unknown", "mj_this-key-was-never-issued-0000000000000", "invalid_api_key"),
        ("expired", "expired", "api_key_expired"),
        ("disabled", "disabled", "api_key_disabled"),
        ("empty bearer", "", "malformed_api_key"),
    ],
)
def test_bad_missing_and_expired_keys_get_401_in_openai_shape(stack: Stack, label, key, code):
    presented = stack.keys[key].key if key in stack.keys else key

    reply = stack.call(CHAT, key=presented)

    assert reply.status == 401, (label, reply.body)
    assert reply.json()["error"]["code"] == code
    record = recorded_once(stack, reply)
    assert record["decision"] == "unauthenticated"
    assert record["user_id"] is None
    if presented:
        assert presented not in json.dumps(record)


def test_both_keys_of_a_rotated_user_work(stack: Stack):
    for label in ("rotated-old", "rotated-new"):
        reply = stack.call(CHAT, key=stack.keys[label].key)
        assert reply.status == 200, (label, reply.body)
        assert recorded_once(stack, reply)["auth"]["key_name"] in ("rota-2025", "rota-2026")


@pytest.mark.parametrize(
    "body, param",
    [
        (b"this is not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (json.dumps({"model": 4, "messages": [{"role": "user", "content": "x"}]}).encode(),
         "model"),
        (json.dumps({"model": "gpt-4", "messages": []}).encode(), "messages"),
        (json.dumps({"model": "gpt-4", "messages": [{"role": "king", "content": "x"}]}).encode(),
         "messages[0].role"),
        (json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": 7}]}).encode(),
         "messages[0].content"),
        (b"\xff\xfe\x00 not utf-8", None),
        # Two models: the policy and the provider must never read different ones.
        (b'{"model": "gpt-4", "model": "gpt-3.5-turbo", "messages": '
         b'[{"role": "user", "content": "x"}]}', None),
    ],
)  # fmt: skip
def test_malformed_bodies_get_400_naming_the_field(stack: Stack, body, param):
    reply = stack.call(body, key=stack.keys["finance"].key)

    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert recorded_once(stack, reply)["decision"] == "invalid"


def test_a_body_over_the_limit_gets_413(stack: Stack):
    huge = {"model": "gpt-4", "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}

    reply = stack.call(huge, key=stack.keys["finance"].key)

    assert reply.status == 413
    assert reply.json()["error"]["code"] == "request_too_large"
    recorded_once(stack, reply)


def test_an_unknown_path_gets_404_after_authentication(stack: Stack):
    reply = stack.call(CHAT, key=stack.keys["finance"].key, path="/v1/embeddings")

    assert reply.status == 404
    recorded_once(stack, reply)


def test_a_tampered_record_is_refused_by_the_sink(stack: Stack):
    reply = stack.call(CHAT, key=stack.keys["finance"].key)
    record = recorded_once(stack, reply)
    tampered = dict(record, id="evt_tamperedtamperedtampered0", model="gpt-3.5-turbo")

    status, answer = http_post(f"{stack.sink_url}/v1/evidence", json.dumps(tampered).encode())

    assert status == 422
    assert answer["error"]["code"] == "signature_invalid"
    assert not verify_independently(tampered, stack.public_keys())


def test_a_record_signed_by_an_unknown_key_is_refused_by_the_sink(stack: Stack):
    reply = stack.call(CHAT, key=stack.keys["finance"].key)
    record = dict(recorded_once(stack, reply), key_id="ed25519:0000000000000000")
    record["id"] = "evt_unknownkeyunknownkeyunkno"

    status, answer = http_post(f"{stack.sink_url}/v1/evidence", json.dumps(record).encode())

    assert status == 422
    assert answer["error"]["code"] == "unknown_key"


def test_the_gateway_speaks_tls_1_3_only(stack: Stack):
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    context.maximum_version = ssl.TLSVersion.TLSv1_2

    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost"):
                pass


def test_an_http2_body_ended_by_trailers_is_refused_and_never_reaches_the_provider(stack: Stack):
    """A body whose stream ends with trailers never reaches the filter's body callback with
    its end; the filter must refuse it rather than let Envoy forward it unchecked."""
    import h2.config
    import h2.connection
    import h2.events

    marker = "marker-for-trailers"
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname="localhost")
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    body = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": marker}]})
    connection.send_headers(1, [
        (":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
        (":path", "/v1/chat/completions"), ("content-type", "application/json"),
        ("authorization", f"Bearer {stack.keys['finance'].key}"),
    ])  # fmt: skip
    connection.send_data(1, body.encode())
    connection.send_headers(1, [("x-trailer", "yes")], end_stream=True)
    tls.sendall(connection.data_to_send())

    status, headers, ended = None, {}, False
    while not ended:
        data = tls.recv(65536)
        if not data:
            break
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                headers = {k.decode(): v.decode() for k, v in event.headers}
                status = int(headers[":status"])
            if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended = True
        tls.sendall(connection.data_to_send())
    tls.close()

    assert status == 400, headers
    assert not any(marker in request["body"] for request in stack.provider_requests())
    record = recorded_once(stack, Reply(status, headers, b""))
    assert record["decision"] == "invalid"
