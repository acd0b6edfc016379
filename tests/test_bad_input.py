"""Hostile and broken requests through a real Envoy: every one gets a clear error in the
caller's API shape with the field named (400, or 413 for sizes), is recorded once, and
never reaches the provider; the gateway itself never answers 5xx to any of them. The
configured limits (config/gateway.yaml) are enforced the same way."""

import json
import socket
import ssl

import pytest

from support import Stack
from test_gateway import recorded_once

USER = {"role": "user", "content": "x"}


def chat(**fields) -> dict:
    return {"model": "gpt-4", "messages": [USER], **fields}


def messages(**fields) -> dict:
    return {"model": "claude-3-sonnet", "max_tokens": 16, "messages": [USER], **fields}


def anthropic_headers(stack: Stack) -> dict[str, str]:
    return {"x-api-key": stack.keys["engineering"].key, "anthropic-version": "2023-06-01"}


@pytest.mark.parametrize(
    "body, param",
    [
        # Nested far past any sane depth: refused, not a stack overflow in the filter.
        (b'{"model": "gpt-4", "messages": [], "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
        (b'{"model": "gpt-4", "max_tokens": 1e400, "messages": []}', None),
        (json.dumps(chat(max_tokens=2**64)).encode(), "max_tokens"),
        (json.dumps(chat(max_tokens=-5)).encode(), "max_tokens"),
        (json.dumps(chat(n=10**12)).encode(), "n"),
        (json.dumps(chat(temperature="hot")).encode(), "temperature"),
        (b"null", None),
        (json.dumps({"model": None, "messages": None}).encode(), "model"),
        (json.dumps({"model": "gpt-4", "messages": None}).encode(), "messages"),
        (json.dumps({"model": "gpt-4", "messages": [None]}).encode(), "messages[0]"),
        (json.dumps({"model": "gpt-4", "messages": [{"role": None, "content": None}]}).encode(), "messages[0].role"),
        (json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": None}]}).encode(), "messages[0].content"),
        (json.dumps(chat(messages=[{"role": "user", "content": [None]}])).encode(), "messages[0].content[0]"),
        (json.dumps(chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": None}]}])).encode(),
         "messages[0].content[0].image_url"),
        (json.dumps(chat(messages=[{"role": "tool", "content": "sunny"}])).encode(), "messages[0].tool_call_id"),
        (json.dumps(chat(messages=[{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}])).encode(),
         "messages[0].tool_calls[0].function"),
        (json.dumps(chat(response_format={"type": "yaml"})).encode(), "response_format.type"),
        (json.dumps(chat(stream_options={"include_usage": "yes"})).encode(), "stream_options.include_usage"),
        (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "\xc3\x28"}]}', None),
    ],
    ids=[
        "deeply-nested", "number-overflow", "max-tokens-2-64", "negative", "huge-n", "string-temperature",
        "null-body", "null-model", "null-messages", "null-message", "null-role", "null-content",
        "null-part", "null-image", "tool-without-id", "tool-call-without-function", "unknown-format",
        "usage-option-not-bool", "invalid-utf8-in-string",
    ],
)  # fmt: skip
def test_hostile_openai_bodies_get_400_naming_the_field(stack: Stack, body, param):
    reply = stack.call(body, key=stack.keys["finance"].key)

    assert reply.status == 400, reply.body[:300]
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert recorded_once(stack, reply)["decision"] == "invalid"


@pytest.mark.parametrize(
    "body, field",
    [
        (messages(system=None, messages=None), "messages"),
        (messages(messages=[{"role": "user", "content": [{"type": "image"}]}]), "messages[0].content[0].source"),
        (messages(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]),
         "messages[0].content[0].input"),
        (messages(messages=[{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]),
         "messages[0].content[0].tool_use_id"),
        (messages(system=[{"type": "text", "text": None}]), "system[0].text"),
        (messages(max_tokens=None), "max_tokens"),
        (messages(stream="yes"), "stream"),
    ],
    ids=["null-messages", "image-without-source", "tool-input-not-object", "tool-result-without-id",
         "null-system-text", "null-max-tokens", "stream-not-bool"],
)  # fmt: skip
def test_hostile_anthropic_bodies_get_400_in_anthropics_shape(stack: Stack, body, field):
    reply = stack.call(body, path="/v1/messages", headers=anthropic_headers(stack))

    assert reply.status == 400, reply.body[:300]
    assert reply.json()["type"] == "error"
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert field in reply.json()["error"]["message"]
    assert recorded_once(stack, reply)["decision"] == "invalid"


@pytest.mark.parametrize(
    "body, status, code, param",
    [
        (chat(model="gpt-5-preview"), 400, "model_not_allowed", "model"),
        (chat(max_tokens=16385), 400, "max_tokens_too_large", "max_tokens"),
        (chat(max_completion_tokens=10**6), 400, "max_tokens_too_large", "max_completion_tokens"),
        (chat(messages=[USER] * 1001), 400, "too_many_messages", "messages"),
        (chat(messages=[USER, {"role": "user", "content": "y" * 262_145}]), 413, "content_too_large", "messages[1]"),
    ],
    ids=["model", "max-tokens", "max-completion-tokens", "messages", "message-chars"],
)  # fmt: skip
def test_configured_limits_refuse_naming_the_field(stack: Stack, body, status, code, param):
    marker = f"limit-marker-{code}-{param}"
    body = json.loads(json.dumps(body).replace('"x"', json.dumps(marker), 1))

    reply = stack.call(body, key=stack.keys["finance"].key)

    assert reply.status == status, reply.body[:300]
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert not [r for r in stack.provider_requests() if marker in r["body"]]
    assert recorded_once(stack, reply)["decision"] == "invalid"


def test_a_model_outside_the_anthropic_list_is_refused_in_anthropics_shape(stack: Stack):
    reply = stack.call(
        messages(model="gpt-4"), path="/v1/messages", headers=anthropic_headers(stack)
    )

    assert reply.status == 400
    assert reply.json()["error"]["code"] == "model_not_allowed"
    assert "gpt-4" in reply.json()["error"]["message"]


def send_raw(stack: Stack, head: bytes, body_pieces) -> tuple[int, bytes]:
    """Writes a request by hand over TLS, as much of the body as the gateway takes, and
    reads the status line and body of the answer."""
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=20) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(head)
            try:
                for piece in body_pieces:
                    tls.sendall(piece)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the gateway answered before taking it all
            answer = b""
            try:
                while b"\r\n\r\n" not in answer or len(answer) < 64:
                    data = tls.recv(65536)
                    if not data:
                        break
                    answer += data
                    if b"}" in answer.split(b"\r\n\r\n", 1)[-1]:
                        break
            except (ConnectionResetError, ssl.SSLError):
                pass
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[-1]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_ten_megabyte_body_gets_413_however_it_is_framed(stack: Stack, framing):
    size = 10 * 1024 * 1024
    prefix = b'{"model": "gpt-4", "messages": [{"role": "user", "content": "'
    filler = b"y" * (size - len(prefix) - 4)
    body = prefix + filler + b'"}]}'
    headers = [
        b"POST /v1/chat/completions HTTP/1.1",
        b"host: localhost",
        b"content-type: application/json",
        b"authorization: Bearer " + stack.keys["finance"].key.encode(),
    ]
    if framing == "content-length":
        headers.append(b"content-length: " + str(len(body)).encode())
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    else:
        headers.append(b"transfer-encoding: chunked")
        pieces = [
            b"%x\r\n" % len(body[i : i + 65536]) + body[i : i + 65536] + b"\r\n"
            for i in range(0, len(body), 65536)
        ] + [b"0\r\n\r\n"]

    status, answer = send_raw(stack, b"\r\n".join(headers) + b"\r\n\r\n", pieces)

    assert status == 413, answer[:300]
    if framing == "chunked":
        # Chunked framing puts chunk sizes around the JSON; the first piece of the answer
        # is all that is needed.
        answer = answer.split(b"\r\n", 1)[-1]
    assert b"request_too_large" in answer
