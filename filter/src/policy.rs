//! The Rego policy bundle, compiled once with regorus, and the decisions it gives.
//!
//! Policy modules live in packages `mercator.policy.<name>`; shared code lives in
//! `mercator.lib.*`. A policy module may define, for the request phase, `allow` (a
//! boolean), `deny` (a set of reasons: strings, or objects with a `message` and an
//! optional `code`) and `obligations` (what an allowed request must become), and, for the
//! response phase, `response_deny` (reasons, as `deny`). The gateway allows a request only
//! when at least one module allows it and no module denies it or fails: default deny, and
//! a deny from any module wins. An answer goes back only when no module denies it.
//!
//! The gateway reads every module's verdict through entry points of its own
//! (`data.mercator.gateway.verdicts` and `.response_verdicts`), compiled together with the
//! bundle, so one evaluation per phase yields each module's verdict for the evidence.
//! Every evaluation runs under regorus's execution time limit.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use mercator_evidence::{canonical_json, PolicyDecision, PolicyPhase, PolicyVerdict};
use regorus::utils::limits::{set_fallback_execution_timer_config, ExecutionTimerConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The gateway's own module: gathers each policy module's rules, per phase.
const GATEWAY_MODULE: &str = r#"
package mercator.gateway

import rego.v1

verdicts[name] := verdict if {
	some name, module in data.mercator.policy
	verdict := {
		"allow": object.get(module, "allow", false),
		"deny": object.get(module, "deny", []),
		"obligations": object.get(module, "obligations", {}),
	}
}

response_verdicts[name] := {"deny": reasons} if {
	some name
	reasons := data.mercator.policy[name].response_deny
}
"#;

const REQUEST_ENTRY_POINT: &str = "data.mercator.gateway.verdicts";
const RESPONSE_ENTRY_POINT: &str = "data.mercator.gateway.response_verdicts";

/// Reason given when no module allowed the request.
pub const DEFAULT_DENY_REASON: &str = "No policy allows this request";

/// Time limit of one evaluation when the configuration sets none.
pub const DEFAULT_EVALUATION_LIMIT: Duration = Duration::from_millis(50);

/// Request fields that an obligation may not remove: without them there is no request.
const UNREDACTABLE: [&str; 2] = ["model", "messages"];

/// Headers that an obligation may not set: credentials, framing and the gateway's own.
const PROTECTED_HEADERS: [&str; 8] = [
    "authorization",
    "x-api-key",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
];

/// One Rego file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyModule {
    /// Where it was read from, relative to the bundle (`policies/department.rego`).
    pub path: String,
    /// Its Rego source.
    pub source: String,
}

/// Why a bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A module does not parse or compile; the message carries regorus's file:line:column.
    #[error("policy {path} does not compile: {message}")]
    Compile {
        /// The module's path.
        path: String,
        /// regorus's message.
        message: String,
    },
    /// A module's package is outside `mercator.policy.*` and `mercator.lib.*`.
    #[error(
        "policy {path}: package `{package}` must be mercator.policy.<name> or mercator.lib.<name>"
    )]
    Package {
        /// The module's path.
        path: String,
        /// Its package.
        package: String,
    },
    /// The bundle has no policy module at all: every request would be denied.
    #[error("the policy bundle has no module in package mercator.policy.<name>")]
    Empty,
}

/// A compiled bundle, shared by every request.
pub struct Policy {
    request: regorus::CompiledPolicy,
    /// None when no module has a `response_deny` rule: answers need no evaluation.
    response: Option<regorus::CompiledPolicy>,
    timer: ExecutionTimerConfig,
    digest: String,
}

/// What policies require of a request they allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Obligations {
    /// The most tokens the provider may be asked for.
    pub max_tokens: Option<u64>,
    /// Headers to add to the forwarded request.
    pub headers: BTreeMap<String, String>,
    /// Top-level request fields to remove before forwarding.
    pub redact: BTreeSet<String>,
}

impl Obligations {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.max_tokens.is_none() && self.headers.is_empty() && self.redact.is_empty()
    }

    /// Adds one module's obligations: the smallest `max_tokens` wins; two modules may not
    /// ask for different values of one header.
    fn merge(&mut self, other: Obligations) -> Result<(), String> {
        self.max_tokens = match (self.max_tokens, other.max_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (name, value) in other.headers {
            match self.headers.get(&name) {
                Some(existing) if *existing != value => {
                    return Err(format!("header `{name}` is set to two different values"))
                }
                _ => {
                    self.headers.insert(name, value);
                }
            }
        }
        self.redact.extend(other.redact);
        Ok(())
    }
}

/// What the bundle decided for one phase of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOutcome {
    /// Whether the request (or the answer) may go on.
    pub allowed: bool,
    /// Each module's verdict, and the gateway's own when it had to deny by default or on error.
    pub decisions: Vec<PolicyDecision>,
    /// What an allowed request must become (request phase only).
    pub obligations: Obligations,
}

impl PolicyOutcome {
    /// The reasons of every deny and error, for the caller.
    pub fn deny_reasons(&self) -> Vec<String> {
        self.decisions
            .iter()
            .filter(|d| matches!(d.decision, PolicyVerdict::Deny | PolicyVerdict::Error))
            .filter_map(|d| d.reason.clone())
            .collect()
    }

    /// A decision that the gateway itself makes when the bundle cannot decide.
    fn failed(phase: PolicyPhase, code: &str, reason: String) -> Self {
        Self {
            allowed: false,
            decisions: vec![gateway_decision(phase, PolicyVerdict::Error, code, reason)],
            obligations: Obligations::default(),
        }
    }
}

fn gateway_decision(
    phase: PolicyPhase,
    decision: PolicyVerdict,
    code: &str,
    reason: String,
) -> PolicyDecision {
    PolicyDecision {
        policy: "gateway".to_owned(),
        phase,
        decision,
        code: Some(code.to_owned()),
        reason: Some(reason),
    }
}

impl Policy {
    /// Parses and compiles the bundle; each evaluation may run for `limit`. Fails on the
    /// first module that does not compile, naming its file and line.
    pub fn compile(modules: &[PolicyModule], limit: Duration) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        let mut has_policy = false;

        for module in modules {
            let package = engine
                .add_policy(module.path.clone(), module.source.clone())
                .map_err(|e| PolicyError::Compile {
                    path: module.path.clone(),
                    message: e.to_string(),
                })?;
            if package.starts_with("data.mercator.policy.") {
                has_policy = true;
            } else if !package.starts_with("data.mercator.lib.") {
                let package = package.trim_start_matches("data.").to_owned();
                return Err(PolicyError::Package {
                    path: module.path.clone(),
                    package,
                });
            }
        }
        if !has_policy {
            return Err(PolicyError::Empty);
        }

        engine
            .add_policy("<gateway>".to_owned(), GATEWAY_MODULE.to_owned())
            .map_err(|e| PolicyError::Compile {
                path: "<gateway>".to_owned(),
                message: e.to_string(),
            })?;
        let compile = |engine: &mut regorus::Engine, entry: &str| {
            engine
                .compile_with_entrypoint(&Arc::from(entry))
                .map_err(|e| PolicyError::Compile {
                    path: "bundle".to_owned(),
                    message: e.to_string(),
                })
        };
        // A rule is named in its source, so a bundle without the word has no such rule.
        let has_response_rules = modules.iter().any(|m| m.source.contains("response_deny"));
        let response = match has_response_rules {
            true => Some(compile(&mut engine.clone(), RESPONSE_ENTRY_POINT)?),
            false => None,
        };
        let request = compile(&mut engine, REQUEST_ENTRY_POINT)?;

        Ok(Self {
            request,
            response,
            timer: ExecutionTimerConfig {
                limit,
                // The clock is read every 16 units of work: cheap, and a runaway rule still stops
                // within a fraction of a millisecond of the limit.
                check_interval: NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN),
            },
            digest: bundle_digest(modules),
        })
    }

    /// `sha256:` and the hex digest of the bundle (see [`bundle_digest`]).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether any module decides on answers.
    pub fn has_response_rules(&self) -> bool {
        self.response.is_some()
    }

    /// Evaluates the request phase. Never fails: an evaluation error, a timeout or an
    /// unusable result is a deny that says so.
    pub fn evaluate(&self, input: &Value) -> PolicyOutcome {
        match self.run(&self.request, input, PolicyPhase::Request) {
            Ok(verdicts) => combine(&verdicts),
            Err(failed) => failed,
        }
    }

    /// Evaluates the response phase on an input that carries `response`.
    pub fn evaluate_response(&self, input: &Value) -> PolicyOutcome {
        let Some(compiled) = &self.response else {
            return PolicyOutcome {
                allowed: true,
                decisions: Vec::new(),
                obligations: Obligations::default(),
            };
        };
        match self.run(compiled, input, PolicyPhase::Response) {
            Ok(verdicts) => combine_response(&verdicts),
            Err(failed) => failed,
        }
    }

    fn run(
        &self,
        compiled: &regorus::CompiledPolicy,
        input: &Value,
        phase: PolicyPhase,
    ) -> Result<serde_json::Map<String, Value>, PolicyOutcome> {
        // regorus reads its time limit from a process-wide setting; every bundle sets its own.
        set_fallback_execution_timer_config(Some(self.timer));
        let input = regorus::Value::from(input.clone());
        let result = compiled.eval_with_input(input).map_err(|error| match error
            .downcast_ref::<regorus::LimitError>()
        {
            Some(_) => PolicyOutcome::failed(
                phase,
                "policy_timeout",
                format!(
                    "policy evaluation exceeded its time limit of {} ms",
                    self.timer.limit.as_millis()
                ),
            ),
            None => PolicyOutcome::failed(
                phase,
                "policy_error",
                format!("policy evaluation failed: {error}"),
            ),
        })?;
        let verdicts = match result {
            // No module defined a rule of this phase.
            regorus::Value::Undefined => Some(Value::Object(serde_json::Map::new())),
            other => other
                .to_json_str()
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok()),
        };
        match verdicts {
            Some(Value::Object(verdicts)) => Ok(verdicts),
            _ => Err(PolicyOutcome::failed(
                phase,
                "policy_error",
                "the policy bundle gave no decision".to_owned(),
            )),
        }
    }
}

/// Turns each module's `{allow, deny, obligations}` into verdicts and the overall decision.
fn combine(verdicts: &serde_json::Map<String, Value>) -> PolicyOutcome {
    let phase = PolicyPhase::Request;
    let mut decisions = Vec::new();
    let mut obligations = Obligations::default();
    let mut any_allow = false;

    for (name, verdict) in verdicts {
        let allow = verdict.get("allow");
        let reasons = verdict.get("deny").map(deny_reasons);
        let required = verdict
            .get("obligations")
            .map(parse_obligations)
            .unwrap_or_else(|| Ok(Obligations::default()))
            .and_then(|required| obligations.merge(required));
        if let Err(problem) = required {
            decisions.push(module_error(name, phase, problem));
            continue;
        }

        match (allow, reasons) {
            (Some(Value::Bool(_)), Some(Ok(reasons))) if !reasons.is_empty() => {
                decisions.extend(reasons.into_iter().map(|reason| deny(name, phase, reason)));
            }
            (Some(Value::Bool(allow)), Some(Ok(_))) => {
                any_allow |= *allow;
                let decision = if *allow {
                    PolicyVerdict::Allow
                } else {
                    PolicyVerdict::Abstain
                };
                decisions.push(PolicyDecision {
                    policy: name.clone(),
                    phase,
                    decision,
                    code: None,
                    reason: None,
                });
            }
            (_, Some(Err(problem))) => decisions.push(module_error(name, phase, problem)),
            _ => decisions.push(module_error(
                name,
                phase,
                "`allow` must be a boolean".to_owned(),
            )),
        }
    }

    let refused = decisions
        .iter()
        .any(|d| matches!(d.decision, PolicyVerdict::Deny | PolicyVerdict::Error));
    if !any_allow && !refused {
        decisions.push(PolicyDecision {
            policy: "default".to_owned(),
            phase,
            decision: PolicyVerdict::Deny,
            code: Some("no_policy_allowed".to_owned()),
            reason: Some(DEFAULT_DENY_REASON.to_owned()),
        });
    }

    PolicyOutcome {
        allowed: any_allow && !refused,
        decisions,
        obligations,
    }
}

/// Each module's `response_deny`: the answer goes back only when none gave a reason.
fn combine_response(verdicts: &serde_json::Map<String, Value>) -> PolicyOutcome {
    let phase = PolicyPhase::Response;
    let mut decisions = Vec::new();
    for (name, verdict) in verdicts {
        match verdict.get("deny").map(deny_reasons) {
            Some(Ok(reasons)) if reasons.is_empty() => decisions.push(PolicyDecision {
                policy: name.clone(),
                phase,
                decision: PolicyVerdict::Allow,
                code: None,
                reason: None,
            }),
            Some(Ok(reasons)) => {
                decisions.extend(reasons.into_iter().map(|reason| deny(name, phase, reason)))
            }
            Some(Err(problem)) => decisions.push(module_error(name, phase, problem)),
            None => decisions.push(module_error(name, phase, "no verdict".to_owned())),
        }
    }
    let allowed = !decisions
        .iter()
        .any(|d| matches!(d.decision, PolicyVerdict::Deny | PolicyVerdict::Error));
    PolicyOutcome {
        allowed,
        decisions,
        obligations: Obligations::default(),
    }
}

fn deny(
    name: &str,
    phase: PolicyPhase,
    (code, message): (Option<String>, String),
) -> PolicyDecision {
    PolicyDecision {
        policy: name.to_owned(),
        phase,
        decision: PolicyVerdict::Deny,
        code,
        reason: Some(message),
    }
}

fn module_error(name: &str, phase: PolicyPhase, problem: String) -> PolicyDecision {
    PolicyDecision {
        policy: name.to_owned(),
        phase,
        decision: PolicyVerdict::Error,
        code: Some("invalid_decision".to_owned()),
        reason: Some(format!(
            "policy {name} gave an unusable decision: {problem}"
        )),
    }
}

/// A module's deny reasons as (code, message): strings, or objects with a string
/// `message` and an optional string `code`.
fn deny_reasons(deny: &Value) -> Result<Vec<(Option<String>, String)>, String> {
    let Value::Array(items) = deny else {
        return Err("`deny` must be a set".to_owned());
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(reason) => Ok((None, reason.clone())),
            Value::Object(object) => {
                let code = match object.get("code") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(code)) => Some(code.clone()),
                    Some(_) => return Err("a deny `code` must be a string".to_owned()),
                };
                match object.get("message") {
                    Some(Value::String(message)) => Ok((code, message.clone())),
                    _ => Err("a deny object needs a string `message`".to_owned()),
                }
            }
            _ => Err("deny reasons must be strings or objects".to_owned()),
        })
        .collect()
}

/// A module's `obligations` object, checked: unknown obligations, a header the gateway
/// owns, or a field the request cannot lose make the module's decision unusable.
fn parse_obligations(value: &Value) -> Result<Obligations, String> {
    let Value::Object(object) = value else {
        return Err("`obligations` must be an object".to_owned());
    };
    let mut obligations = Obligations::default();
    for (name, value) in object {
        match (name.as_str(), value) {
            ("max_tokens", Value::Number(number)) => match number.as_u64() {
                Some(cap) if cap > 0 => obligations.max_tokens = Some(cap),
                _ => return Err("obligation `max_tokens` must be a positive integer".to_owned()),
            },
            ("headers", Value::Object(headers)) => {
                for (header, value) in headers {
                    let header = header.to_ascii_lowercase();
                    let Value::String(value) = value else {
                        return Err(format!("obligation header `{header}` must be a string"));
                    };
                    check_header(&header, value)?;
                    obligations.headers.insert(header, value.clone());
                }
            }
            ("redact", Value::Array(fields)) => {
                for field in fields {
                    match field {
                        Value::String(field) if !UNREDACTABLE.contains(&field.as_str()) => {
                            obligations.redact.insert(field.clone());
                        }
                        _ => {
                            return Err(format!(
                                "obligation `redact` lists {field}: only top-level request \
                                 fields other than model and messages can be removed"
                            ))
                        }
                    }
                }
            }
            (name, _) => return Err(format!("unknown or malformed obligation `{name}`")),
        }
    }
    Ok(obligations)
}

fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !token || PROTECTED_HEADERS.contains(&name) || name.starts_with("x-mercator-") {
        return Err(format!(
            "obligation header `{name}` may not be set by a policy"
        ));
    }
    let printable = value.len() <= 4096 && value.bytes().all(|b| (b' '..=b'~').contains(&b));
    if !printable {
        return Err(format!(
            "obligation header `{name}` needs a printable ASCII value of at most 4096 bytes"
        ));
    }
    Ok(())
}

/// The digest that names a bundle in evidence: `sha256:` and the hex SHA-256 of the
/// RFC 8785 JSON of the modules as `[{"path", "source"}]`, sorted by path. An auditor
/// recomputes it from the `.rego` files with `mercator policy digest`.
pub fn bundle_digest(modules: &[PolicyModule]) -> String {
    let mut sorted: Vec<&PolicyModule> = modules.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));

    // Strings and arrays always have a canonical form, so this cannot fail; an empty
    // digest input would still name the bundle uniquely enough to be noticed.
    let canonical = canonical_json(&sorted).unwrap_or_default();
    let hex: String = Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn department() -> PolicyModule {
        PolicyModule {
            path: "policies/department.rego".to_owned(),
            source: include_str!("../../policies/department.rego").to_owned(),
        }
    }

    fn module(path: &str, source: &str) -> PolicyModule {
        PolicyModule {
            path: path.to_owned(),
            source: source.to_owned(),
        }
    }

    fn input(department: &str, model: &str) -> Value {
        json!({"request": {"user": {"department": department}, "model": model}})
    }

    #[test]
    fn finance_may_use_gpt_4() {
        let policy = Policy::compile(&[department()], DEFAULT_EVALUATION_LIMIT).unwrap();

        let outcome = policy.evaluate(&input("finance", "gpt-4"));

        assert!(outcome.allowed);
        assert_eq!(outcome.decisions[0].decision, PolicyVerdict::Allow);
    }

    #[test]
    fn finance_asking_for_gpt_3_5_is_denied_with_the_reason() {
        let policy = Policy::compile(&[department()], DEFAULT_EVALUATION_LIMIT).unwrap();

        let outcome = policy.evaluate(&input("finance", "gpt-3.5-turbo"));

        assert!(!outcome.allowed);
        assert_eq!(
            outcome.deny_reasons(),
            vec!["Department not authorized for this model"]
        );
    }

    #[test]
    fn a_deny_from_any_module_wins_over_an_allow() {
        let pii = module(
            "policies/pii.rego",
            "package mercator.policy.pii\nimport rego.v1\ndeny contains {\"code\": \"pii\", \"message\": \"no SSNs\"} if input.request.model == \"gpt-4\"",
        );
        let policy = Policy::compile(&[department(), pii], DEFAULT_EVALUATION_LIMIT).unwrap();

        let outcome = policy.evaluate(&input("finance", "gpt-4"));

        assert!(!outcome.allowed);
        assert_eq!(outcome.deny_reasons(), vec!["no SSNs"]);
    }

    #[test]
    fn no_allow_means_deny_by_default() {
        let quiet = module(
            "policies/quiet.rego",
            "package mercator.policy.quiet\nimport rego.v1\nx := 1",
        );
        let policy = Policy::compile(&[quiet], DEFAULT_EVALUATION_LIMIT).unwrap();

        let outcome = policy.evaluate(&json!({}));

        assert!(!outcome.allowed);
        assert_eq!(outcome.deny_reasons(), vec![DEFAULT_DENY_REASON]);
    }

    #[test]
    fn a_non_boolean_allow_is_an_error_and_denies() {
        let odd = module(
            "policies/odd.rego",
            "package mercator.policy.odd\nimport rego.v1\nallow := \"yes\"",
        );
        let policy = Policy::compile(&[odd], DEFAULT_EVALUATION_LIMIT).unwrap();

        let outcome = policy.evaluate(&json!({}));

        assert!(!outcome.allowed);
        assert_eq!(outcome.decisions[0].decision, PolicyVerdict::Error);
    }

    #[test]
    fn a_runtime_error_denies_and_says_so() {
        let failing = module(
            "policies/failing.rego",
            "package mercator.policy.failing\nimport rego.v1\nallow if { x := 1 / 0; x > 0 }\nallow if { to_number(\"nope\") }",
        );
        let policy = Policy::compile(&[failing], DEFAULT_EVALUATION_LIMIT).unwrap();

        let outcome = policy.evaluate(&json!({}));

        assert!(!outcome.allowed);
    }

    #[test]
    fn odd_input_still_gets_a_decision() {
        let policy = Policy::compile(&[department()], DEFAULT_EVALUATION_LIMIT).unwrap();

        for odd in [
            json!(null),
            json!([1, 2]),
            json!({"request": {"model": null, "user": 7}}),
        ] {
            assert!(!policy.evaluate(&odd).allowed, "{odd}");
        }
    }

    #[test]
    fn a_module_outside_the_mercator_packages_is_refused() {
        let stray = module("policies/stray.rego", "package authz\nallow := true");

        let error = Policy::compile(&[stray], DEFAULT_EVALUATION_LIMIT)
            .err()
            .unwrap();

        assert!(error.to_string().contains("policies/stray.rego"), "{error}");
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let broken = module(
            "policies/broken.rego",
            "package mercator.policy.broken\n\nallow if {",
        );

        let error = Policy::compile(&[broken], DEFAULT_EVALUATION_LIMIT)
            .err()
            .unwrap()
            .to_string();

        assert!(error.contains("policies/broken.rego"), "{error}");
        assert!(error.contains(":3:"), "{error}");
    }

    const ALLOW_ALL: &str = "package mercator.policy.open\nimport rego.v1\nallow := true";

    #[test]
    fn obligations_of_several_modules_merge_and_the_smallest_cap_wins() {
        let caps = module(
            "policies/caps.rego",
            "package mercator.policy.caps\nimport rego.v1\n\
             obligations := {\"max_tokens\": 256, \"headers\": {\"X-Team\": \"a\"}}",
        );
        let more = module(
            "policies/more.rego",
            "package mercator.policy.more\nimport rego.v1\n\
             obligations := {\"max_tokens\": 100, \"redact\": [\"user\"]}",
        );
        let open = module("policies/open.rego", ALLOW_ALL);
        let policy = Policy::compile(&[caps, more, open], DEFAULT_EVALUATION_LIMIT).unwrap();

        let outcome = policy.evaluate(&json!({}));

        assert!(outcome.allowed, "{:?}", outcome.decisions);
        assert_eq!(outcome.obligations.max_tokens, Some(100));
        assert_eq!(outcome.obligations.headers["x-team"], "a");
        assert!(outcome.obligations.redact.contains("user"));
    }

    #[test]
    fn an_obligation_the_gateway_cannot_honour_denies() {
        for obligation in [
            r#"{"headers": {"authorization": "Bearer stolen"}}"#,
            r#"{"headers": {"x-mercator-user-id": "root"}}"#,
            r#"{"redact": ["model"]}"#,
            r#"{"max_tokens": -5}"#,
            r#"{"max_tokens": 0}"#,
            r#"{"teleport": true}"#,
            r#""cap it""#,
        ] {
            let odd = module(
                "policies/odd.rego",
                &format!("package mercator.policy.odd\nimport rego.v1\nallow := true\nobligations := {obligation}"),
            );
            let policy = Policy::compile(&[odd], DEFAULT_EVALUATION_LIMIT).unwrap();

            let outcome = policy.evaluate(&json!({}));

            assert!(!outcome.allowed, "{obligation} was accepted");
            assert_eq!(
                outcome.decisions[0].decision,
                PolicyVerdict::Error,
                "{obligation}"
            );
        }
    }

    #[test]
    fn deny_codes_reach_the_decisions() {
        let coded = module(
            "policies/coded.rego",
            "package mercator.policy.coded\nimport rego.v1\n\
             deny contains {\"code\": \"pii_ssn\", \"message\": \"no SSNs\"}",
        );
        let open = module("policies/open.rego", ALLOW_ALL);
        let policy = Policy::compile(&[coded, open], DEFAULT_EVALUATION_LIMIT).unwrap();

        let outcome = policy.evaluate(&json!({}));

        assert!(!outcome.allowed);
        let deny = outcome
            .decisions
            .iter()
            .find(|d| d.decision == PolicyVerdict::Deny)
            .unwrap();
        assert_eq!(deny.code.as_deref(), Some("pii_ssn"));
        assert_eq!(deny.phase, PolicyPhase::Request);
    }

    #[test]
    fn a_response_rule_denies_an_answer_and_only_then() {
        let secrets = module(
            "policies/secrets.rego",
            "package mercator.policy.secrets\nimport rego.v1\n\
             response_deny contains \"secret in answer\" if contains(input.response.text, \"sk-\")",
        );
        let open = module("policies/open.rego", ALLOW_ALL);
        let policy = Policy::compile(&[secrets, open], DEFAULT_EVALUATION_LIMIT).unwrap();

        let leaked = policy.evaluate_response(&json!({"response": {"text": "your key: sk-123"}}));
        let clean = policy.evaluate_response(&json!({"response": {"text": "hello"}}));
        let odd = policy.evaluate_response(&json!({"response": {"text": 42}}));

        assert!(policy.has_response_rules());
        assert!(!leaked.allowed);
        assert_eq!(leaked.decisions[0].phase, PolicyPhase::Response);
        assert_eq!(leaked.deny_reasons(), ["secret in answer"]);
        assert!(clean.allowed, "{:?}", clean.decisions);
        // A policy that trips over a wrongly typed field fails closed, and says so.
        assert!(!odd.allowed);
        assert_eq!(odd.decisions[0].code.as_deref(), Some("policy_error"));
    }

    #[test]
    fn a_bundle_without_response_rules_lets_every_answer_through_unevaluated() {
        let policy = Policy::compile(&[department()], DEFAULT_EVALUATION_LIMIT).unwrap();

        let outcome = policy.evaluate_response(&json!({}));

        assert!(!policy.has_response_rules());
        assert!(outcome.allowed);
        assert!(outcome.decisions.is_empty());
    }

    #[test]
    fn a_runaway_policy_is_stopped_by_the_time_limit_and_denies() {
        let runaway = module(
            "policies/runaway.rego",
            "package mercator.policy.runaway\nimport rego.v1\n\
             allow if { count([x | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); x := i * j]) > 0 }",
        );
        let policy = Policy::compile(&[runaway], Duration::from_millis(20)).unwrap();

        let outcome = policy.evaluate(&json!({}));

        assert!(!outcome.allowed);
        assert_eq!(outcome.decisions[0].code.as_deref(), Some("policy_timeout"));
        assert!(outcome.decisions[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("time limit of 20 ms"));
    }

    #[test]
    fn the_digest_ignores_module_order_and_sees_any_change() {
        let a = module("policies/a.rego", "package mercator.policy.a");
        let b = module("policies/b.rego", "package mercator.policy.b");
        let b2 = module("policies/b.rego", "package mercator.policy.b\n");

        assert_eq!(
            bundle_digest(&[a.clone(), b.clone()]),
            bundle_digest(&[b, a.clone()])
        );
        assert_ne!(
            bundle_digest(std::slice::from_ref(&a)),
            bundle_digest(&[a, b2])
        );
    }
}
