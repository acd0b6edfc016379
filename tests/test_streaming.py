"""Streams and the shapes real clients send, through a real Envoy, with the official OpenAI
and Anthropic SDKs pointed at the gateway: plain and streaming calls, tool calls, array
content. Each call must leave exactly one record that verifies, with the token counts the
provider (the local stand-in) reported and the cost they come to. Streams that break off,
carry forbidden content or malformed events end with an error event in the API's own
streaming shape and a record of what passed."""

import json
import math
import ssl

import anthropic
import openai
import pytest

from support import Reply, Stack
from test_gateway import recorded_once

# The stand-in's documented estimates: a text is ceil(chars / 4) tokens; each prompt
# message adds 3; the reply is "Stand-in reply to: " and the last user message.
REPLY_PREFIX = "Stand-in reply to: "


def standin_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def openai_client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.gateway_url}/v1",
        api_key=key,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(
            verify=ssl.create_default_context(cafile=str(stack.ca_file))
        ),
    )


def anthropic_client(stack: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.gateway_url,
        api_key=key,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(
            verify=ssl.create_default_context(cafile=str(stack.ca_file))
        ),
    )


def record_of(stack: Stack, raw) -> dict:
    return recorded_once(stack, Reply(raw.status_code, dict(raw.headers), b""))


def gpt4_cost(usage: dict) -> float:
    return (usage["prompt_tokens"] * 30 + usage["completion_tokens"] * 60) / 1e6


def claude_cost(usage: dict) -> float:
    return (usage["prompt_tokens"] * 3.0 + usage["completion_tokens"] * 15.0) / 1e6


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}


def test_an_openai_stream_reaches_the_sdk_without_the_usage_chunk_and_is_recorded_with_usage(
    stack: Stack,
):
    sdk = openai_client(stack, stack.keys["finance"].key)
    question = "Stream me a short answer"

    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4", stream=True, messages=[{"role": "user", "content": question}]
    )
    chunks = list(raw.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY_PREFIX + question
    assert all(c.choices for c in chunks), "the usage-only chunk the client did not ask for"
    assert all(c.usage is None for c in chunks)
    record = record_of(stack, raw)
    assert record["decision"] == "allow"
    assert record["error"] is None
    expected = {
        "prompt_tokens": standin_tokens(question) + 3,
        "completion_tokens": standin_tokens(text),
    }
    expected["total_tokens"] = expected["prompt_tokens"] + expected["completion_tokens"]
    assert record["token_usage"] == expected
    assert record["cost"] == pytest.approx(gpt4_cost(expected))
    answer = json.loads(record["response"]["body"])
    assert answer["choices"][0]["message"]["content"] == text
    assert answer["choices"][0]["finish_reason"] == "stop"
    # The provider was asked for usage; the record keeps the body the client sent.
    sent = [r for r in stack.provider_requests() if question in r["body"]][-1]
    assert json.loads(sent["body"])["stream_options"] == {"include_usage": True}
    assert "stream_options" not in json.loads(record["request"]["body"])


def test_an_openai_stream_that_asks_for_usage_gets_it_and_the_record_agrees(stack: Stack):
    sdk = openai_client(stack, stack.keys["finance"].key)

    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4",
        stream=True,
        stream_options={"include_usage": True},
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]},
        ],
    )  # fmt: skip
    chunks = list(raw.parse())

    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    record = record_of(stack, raw)
    assert record["token_usage"] == {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    assert record["cost"] == pytest.approx(gpt4_cost(record["token_usage"]))


def test_openai_tool_calls_plain_and_streamed_are_recorded(stack: Stack):
    sdk = openai_client(stack, stack.keys["finance"].key)
    messages = [{"role": "user", "content": "Weather in Oslo?"}]

    plain = sdk.chat.completions.with_raw_response.create(
        model="gpt-4", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    completion = plain.parse()
    streamed = sdk.chat.completions.with_raw_response.create(
        model="gpt-4", messages=messages, tools=[WEATHER_TOOL], tool_choice="required",
        stream=True,
    )  # fmt: skip
    chunks = list(streamed.parse())

    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    arguments = "".join(
        tc.function.arguments or ""
        for c in chunks if c.choices
        for tc in (c.choices[0].delta.tool_calls or [])
    )  # fmt: skip
    assert json.loads(arguments) == json.loads(call.function.arguments)
    plain_record = record_of(stack, plain)
    stream_record = record_of(stack, streamed)
    assert plain_record["token_usage"]["prompt_tokens"] == completion.usage.prompt_tokens
    assert stream_record["token_usage"] == plain_record["token_usage"]
    assembled = json.loads(stream_record["response"]["body"])["choices"][0]
    assert assembled["finish_reason"] == "tool_calls"
    assert assembled["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": arguments,
    }

    # The tool's answer goes back in a tool message, and the conversation goes on.
    follow_up = sdk.chat.completions.with_raw_response.create(
        model="gpt-4",
        messages=messages
        + [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    assert follow_up.parse().choices[0].message.content.startswith(REPLY_PREFIX)
    assert record_of(stack, follow_up)["decision"] == "allow"


def test_n_choices_and_response_format_pass_and_are_counted(stack: Stack):
    sdk = openai_client(stack, stack.keys["finance"].key)

    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4",
        n=2,
        response_format={"type": "json_object"},
        max_completion_tokens=200,
        messages=[{"role": "developer", "content": "Answer in JSON."},
                  {"role": "user", "content": "Two answers please"}],
    )  # fmt: skip
    completion = raw.parse()

    assert len(completion.choices) == 2
    record = record_of(stack, raw)
    assert record["token_usage"]["completion_tokens"] == completion.usage.completion_tokens


def test_an_anthropic_stream_through_the_sdk_is_recorded_with_usage_from_its_events(stack: Stack):
    sdk = anthropic_client(stack, stack.keys["engineering"].key)
    question = "Stream to me, Claude"

    raw = sdk.messages.with_raw_response.create(
        model="claude-3-sonnet",
        max_tokens=64,
        stream=True,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": question}]}],
    )
    events = list(raw.parse())

    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == REPLY_PREFIX + question
    input_tokens = next(e for e in events if e.type == "message_start").message.usage.input_tokens
    output_tokens = next(e for e in events if e.type == "message_delta").usage.output_tokens
    record = record_of(stack, raw)
    assert record["provider"] == "anthropic"
    assert record["token_usage"] == {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    assert record["cost"] == pytest.approx(claude_cost(record["token_usage"]))
    assert json.loads(record["response"]["body"])["content"][0]["text"] == text


def test_anthropic_tool_use_streamed_and_its_result_sent_back(stack: Stack):
    sdk = anthropic_client(stack, stack.keys["engineering"].key)
    tool = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    messages = [{"role": "user", "content": "Weather in Oslo?"}]

    with sdk.messages.stream(
        model="claude-3-sonnet", max_tokens=64, messages=messages, tools=[tool],
        tool_choice={"type": "any"},
    ) as stream:  # fmt: skip
        message = stream.get_final_message()
        evidence_id = stream.response.headers["x-mercator-evidence-id"]

    tool_use = next(block for block in message.content if block.type == "tool_use")
    assert tool_use.name == "get_weather"
    record = recorded_once(stack, Reply(200, {"x-mercator-evidence-id": evidence_id}, b""))
    assert record["token_usage"]["completion_tokens"] == message.usage.output_tokens
    recorded = json.loads(record["response"]["body"])["content"][0]
    assert (recorded["type"], recorded["name"], recorded["input"]) == (
        "tool_use",
        "get_weather",
        tool_use.input,
    )

    raw = sdk.messages.with_raw_response.create(
        model="claude-3-sonnet",
        max_tokens=64,
        messages=messages
        + [
            {"role": "assistant", "content": [tool_use.model_dump(exclude_none=True)]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}},
            ]},
        ],
    )  # fmt: skip
    assert raw.parse().stop_reason == "end_turn"
    assert record_of(stack, raw)["decision"] == "allow"


def test_a_stream_cut_mid_event_ends_with_an_error_the_sdk_raises_and_a_partial_record(
    stack: Stack,
):
    sdk = openai_client(stack, stack.keys["finance"].key)
    question = "Cut me off half-way please"

    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4",
        stream=True,
        messages=[{"role": "user", "content": question}],
        extra_headers={"x-standin-scenario": "cut-stream"},
    )
    received = []
    with pytest.raises(openai.APIError) as stopped:
        for chunk in raw.parse():
            received.append(chunk.choices[0].delta.content or "")

    assert "ended before it was complete" in str(stopped.value)
    record = record_of(stack, raw)
    assert record["decision"] == "allow"
    assert record["error"]["code"] == "incomplete_stream"
    partial = json.loads(record["response"]["body"])["choices"][0]["message"]["content"]
    assert partial == "".join(received)
    assert 0 < len(partial) < len(REPLY_PREFIX + question)


def test_an_anthropic_stream_cut_mid_event_ends_with_an_error_event(stack: Stack):
    sdk = anthropic_client(stack, stack.keys["engineering"].key)

    raw = sdk.messages.with_raw_response.create(
        model="claude-3-sonnet",
        max_tokens=64,
        stream=True,
        messages=[{"role": "user", "content": "Cut me off"}],
        extra_headers={"x-standin-scenario": "cut-stream"},
    )
    with pytest.raises(anthropic.APIError) as stopped:
        list(raw.parse())

    assert "ended before it was complete" in str(stopped.value)
    record = record_of(stack, raw)
    assert record["error"]["code"] == "incomplete_stream"
    # message_start came through: the input tokens are known, and priced.
    assert record["token_usage"]["prompt_tokens"] > 0
    assert record["cost"] > 0


def test_forbidden_content_stops_a_stream_before_the_match_reaches_the_client(stack: Stack):
    sdk = openai_client(stack, stack.keys["finance"].key)
    secret = "AKIAIOSFODNN7EXAMPLE"

    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4",
        stream=True,
        messages=[{"role": "user", "content": f"Repeat {secret} back to me"}],
    )
    received = []
    with pytest.raises(openai.APIError) as stopped:
        for chunk in raw.parse():
            received.append(chunk.choices[0].delta.content or "")

    assert "aws-access-key-id" in str(stopped.value)
    assert secret not in "".join(received)
    record = record_of(stack, raw)
    assert record["decision"] == "deny"
    assert record["error"]["code"] == "forbidden_content"
    assert record["policy_decisions"][-1]["policy"] == "forbidden_content"


def test_forbidden_content_replaces_a_whole_anthropic_answer(stack: Stack):
    sdk = anthropic_client(stack, stack.keys["engineering"].key)

    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        sdk.messages.create(
            model="claude-3-sonnet",
            max_tokens=64,
            messages=[{"role": "user", "content": "Say -----BEGIN RSA PRIVATE KEY-----"}],
        )

    body = refused.value.response.json()
    assert body["error"]["code"] == "forbidden_content"
    record = recorded_once(
        stack, Reply(403, dict(refused.value.response.headers), b"")
    )
    assert record["decision"] == "deny"
    assert record["token_usage"]["total_tokens"] > 0, "the provider did the work"


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_malformed_stream_is_stopped_at_once_and_recorded_as_an_error(stack: Stack, api):
    if api == "openai":
        raw = openai_client(stack, stack.keys["finance"].key).chat.completions.with_raw_response.create(
            model="gpt-4", stream=True, messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-standin-scenario": "malformed"},
        )  # fmt: skip
        error = openai.APIError
    else:
        raw = anthropic_client(stack, stack.keys["engineering"].key).messages.with_raw_response.create(
            model="claude-3-sonnet", max_tokens=16, stream=True,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-standin-scenario": "malformed"},
        )  # fmt: skip
        error = anthropic.APIError

    with pytest.raises(error) as stopped:
        list(raw.parse())

    assert "bad_provider_response" in json.dumps(stopped.value.body) or "refused" in str(
        stopped.value
    )
    record = record_of(stack, raw)
    assert record["decision"] == "error"
    assert record["error"]["code"] == "bad_provider_response"


def test_negative_usage_in_a_stream_stops_it_and_missing_usage_is_recorded_as_unknown(
    stack: Stack,
):
    sdk = openai_client(stack, stack.keys["finance"].key)

    negative = sdk.chat.completions.with_raw_response.create(
        model="gpt-4", stream=True, messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-standin-scenario": "negative-usage"},
    )  # fmt: skip
    with pytest.raises(openai.APIError):
        list(negative.parse())
    missing = sdk.chat.completions.with_raw_response.create(
        model="gpt-4", stream=True, messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-standin-scenario": "missing-usage"},
    )  # fmt: skip
    list(missing.parse())

    assert record_of(stack, negative)["error"]["code"] == "bad_provider_response"
    record = record_of(stack, missing)
    assert (record["decision"], record["token_usage"], record["cost"]) == ("allow", None, None)


@pytest.mark.parametrize("scenario", ["keep-alive", "split-events"])
def test_comments_data_less_events_and_events_split_across_writes_pass_whole(
    stack: Stack, scenario
):
    sdk = anthropic_client(stack, stack.keys["engineering"].key)
    question = f"Scenario {scenario} with ünïcödé ✓"

    raw = sdk.messages.with_raw_response.create(
        model="claude-3-sonnet", max_tokens=64, stream=True,
        messages=[{"role": "user", "content": question}],
        extra_headers={"x-standin-scenario": scenario},
    )  # fmt: skip
    events = list(raw.parse())

    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == REPLY_PREFIX + question
    record = record_of(stack, raw)
    assert (record["decision"], record["error"]) == ("allow", None)
    assert record["token_usage"]["completion_tokens"] == standin_tokens(text)


def test_the_providers_own_error_event_reaches_the_client_and_is_recorded(stack: Stack):
    sdk = anthropic_client(stack, stack.keys["engineering"].key)

    raw = sdk.messages.with_raw_response.create(
        model="claude-3-sonnet", max_tokens=64, stream=True,
        messages=[{"role": "user", "content": "fail half-way"}],
        extra_headers={"x-standin-scenario": "stream-error"},
    )  # fmt: skip
    with pytest.raises(anthropic.APIError) as failed:
        list(raw.parse())

    assert "overloaded" in str(failed.value).lower() or "stream-error" in str(failed.value)
    record = record_of(stack, raw)
    assert record["error"]["code"] == "provider_stream_error"
    assert "overloaded_error" in record["error"]["message"]


def test_the_raw_stream_keeps_the_providers_events_and_ends_with_done(stack: Stack):
    body = {"model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": "raw"}]}

    reply = stack.call(body, key=stack.keys["finance"].key)

    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    text = reply.body.decode()
    events = [e for e in text.split("\n\n") if e]
    assert text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["choices"] for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == (
        REPLY_PREFIX + "raw"
    )
    assert recorded_once(stack, reply)["token_usage"]["completion_tokens"] > 0
