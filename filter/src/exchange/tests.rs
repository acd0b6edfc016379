//! The exchange driven natively, as Envoy would drive it, without a host.

use super::*;
use crate::config::tests::sample_gateway;
use mercator_evidence::{verify_record, PolicyVerdict, Verdict};
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-12-03 10:30:00.250 UTC);
const FINANCE_KEY: &[u8] = b"mj-finance-test-key";
const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";

fn head(headers: Vec<(String, Vec<u8>)>, end_of_stream: bool) -> RequestHead {
    RequestHead {
        headers,
        end_of_stream,
        peer: None,
        source_address: Some("192.0.2.10:50312".to_owned()),
    }
}

fn headers(path: &str, key: Option<&[u8]>) -> Vec<(String, Vec<u8>)> {
    let mut headers = vec![
        (":method".to_owned(), b"POST".to_vec()),
        (":path".to_owned(), path.as_bytes().to_vec()),
        ("x-request-id".to_owned(), b"req-42".to_vec()),
        ("x-mercator-user-id".to_owned(), b"mallory".to_vec()),
    ];
    if let Some(key) = key {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(key);
        headers.push(("authorization".to_owned(), value));
    }
    headers
}

fn chat(model: &str) -> Vec<u8> {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
        .to_string()
        .into_bytes()
}

fn answer() -> Vec<u8> {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4-0613",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    })
    .to_string()
    .into_bytes()
}

fn exchange() -> Exchange {
    Exchange::new(Rc::new(sample_gateway()))
}

/// Parses the signed record and checks its signature with the gateway's public key.
fn verified(exchange: &mut Exchange) -> Value {
    let text = exchange.take_evidence().expect("a signed record");
    let record: Value = serde_json::from_str(&text).unwrap();
    let public = exchange.gateway.signing_key.verifying_key();
    assert!(matches!(
        verify_record(&record, |_| Some(&public)),
        Verdict::Valid { .. }
    ));
    assert!(exchange.take_evidence().is_none(), "exactly one record");
    record
}

fn status_of(step: &RequestStep) -> u16 {
    match step {
        RequestStep::Reply(reply) => reply.status,
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn an_allowed_call_is_forwarded_with_the_provider_key_and_recorded_with_usage_and_cost() {
    let mut exchange = exchange();

    let (edits, step) = exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );
    assert_eq!(step, RequestStep::WaitForBody);
    assert!(edits.remove.contains(&"authorization".to_owned()));
    assert!(edits.remove.contains(&"x-mercator-user-id".to_owned()));
    let set = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    assert_eq!(
        edits.set,
        vec![
            set("authorization", "Bearer sk-provider-secret"),
            set("accept-encoding", "identity"),
            set("x-mercator-user-id", "alice"),
            set("x-mercator-auth-method", "api_key"),
        ]
    );

    assert_eq!(
        exchange.on_request_body(&chat("gpt-4"), NOW),
        RequestStep::Forward(Rewrite::default())
    );
    assert!(
        exchange.take_evidence().is_none(),
        "nothing is recorded before the answer"
    );

    let step = exchange.on_response_headers(200, None, None, NOW);
    assert!(
        matches!(step, ResponseStep::WaitForBody(ref added) if added[0].0 == "x-mercator-evidence-id")
    );
    assert_eq!(
        exchange.on_response_body(&answer(), NOW),
        ResponseStep::Continue
    );

    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["user_id"], "alice");
    assert_eq!(record["model"], "gpt-4");
    assert_eq!(record["request_id"], "req-42");
    assert_eq!(record["timestamp"], "2026-12-03T10:30:00.250Z");
    assert_eq!(record["token_usage"]["total_tokens"], 1500);
    // 1000 * $30/M + 500 * $60/M
    assert_eq!(record["cost"], 0.06);
    assert_eq!(record["policy_decisions"][0]["decision"], "allow");
    assert!(record["policy_bundle"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(record["response"]["status"], 200);
    assert!(record["request"]["body"]
        .as_str()
        .unwrap()
        .contains("Hello"));
}

#[test]
fn finance_asking_for_gpt_3_5_is_denied_with_the_reason_and_recorded() {
    let mut exchange = exchange();
    exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );

    let step = exchange.on_request_body(&chat("gpt-3.5-turbo"), NOW);

    assert_eq!(status_of(&step), 403);
    let RequestStep::Reply(reply) = step else {
        unreachable!()
    };
    assert!(
        String::from_utf8_lossy(&reply.body).contains("Department not authorized for this model")
    );
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "deny");
    assert_eq!(
        record["policy_decisions"][0]["reason"],
        "Department not authorized for this model"
    );
    assert_eq!(record["error"]["code"], "policy_denied");
}

#[test]
fn missing_and_unknown_keys_are_refused_at_the_headers_and_recorded() {
    for key in [None, Some(b"mj-someone-elses-key".as_slice())] {
        let mut exchange = exchange();

        let (_, step) =
            exchange.on_request_headers(&head(headers(CHAT_COMPLETIONS, key), false), false, NOW);

        assert_eq!(status_of(&step), 401);
        let record = verified(&mut exchange);
        assert_eq!(record["decision"], "unauthenticated");
        assert_eq!(record["user_id"], Value::Null);
        assert_eq!(record["request"]["body_sha256"], Value::Null);
    }
}

#[test]
fn malformed_bodies_are_400_and_recorded_with_their_digest() {
    let mut exchange = exchange();
    exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );

    let step = exchange.on_request_body(br#"{"model": "gpt-4", "messages": []}"#, NOW);

    assert_eq!(status_of(&step), 400);
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "invalid");
    assert_eq!(record["model"], "gpt-4");
    assert_eq!(record["request"]["body_bytes"], 34);
    assert!(record["policy_decisions"].as_array().unwrap().is_empty());
}

#[test]
fn an_empty_body_is_400() {
    let mut exchange = exchange();

    let (_, step) = exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), true),
        false,
        NOW,
    );

    assert_eq!(status_of(&step), 400);
}

#[test]
fn an_oversized_content_length_is_413_before_the_body() {
    let mut exchange = exchange();
    let mut headers = headers(CHAT_COMPLETIONS, Some(FINANCE_KEY));
    headers.push(("content-length".to_owned(), b"99999999".to_vec()));

    let (_, step) = exchange.on_request_headers(&head(headers, false), false, NOW);

    assert_eq!(status_of(&step), 413);
}

#[test]
fn an_unknown_path_is_404_after_authentication() {
    let mut exchange = exchange();

    let (_, step) = exchange.on_request_headers(
        &head(headers("/v1/embeddings", Some(FINANCE_KEY)), false),
        false,
        NOW,
    );

    assert_eq!(status_of(&step), 404);
    assert_eq!(verified(&mut exchange)["decision"], "invalid");
}

#[test]
fn a_malformed_provider_answer_becomes_502_and_is_recorded_as_an_error() {
    let mut exchange = exchange();
    exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );
    exchange.on_request_body(&chat("gpt-4"), NOW);
    exchange.on_response_headers(200, None, None, NOW);

    let step = exchange.on_response_body(b"<html>oops", NOW);

    assert!(matches!(step, ResponseStep::Reply(ref reply) if reply.status == 502));
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "error");
    assert_eq!(record["error"]["code"], "bad_provider_response");
}

#[test]
fn a_provider_error_passes_through_and_is_recorded() {
    let mut exchange = exchange();
    exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );
    exchange.on_request_body(&chat("gpt-4"), NOW);
    exchange.on_response_headers(429, None, None, NOW);

    let step = exchange.on_response_body(br#"{"error": {"message": "slow down"}}"#, NOW);

    assert_eq!(step, ResponseStep::Continue);
    let record = verified(&mut exchange);
    assert_eq!(record["response"]["status"], 429);
    assert_eq!(record["token_usage"], Value::Null);
}

#[test]
fn an_exchange_cut_short_is_still_recorded_once() {
    let mut exchange = exchange();
    exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );
    exchange.on_request_body(&chat("gpt-4"), NOW);

    exchange.on_done(NOW);
    exchange.on_done(NOW);

    let record = verified(&mut exchange);
    assert_eq!(record["error"]["code"], "incomplete_exchange");
    assert_eq!(record["decision"], "allow");
}

#[test]
fn a_local_reply_passing_back_through_the_filter_is_left_alone() {
    let mut exchange = exchange();
    exchange.on_request_headers(&head(headers(CHAT_COMPLETIONS, None), false), false, NOW);
    exchange.take_evidence();

    assert_eq!(
        exchange.on_response_headers(401, None, None, NOW),
        ResponseStep::Continue
    );
    assert_eq!(
        exchange.on_response_body(b"{}", NOW),
        ResponseStep::Continue
    );
    exchange.on_done(NOW);
    assert!(exchange.take_evidence().is_none());
}

#[test]
fn a_full_evidence_backlog_refuses_with_503() {
    let mut exchange = exchange();

    let (_, step) = exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        true,
        NOW,
    );

    assert_eq!(status_of(&step), 503);
}

#[test]
fn digest_mode_keeps_no_content() {
    let mut gateway = sample_gateway();
    gateway.config.evidence.content = ContentMode::Digest;
    let mut exchange = Exchange::new(Rc::new(gateway));
    exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );

    exchange.on_request_body(&chat("gpt-3.5-turbo"), NOW);

    let record = verified(&mut exchange);
    assert_eq!(record["request"]["body"], Value::Null);
    assert!(record["request"]["body_sha256"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

#[test]
fn the_log_line_never_holds_the_key_or_the_prompt() {
    let mut exchange = exchange();
    exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );
    exchange.on_request_body(&chat("gpt-4"), NOW);

    let line = exchange.log_line();

    assert!(!line.contains("mj-finance-test-key"));
    assert!(!line.contains("Hello"));
    assert!(line.contains("user.id=alice"));
}

#[test]
fn event_ids_are_unique_and_well_formed() {
    let a = new_event_id().unwrap();
    let b = new_event_id().unwrap();

    assert_ne!(a, b);
    assert_eq!(a.len(), 4 + 26);
    assert!(a[4..]
        .chars()
        .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
}

#[test]
fn each_policy_decision_kind_survives_into_the_record() {
    let mut exchange = exchange();
    exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );
    exchange.on_request_body(&chat("gpt-3.5-turbo"), NOW);

    let decisions = exchange.policy.as_ref().unwrap().decisions.clone();

    assert_eq!(decisions[0].decision, PolicyVerdict::Deny);
}

#[test]
fn a_mapped_client_certificate_shows_in_the_policy_input_and_the_evidence() {
    let mut json = crate::config::tests::sample_json();
    json["identity"] = serde_json::json!({"mode": "mtls", "clients": [{
        "spiffe_id": "spiffe://example.org/billing", "user_id": "billing-svc",
        "name": "billing-workload", "attributes": {"department": "finance"}
    }]});
    let config = crate::config::PluginConfig::from_json(json.to_string().as_bytes()).unwrap();
    let gateway = crate::config::Gateway::new(config, crate::config::tests::env).unwrap();
    let mut exchange = Exchange::new(Rc::new(gateway));
    let mut request = head(headers(CHAT_COMPLETIONS, None), false);
    request.peer = Some(PeerCertificate {
        uri_san: Some("spiffe://example.org/billing".to_owned()),
        subject: Some("CN=billing,O=Example".to_owned()),
    });

    let (_, step) = exchange.on_request_headers(&request, false, NOW);
    let input = exchange.policy_input(&parse_chat_request(&chat("gpt-4")).unwrap(), NOW);

    assert_eq!(step, RequestStep::WaitForBody);
    assert_eq!(input["request"]["user"]["id"], "billing-svc");
    assert_eq!(input["request"]["auth"]["method"], "certificate");
    assert_eq!(
        input["request"]["auth"]["certificate"]["uri_san"],
        "spiffe://example.org/billing"
    );
    assert_eq!(
        exchange.on_request_body(&chat("gpt-4"), NOW),
        RequestStep::Forward(Rewrite::default())
    );
    exchange.on_response_headers(200, None, None, NOW);
    exchange.on_response_body(&answer(), NOW);
    let record = verified(&mut exchange);
    assert_eq!(record["user_id"], "billing-svc");
    assert_eq!(
        record["auth"]["certificate"]["subject"],
        "CN=billing,O=Example"
    );
}

/// The sample gateway with `extra` Rego modules (path, source) beside the department policy.
fn exchange_with(extra: &[(&str, &str)]) -> Exchange {
    let mut json = crate::config::tests::sample_json();
    for (path, source) in extra {
        json["policies"]["modules"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"path": path, "source": source}));
    }
    let config = crate::config::PluginConfig::from_json(json.to_string().as_bytes()).unwrap();
    let gateway = Gateway::new(config, crate::config::tests::env).unwrap();
    Exchange::new(Rc::new(gateway))
}

fn authenticated(exchange: &mut Exchange) {
    let (_, step) = exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );
    assert_eq!(step, RequestStep::WaitForBody);
}

const CAP_AND_TAG: &str = r#"package mercator.policy.caps
import rego.v1
obligations := {"max_tokens": 64, "headers": {"x-cost-centre": "finance"}, "redact": ["user"]}
"#;

#[test]
fn obligations_rewrite_the_forwarded_body_and_are_recorded_with_the_original_digest() {
    let mut exchange = exchange_with(&[("policies/caps.rego", CAP_AND_TAG)]);
    authenticated(&mut exchange);
    let body =
        serde_json::json!({"model": "gpt-4", "max_tokens": 4000, "user": "alice@example.com",
                                  "messages": [{"role": "user", "content": "Hello"}]})
        .to_string()
        .into_bytes();

    let step = exchange.on_request_body(&body, NOW);

    let RequestStep::Forward(rewrite) = step else {
        panic!("expected the request to go on, got {step:?}");
    };
    let forwarded: Value = serde_json::from_slice(rewrite.body.as_ref().unwrap()).unwrap();
    assert_eq!(forwarded["max_tokens"], 64);
    assert!(forwarded.get("user").is_none());
    assert_eq!(forwarded["messages"][0]["content"], "Hello");
    assert_eq!(
        rewrite.headers,
        [("x-cost-centre".to_owned(), "finance".to_owned())]
    );

    exchange.on_response_headers(200, None, None, NOW);
    exchange.on_response_body(&answer(), NOW);
    let record = verified(&mut exchange);
    assert_eq!(record["obligations"]["max_tokens"], 64);
    assert_eq!(
        record["obligations"]["redacted"],
        serde_json::json!(["user"])
    );
    assert_eq!(
        record["obligations"]["original_body_sha256"],
        super::sha256_label(&body)
    );
    assert!(!record["request"]["body"]
        .as_str()
        .unwrap()
        .contains("alice@example.com"));
}

#[test]
fn a_cap_above_what_the_client_asked_leaves_the_body_alone() {
    let cap = r#"package mercator.policy.caps
import rego.v1
obligations := {"max_tokens": 500}
"#;
    let mut exchange = exchange_with(&[("policies/caps.rego", cap)]);
    authenticated(&mut exchange);
    let body = serde_json::json!({"model": "gpt-4", "max_completion_tokens": 20,
                                  "messages": [{"role": "user", "content": "Hello"}]})
    .to_string()
    .into_bytes();

    let step = exchange.on_request_body(&body, NOW);

    assert_eq!(step, RequestStep::Forward(Rewrite::default()));
}

#[test]
fn a_response_policy_deny_replaces_the_answer_and_keeps_usage_and_cost() {
    let withhold = r#"package mercator.policy.withhold
import rego.v1
response_deny contains {"code": "greeting", "message": "no greetings"} if {
	contains(input.response.text, "Hi")
	input.response.finish_reasons == ["stop"]
	input.phase == "response"
}
"#;
    let mut exchange = exchange_with(&[("policies/withhold.rego", withhold)]);
    authenticated(&mut exchange);
    assert!(matches!(
        exchange.on_request_body(&chat("gpt-4"), NOW),
        RequestStep::Forward(_)
    ));
    exchange.on_response_headers(200, None, None, NOW);

    let step = exchange.on_response_body(&answer(), NOW);

    let ResponseStep::Reply(reply) = step else {
        panic!("expected the answer to be replaced, got {step:?}");
    };
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(body["error"]["code"], "response_policy_denied");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no greetings"));
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["token_usage"]["total_tokens"], 1500);
    assert_eq!(record["cost"], 0.06);
    let phases: Vec<&Value> = record["policy_decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["phase"])
        .collect();
    assert!(phases.contains(&&Value::from("request")));
    assert!(phases.contains(&&Value::from("response")));
    let denial = record["policy_decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["phase"] == "response")
        .unwrap();
    assert_eq!(denial["code"], "greeting");
}

#[test]
fn the_policy_input_example_in_the_docs_has_the_shape_the_gateway_builds() {
    let doc = include_str!("../../../docs/policy-input.md");
    let example = json_block_after(doc, "<!-- request-example -->");
    let documented: Value = serde_json::from_str(&example).unwrap();

    let mut exchange = exchange();
    authenticated(&mut exchange);
    let body = serde_json::json!({"model": "gpt-4", "max_tokens": 50, "temperature": 0.2,
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "messages": [{"role": "user", "content": "Hello"}]})
    .to_string();
    let chat = parse_chat_request(body.as_bytes()).unwrap();
    let built = exchange.policy_input(&chat, NOW);

    assert_same_shape(&documented, &built, "input");
    assert_eq!(documented["version"], POLICY_INPUT_VERSION);
}

#[test]
fn the_response_example_in_the_docs_has_the_shape_the_gateway_builds() {
    let doc = include_str!("../../../docs/policy-input.md");
    let documented: Value =
        serde_json::from_str(&json_block_after(doc, "<!-- response-example -->")).unwrap();

    let answer = parse_chat_response(&answer()).unwrap();
    let built = super::response_input(200, &answer);

    assert_same_shape(&documented, &built, "response");
}

/// The first ```json block after `marker`.
fn json_block_after(doc: &str, marker: &str) -> String {
    let (_, after) = doc
        .split_once(marker)
        .expect("the marker is in the document");
    let (_, block) = after.split_once("```json").expect("a json block follows");
    let (json, _) = block.split_once("```").expect("the block ends");
    json.to_owned()
}

/// Same keys at every level (objects), same JSON types; arrays compare their first items.
fn assert_same_shape(documented: &Value, built: &Value, at: &str) {
    match (documented, built) {
        (Value::Object(doc), Value::Object(code)) => {
            let doc_keys: Vec<&String> = doc.keys().collect();
            let code_keys: Vec<&String> = code.keys().collect();
            assert_eq!(doc_keys, code_keys, "keys of {at}");
            for (key, value) in doc {
                assert_same_shape(value, &code[key], &format!("{at}.{key}"));
            }
        }
        (Value::Array(doc), Value::Array(code)) => {
            if let (Some(d), Some(c)) = (doc.first(), code.first()) {
                assert_same_shape(d, c, &format!("{at}[0]"));
            }
        }
        // A documented null stands for "null here, or a value in other calls".
        (Value::Null, _) => {}
        (d, c) => assert_eq!(
            std::mem::discriminant(d),
            std::mem::discriminant(c),
            "type of {at}: documented {d}, built {c}"
        ),
    }
}

/// The sample gateway with Anthropic configured too, and a key for engineering (which may
/// use claude-3-sonnet).
fn anthropic_exchange() -> Exchange {
    let mut json = crate::config::tests::sample_json();
    json["providers"]["anthropic"] = serde_json::json!({"api_key_env": "ANTHROPIC_API_KEY"});
    let env = |name: &str| match name {
        "ANTHROPIC_API_KEY" => Some("sk-ant-provider-secret".to_owned()),
        other => crate::config::tests::env(other),
    };
    let config = crate::config::PluginConfig::from_json(json.to_string().as_bytes()).unwrap();
    Exchange::new(Rc::new(Gateway::new(config, env).unwrap()))
}

fn anthropic_headers(key: &[u8], version: bool) -> Vec<(String, Vec<u8>)> {
    let mut headers = vec![
        (":method".to_owned(), b"POST".to_vec()),
        (":path".to_owned(), MESSAGES.as_bytes().to_vec()),
        ("x-request-id".to_owned(), b"req-ant".to_vec()),
        ("x-api-key".to_owned(), key.to_vec()),
    ];
    if version {
        headers.push(("anthropic-version".to_owned(), b"2023-06-01".to_vec()));
    }
    headers
}

#[test]
fn an_anthropic_call_goes_on_with_the_providers_key_in_x_api_key_and_is_recorded() {
    let mut exchange = anthropic_exchange();

    let (edits, step) = exchange.on_request_headers(
        &head(anthropic_headers(FINANCE_KEY, true), false),
        false,
        NOW,
    );
    assert_eq!(step, RequestStep::WaitForBody);
    assert!(edits.remove.contains(&"x-api-key".to_owned()));
    assert!(edits
        .set
        .contains(&("x-api-key".to_owned(), "sk-ant-provider-secret".to_owned())));
    assert!(!edits.set.iter().any(|(name, _)| name == "authorization"));

    // Finance may not use Claude: the department policy denies, in Anthropic's shape.
    let body = serde_json::json!({"model": "claude-3-sonnet", "max_tokens": 10,
                                  "messages": [{"role": "user", "content": "Hello"}]});
    let step = exchange.on_request_body(body.to_string().as_bytes(), NOW);

    let RequestStep::Reply(reply) = step else {
        panic!("expected a denial, got {step:?}");
    };
    let answer: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["error"]["type"], "permission_error");
    let record = verified(&mut exchange);
    assert_eq!(record["provider"], "anthropic");
    assert_eq!(record["model"], "claude-3-sonnet");
}

#[test]
fn an_anthropic_answer_gives_usage_and_text_to_the_evidence() {
    let mut exchange = anthropic_exchange();
    exchange.on_request_headers(
        &head(anthropic_headers(FINANCE_KEY, true), false),
        false,
        NOW,
    );
    let body = serde_json::json!({"model": "gpt-4", "max_tokens": 10,
                                  "messages": [{"role": "user", "content": "Hello"}]});
    assert!(matches!(
        exchange.on_request_body(body.to_string().as_bytes(), NOW),
        RequestStep::Forward(_)
    ));
    exchange.on_response_headers(200, None, None, NOW);
    let answer = serde_json::json!({"id": "msg_1", "type": "message", "role": "assistant",
        "model": "gpt-4", "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 1000, "output_tokens": 500}});

    let step = exchange.on_response_body(answer.to_string().as_bytes(), NOW);

    assert_eq!(step, ResponseStep::Continue);
    let record = verified(&mut exchange);
    assert_eq!(record["token_usage"]["total_tokens"], 1500);
    assert_eq!(record["cost"], 0.06);
}

#[test]
fn an_anthropic_call_without_its_version_header_or_with_a_bad_key_is_refused_in_its_shape() {
    let mut missing_version = anthropic_exchange();
    let (_, step) = missing_version.on_request_headers(
        &head(anthropic_headers(FINANCE_KEY, false), false),
        false,
        NOW,
    );
    let mut bad_key = anthropic_exchange();
    let (_, denied) = bad_key.on_request_headers(
        &head(anthropic_headers(b"mj-nope", true), false),
        false,
        NOW,
    );

    let RequestStep::Reply(reply) = step else {
        panic!("expected a refusal, got {step:?}");
    };
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));
    let RequestStep::Reply(reply) = denied else {
        panic!("expected a refusal, got {denied:?}");
    };
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(body["error"]["type"], "authentication_error");
}

#[test]
fn the_messages_api_is_not_served_when_anthropic_is_not_configured() {
    let mut exchange = exchange();

    let (_, step) = exchange.on_request_headers(
        &head(anthropic_headers(FINANCE_KEY, true), false),
        false,
        NOW,
    );

    assert_eq!(status_of(&step), 404);
}

#[test]
fn a_body_ended_by_trailers_is_refused_not_forwarded() {
    let mut exchange = exchange();
    authenticated(&mut exchange);

    let step = exchange.on_request_trailers(NOW);

    assert_eq!(status_of(&step), 400);
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "invalid");
}

#[test]
fn an_answer_ended_by_trailers_is_refused() {
    let mut exchange = exchange();
    authenticated(&mut exchange);
    exchange.on_request_body(&chat("gpt-4"), NOW);
    exchange.on_response_headers(200, None, None, NOW);

    let step = exchange.on_response_trailers(NOW);

    assert!(matches!(step, ResponseStep::Reply(ref reply) if reply.status == 502));
    assert_eq!(verified(&mut exchange)["decision"], "error");
}

#[test]
fn a_compressed_answer_is_never_passed_on_unchecked() {
    let mut exchange = exchange();
    let (edits, _) = exchange.on_request_headers(
        &head(headers(CHAT_COMPLETIONS, Some(FINANCE_KEY)), false),
        false,
        NOW,
    );
    exchange.on_request_body(&chat("gpt-4"), NOW);
    exchange.on_response_headers(200, Some("gzip"), None, NOW);

    let step = exchange.on_response_body(b"\x1f\x8b\x08\x00", NOW);

    assert!(edits
        .set
        .contains(&("accept-encoding".to_owned(), "identity".to_owned())));
    assert!(matches!(step, ResponseStep::Reply(ref reply) if reply.status == 502));
    assert_eq!(verified(&mut exchange)["decision"], "error");
}

#[test]
fn caller_chosen_provider_accounts_are_removed() {
    let mut exchange = exchange();
    let mut sent = headers(CHAT_COMPLETIONS, Some(FINANCE_KEY));
    sent.push((
        "openai-organization".to_owned(),
        b"org-someone-else".to_vec(),
    ));

    let (edits, _) = exchange.on_request_headers(&head(sent, false), false, NOW);

    assert!(edits.remove.contains(&"openai-organization".to_owned()));
    assert!(edits.remove.contains(&"openai-project".to_owned()));
}

/// The sample gateway with Anthropic too, `extra` merged into its configuration.
fn gateway_with(extra: Value) -> Exchange {
    let mut json = crate::config::tests::sample_json();
    json["providers"]["anthropic"] = serde_json::json!({"api_key_env": "ANTHROPIC_API_KEY"});
    for (key, value) in extra.as_object().unwrap() {
        json[key] = value.clone();
    }
    let env = |name: &str| match name {
        "ANTHROPIC_API_KEY" => Some("sk-ant-provider-secret".to_owned()),
        other => crate::config::tests::env(other),
    };
    let config = crate::config::PluginConfig::from_json(json.to_string().as_bytes()).unwrap();
    Exchange::new(Rc::new(Gateway::new(config, env).unwrap()))
}

fn stream_request(extra: Value) -> Vec<u8> {
    let mut body = serde_json::json!({"model": "gpt-4", "stream": true,
                                      "messages": [{"role": "user", "content": "Hello"}]});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body.to_string().into_bytes()
}

/// Authenticates, forwards `body`, and starts a 200 event-stream answer.
fn streaming(exchange: &mut Exchange, body: &[u8]) -> Rewrite {
    authenticated(exchange);
    let RequestStep::Forward(rewrite) = exchange.on_request_body(body, NOW) else {
        panic!("the stream request should go on");
    };
    let step =
        exchange.on_response_headers(200, None, Some("text/event-stream; charset=utf-8"), NOW);
    assert!(
        matches!(step, ResponseStep::Stream(ref added) if added[0].0 == crate::EVIDENCE_ID_HEADER)
    );
    rewrite
}

/// Feeds `stream` in pieces of `piece` bytes; what the client got.
fn stream_through(exchange: &mut Exchange, stream: &[u8], piece: usize) -> Vec<u8> {
    let pieces: Vec<&[u8]> = stream.chunks(piece).collect();
    let mut sent = Vec::new();
    for (index, chunk) in pieces.iter().enumerate() {
        let last = index + 1 == pieces.len();
        match exchange.on_response_chunk(chunk, last, NOW) {
            ChunkStep::Pass => sent.extend_from_slice(chunk),
            ChunkStep::Replace(bytes) => sent.extend(bytes),
        }
    }
    sent
}

const OPENAI_STREAM: &str = crate::sse::tests::OPENAI_STREAM;

#[test]
fn an_openai_stream_asks_for_usage_hides_it_and_is_recorded_with_usage_cost_and_the_answer() {
    let mut exchange = exchange();

    let rewrite = streaming(&mut exchange, &stream_request(serde_json::json!({})));
    let forwarded: Value = serde_json::from_slice(rewrite.body.as_ref().unwrap()).unwrap();
    assert_eq!(forwarded["stream_options"]["include_usage"], true);
    assert_eq!(forwarded["messages"][0]["content"], "Hello");

    let sent = stream_through(&mut exchange, OPENAI_STREAM.as_bytes(), 7);

    let sent = String::from_utf8(sent).unwrap();
    assert!(!sent.contains("\"usage\":{"), "the usage chunk is hidden");
    assert!(sent.ends_with("data: [DONE]\n\n"));
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["error"], Value::Null);
    assert_eq!(record["token_usage"]["total_tokens"], 12);
    // 9 * $30/M + 3 * $60/M
    assert_eq!(record["cost"], 0.00045);
    let answer: Value = serde_json::from_str(record["response"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hé éllo");
    assert_eq!(answer["object"], "chat.completion");
    assert!(
        !record["request"]["body"]
            .as_str()
            .unwrap()
            .contains("include_usage"),
        "the record keeps the client's body"
    );
}

#[test]
fn a_client_that_asks_for_stream_usage_gets_it_and_its_body_goes_unchanged() {
    let mut exchange = exchange();
    let body = stream_request(serde_json::json!({"stream_options": {"include_usage": true}}));

    let rewrite = streaming(&mut exchange, &body);
    let sent = stream_through(&mut exchange, OPENAI_STREAM.as_bytes(), 4096);

    assert_eq!(rewrite, Rewrite::default());
    assert_eq!(sent, OPENAI_STREAM.as_bytes());
    assert_eq!(verified(&mut exchange)["token_usage"]["prompt_tokens"], 9);
}

#[test]
fn an_anthropic_stream_is_recorded_with_usage_from_start_and_delta() {
    let mut exchange = anthropic_exchange();
    exchange.on_request_headers(
        &head(anthropic_headers(FINANCE_KEY, true), false),
        false,
        NOW,
    );
    let body = serde_json::json!({"model": "gpt-4", "max_tokens": 10, "stream": true,
                                  "messages": [{"role": "user", "content": "Hello"}]});
    assert_eq!(
        exchange.on_request_body(body.to_string().as_bytes(), NOW),
        RequestStep::Forward(Rewrite::default()),
        "Anthropic streams report usage unasked"
    );
    exchange.on_response_headers(200, None, Some("text/event-stream"), NOW);

    let stream = crate::sse::tests::ANTHROPIC_STREAM.as_bytes();
    let sent = stream_through(&mut exchange, stream, 1);

    assert_eq!(sent, stream);
    let record = verified(&mut exchange);
    assert_eq!(record["token_usage"]["prompt_tokens"], 25);
    assert_eq!(record["token_usage"]["completion_tokens"], 15);
    let answer: Value = serde_json::from_str(record["response"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["content"][0]["text"], "Hello ✓");
}

#[test]
fn forbidden_content_stops_a_stream_with_an_error_event_and_is_recorded_as_a_deny() {
    let mut exchange = gateway_with(serde_json::json!({
        "forbidden_content": [{"name": "greeting", "pattern": "(?i)h[eé] [eé]llo"}]
    }));
    streaming(&mut exchange, &stream_request(serde_json::json!({})));

    let sent =
        String::from_utf8(stream_through(&mut exchange, OPENAI_STREAM.as_bytes(), 64)).unwrap();

    assert!(
        !sent.contains("llo\""),
        "the matching text never reaches the client"
    );
    let error_event = sent.rsplit("data: ").next().unwrap();
    let error: Value = serde_json::from_str(error_event.trim()).unwrap();
    assert_eq!(error["error"]["code"], "forbidden_content");
    assert!(!sent.contains("[DONE]"));
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["error"]["code"], "forbidden_content");
    let decision = record["policy_decisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(decision["policy"], "forbidden_content");
    assert_eq!(decision["phase"], "response");
    assert_eq!(
        exchange.on_response_chunk(b"data: more\n\n", false, NOW),
        ChunkStep::Replace(Vec::new()),
        "nothing passes after the stop"
    );
}

#[test]
fn forbidden_content_replaces_a_whole_answer_with_403() {
    let mut exchange = gateway_with(serde_json::json!({
        "forbidden_content": [{"name": "greeting", "pattern": "^Hi$"}]
    }));
    authenticated(&mut exchange);
    exchange.on_request_body(&chat("gpt-4"), NOW);
    exchange.on_response_headers(200, None, Some("application/json"), NOW);

    let step = exchange.on_response_body(&answer(), NOW);

    let ResponseStep::Reply(reply) = step else {
        panic!("expected the answer to be replaced, got {step:?}");
    };
    assert_eq!(reply.status, 403);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], "forbidden_content");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("greeting"));
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["token_usage"]["total_tokens"], 1500);
}

#[test]
fn a_stream_cut_mid_event_ends_with_an_error_event_and_a_partial_record() {
    let mut exchange = exchange();
    streaming(&mut exchange, &stream_request(serde_json::json!({})));
    let cut = OPENAI_STREAM.find("\"finish_reason\":\"stop\"").unwrap();

    let sent = stream_through(&mut exchange, &OPENAI_STREAM.as_bytes()[..cut], 50);

    let sent = String::from_utf8(sent).unwrap();
    assert!(sent.ends_with("\n\n"), "no half event reaches the client");
    assert!(sent.contains("\"code\":\"incomplete_stream\""));
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["error"]["code"], "incomplete_stream");
    assert_eq!(record["token_usage"], Value::Null);
    let answer: Value = serde_json::from_str(record["response"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hé éllo");
}

#[test]
fn a_stream_reset_midway_is_recorded_at_the_end_with_the_answer_so_far() {
    let mut exchange = exchange();
    streaming(&mut exchange, &stream_request(serde_json::json!({})));
    let cut = OPENAI_STREAM.find(": keep-alive").unwrap();
    exchange.on_response_chunk(&OPENAI_STREAM.as_bytes()[..cut], false, NOW);
    assert!(exchange.take_evidence().is_none());

    exchange.on_done(NOW);

    let record = verified(&mut exchange);
    assert_eq!(record["error"]["code"], "incomplete_stream");
    assert!(record["response"]["body"]
        .as_str()
        .unwrap()
        .contains("Hé éllo"));
}

#[test]
fn a_malformed_event_stops_the_stream_and_is_recorded_as_an_error() {
    let mut exchange = exchange();
    streaming(&mut exchange, &stream_request(serde_json::json!({})));

    let sent = stream_through(&mut exchange, b"data: {\"id\": \"c\", \"choi\n\n", 4096);

    assert!(String::from_utf8(sent)
        .unwrap()
        .contains("bad_provider_response"));
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "error");
    assert_eq!(record["error"]["code"], "bad_provider_response");
}

#[test]
fn a_response_policy_deny_ends_a_stream_with_an_error_in_place_of_its_closing_event() {
    let withhold = r#"package mercator.policy.withhold
import rego.v1
response_deny contains "no greetings" if contains(input.response.text, "llo")
"#;
    let mut exchange = exchange_with(&[("policies/withhold.rego", withhold)]);
    streaming(&mut exchange, &stream_request(serde_json::json!({})));

    let sent = String::from_utf8(stream_through(
        &mut exchange,
        OPENAI_STREAM.as_bytes(),
        4096,
    ))
    .unwrap();

    assert!(!sent.contains("[DONE]"));
    assert!(sent.contains("response_policy_denied"));
    let record = verified(&mut exchange);
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["token_usage"]["total_tokens"], 12);
}

#[test]
fn a_compressed_stream_is_refused_before_any_of_it_passes() {
    let mut exchange = exchange();
    authenticated(&mut exchange);
    exchange.on_request_body(&stream_request(serde_json::json!({})), NOW);

    let step = exchange.on_response_headers(200, Some("gzip"), Some("text/event-stream"), NOW);

    assert!(matches!(step, ResponseStep::Reply(ref reply) if reply.status == 502));
    assert_eq!(verified(&mut exchange)["decision"], "error");
}

#[test]
fn a_provider_error_to_a_stream_request_is_read_whole_and_passed_on() {
    let mut exchange = exchange();
    authenticated(&mut exchange);
    exchange.on_request_body(&stream_request(serde_json::json!({})), NOW);

    let step = exchange.on_response_headers(500, None, Some("application/json"), NOW);

    assert!(matches!(step, ResponseStep::WaitForBody(_)));
    assert_eq!(
        exchange.on_response_body(br#"{"error": {"message": "boom"}}"#, NOW),
        ResponseStep::Continue
    );
    assert_eq!(verified(&mut exchange)["response"]["status"], 500);
}

#[test]
fn configured_limits_refuse_in_the_callers_shape_naming_the_field() {
    let limits = serde_json::json!({"limits": {
        "max_tokens": 100, "max_message_chars": 10,
        "allowed_models": {"openai": ["gpt-4"], "anthropic": ["claude-3-*"]}
    }});

    let mut exchange = gateway_with(limits.clone());
    authenticated(&mut exchange);
    let step = exchange.on_request_body(&chat("gpt-4o"), NOW);
    let RequestStep::Reply(reply) = step else {
        panic!("expected a refusal, got {step:?}");
    };
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        (reply.status, &body["error"]["param"]),
        (400, &Value::from("model"))
    );
    assert_eq!(body["error"]["code"], "model_not_allowed");
    assert_eq!(verified(&mut exchange)["decision"], "invalid");

    let mut exchange = gateway_with(limits);
    exchange.on_request_headers(
        &head(anthropic_headers(FINANCE_KEY, true), false),
        false,
        NOW,
    );
    let body = serde_json::json!({"model": "claude-3-sonnet", "max_tokens": 10,
                                  "messages": [{"role": "user", "content": "far more than ten"}]});
    let step = exchange.on_request_body(body.to_string().as_bytes(), NOW);
    let RequestStep::Reply(reply) = step else {
        panic!("expected a refusal, got {step:?}");
    };
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(reply.status, 413);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "request_too_large");
    assert_eq!(body["error"]["code"], "content_too_large");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages[0]"));
}

#[test]
fn a_stream_request_shows_in_the_policy_input() {
    let mut exchange = exchange();
    authenticated(&mut exchange);
    let body =
        stream_request(serde_json::json!({"n": 2, "response_format": {"type": "json_object"}}));
    let chat = parse_chat_request(&body).unwrap();

    let input = exchange.policy_input(&chat, NOW);

    assert_eq!(input["request"]["parameters"]["stream"], true);
    assert_eq!(input["request"]["parameters"]["n"], 2);
    assert_eq!(
        input["request"]["parameters"]["response_format"],
        "json_object"
    );
}
