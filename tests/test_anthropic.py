"""Anthropic Messages through a real Envoy: the official Anthropic SDK pointed at the
gateway, the department policy applied to Claude, the caller's key swapped for the
provider's in `x-api-key`, errors in Anthropic's shape, and verified evidence with the
provider's token counts and cost. The provider is the local stand-in, which speaks
Anthropic's wire format."""

import ssl

import anthropic
import pytest

from support import Reply, Stack
from test_gateway import recorded_once


def client(stack: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.gateway_url,
        api_key=key,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(stack.ca_file))),
    )


def test_an_engineer_asks_claude_through_the_sdk_and_the_call_is_recorded(stack: Stack):
    sdk = client(stack, stack.keys["engineering"].key)

    raw = sdk.messages.with_raw_response.create(
        model="claude-3-sonnet",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello Claude"}]}],
    )
    message = raw.parse()

    assert message.content[0].text.endswith("Hello Claude")
    record = recorded_once(stack, Reply(raw.status_code, dict(raw.headers), b""))
    assert record["provider"] == "anthropic"
    assert record["model"] == "claude-3-sonnet"
    assert record["decision"] == "allow"
    assert record["token_usage"] == {
        "prompt_tokens": message.usage.input_tokens,
        "completion_tokens": message.usage.output_tokens,
        "total_tokens": message.usage.input_tokens + message.usage.output_tokens,
    }
    expected = (message.usage.input_tokens * 3.0 + message.usage.output_tokens * 15.0) / 1e6
    assert record["cost"] == pytest.approx(expected)


def test_the_provider_sees_its_own_key_in_x_api_key_never_the_callers(stack: Stack):
    sdk = client(stack, stack.keys["engineering"].key)

    sdk.messages.create(
        model="claude-3-sonnet", max_tokens=16, messages=[{"role": "user", "content": "key-swap-check"}]
    )

    sent = [r for r in stack.provider_requests() if "key-swap-check" in r["body"]][-1]
    headers = {name: value for name, value in sent["headers"]}
    assert sent["path"] == "/v1/messages"
    assert headers["x-api-key"] == stack.anthropic_key
    assert stack.keys["engineering"].key not in str(sent)
    assert "anthropic-version" in headers


def test_finance_asking_for_claude_is_denied_in_anthropics_error_shape(stack: Stack):
    sdk = client(stack, stack.keys["finance"].key)

    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        sdk.messages.create(
            model="claude-3-sonnet", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )

    body = denied.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "permission_error"
    assert body["error"]["message"] == "Department not authorized for this model"


def test_a_bad_key_is_refused_with_an_authentication_error(stack: Stack):
    sdk = client(stack, "mj_not-a-real-key")

    with pytest.raises(anthropic.AuthenticationError) as refused:
        sdk.messages.create(
            model="claude-3-sonnet", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )

    assert refused.value.response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"model": "claude-3-sonnet", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "claude-3-sonnet", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"model": "claude-3-sonnet", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": 5, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ],
    ids=["no-max-tokens", "system-role", "no-messages", "model-not-a-string"],
)
def test_malformed_messages_requests_are_400_naming_the_field_and_recorded(stack: Stack, body, field):
    headers = {"x-api-key": stack.keys["engineering"].key, "anthropic-version": "2023-06-01"}

    reply = stack.call(body, path="/v1/messages", headers=headers)

    assert reply.status == 400
    assert reply.json()["type"] == "error"
    assert field in reply.json()["error"]["message"]
    assert recorded_once(stack, reply)["decision"] == "invalid"


def test_a_messages_call_without_anthropic_version_is_refused(stack: Stack):
    headers = {"x-api-key": stack.keys["engineering"].key}
    body = {"model": "claude-3-sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}

    reply = stack.call(body, path="/v1/messages", headers=headers)

    assert reply.status == 400
    assert "anthropic-version" in reply.json()["error"]["message"]
    recorded_once(stack, reply)
