//! The Rego policy bundle, compiled once with regorus, and the decision it gives.
//!
//! Policy modules live in packages `mercator.policy.<name>`; shared code lives in
//! `mercator.lib.*`. Each policy module may define `allow` (a boolean) and `deny` (a set
//! of reasons: strings, or objects with a `message` and an optional `code`). The gateway
//! allows a request only when at least one module allows it and no module denies it or
//! fails: default deny, and a deny from any module wins.
//!
//! The gateway reads every module's verdict through one entry point of its own,
//! `data.mercator.gateway.verdicts`, compiled together with the bundle, so one evaluation
//! per request yields each module's verdict for the evidence.

use std::sync::Arc;

use mercator_evidence::{canonical_json, PolicyDecision, PolicyVerdict};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The gateway's own module: gathers each policy module's `allow` and `deny`.
const GATEWAY_MODULE: &str = r#"
package mercator.gateway

import rego.v1

verdicts[name] := verdict if {
	some name, module in data.mercator.policy
	verdict := {
		"allow": object.get(module, "allow", false),
		"deny": object.get(module, "deny", []),
	}
}
"#;

const ENTRY_POINT: &str = "data.mercator.gateway.verdicts";

/// Reason given when no module allowed the request.
pub const DEFAULT_DENY_REASON: &str = "No policy allows this request";

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
    compiled: regorus::CompiledPolicy,
    digest: String,
}

/// What the bundle decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOutcome {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Each module's verdict, and the gateway's own when it had to deny by default or on error.
    pub decisions: Vec<PolicyDecision>,
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
    fn failed(reason: String) -> Self {
        Self {
            allowed: false,
            decisions: vec![PolicyDecision {
                policy: "gateway".to_owned(),
                decision: PolicyVerdict::Error,
                reason: Some(reason),
            }],
        }
    }
}

impl Policy {
    /// Parses and compiles the bundle. Fails on the first module that does not compile,
    /// naming its file and line.
    pub fn compile(modules: &[PolicyModule]) -> Result<Self, PolicyError> {
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
        let entry: Arc<str> = Arc::from(ENTRY_POINT);
        let compiled =
            engine
                .compile_with_entrypoint(&entry)
                .map_err(|e| PolicyError::Compile {
                    path: "bundle".to_owned(),
                    message: e.to_string(),
                })?;

        Ok(Self {
            compiled,
            digest: bundle_digest(modules),
        })
    }

    /// `sha256:` and the hex digest of the bundle (see [`bundle_digest`]).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Evaluates the bundle on one request's input. Never fails: an evaluation error or an
    /// unusable result is a deny that says so.
    pub fn evaluate(&self, input: &Value) -> PolicyOutcome {
        let input = regorus::Value::from(input.clone());
        let result = match self.compiled.eval_with_input(input) {
            Ok(result) => result,
            Err(error) => {
                return PolicyOutcome::failed(format!("policy evaluation failed: {error}"))
            }
        };
        let verdicts = match result.to_json_str() {
            Ok(text) => serde_json::from_str::<Value>(&text).ok(),
            Err(_) => None,
        };
        match verdicts {
            Some(Value::Object(verdicts)) => combine(&verdicts),
            _ => PolicyOutcome::failed("the policy bundle gave no decision".to_owned()),
        }
    }
}

/// Turns each module's `{allow, deny}` into verdicts and the overall decision.
fn combine(verdicts: &serde_json::Map<String, Value>) -> PolicyOutcome {
    let mut decisions = Vec::new();
    let mut any_allow = false;

    for (name, verdict) in verdicts {
        let allow = verdict.get("allow");
        let reasons = verdict.get("deny").map(deny_reasons);

        match (allow, reasons) {
            (Some(Value::Bool(_)), Some(Ok(reasons))) if !reasons.is_empty() => {
                decisions.extend(reasons.into_iter().map(|reason| PolicyDecision {
                    policy: name.clone(),
                    decision: PolicyVerdict::Deny,
                    reason: Some(reason),
                }));
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
                    decision,
                    reason: None,
                });
            }
            (_, Some(Err(problem))) => decisions.push(module_error(name, problem)),
            _ => decisions.push(module_error(name, "`allow` must be a boolean".to_owned())),
        }
    }

    let refused = decisions
        .iter()
        .any(|d| matches!(d.decision, PolicyVerdict::Deny | PolicyVerdict::Error));
    if !any_allow && !refused {
        decisions.push(PolicyDecision {
            policy: "default".to_owned(),
            decision: PolicyVerdict::Deny,
            reason: Some(DEFAULT_DENY_REASON.to_owned()),
        });
    }

    PolicyOutcome {
        allowed: any_allow && !refused,
        decisions,
    }
}

fn module_error(name: &str, problem: String) -> PolicyDecision {
    PolicyDecision {
        policy: name.to_owned(),
        decision: PolicyVerdict::Error,
        reason: Some(format!(
            "policy {name} gave an unusable decision: {problem}"
        )),
    }
}

/// A module's deny reasons: strings, or objects with a string `message`.
fn deny_reasons(deny: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = deny else {
        return Err("`deny` must be a set".to_owned());
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(reason) => Ok(reason.clone()),
            Value::Object(object) => match object.get("message") {
                Some(Value::String(message)) => Ok(message.clone()),
                _ => Err("a deny object needs a string `message`".to_owned()),
            },
            _ => Err("deny reasons must be strings or objects".to_owned()),
        })
        .collect()
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
        let policy = Policy::compile(&[department()]).unwrap();

        let outcome = policy.evaluate(&input("finance", "gpt-4"));

        assert!(outcome.allowed);
        assert_eq!(outcome.decisions[0].decision, PolicyVerdict::Allow);
    }

    #[test]
    fn finance_asking_for_gpt_3_5_is_denied_with_the_reason() {
        let policy = Policy::compile(&[department()]).unwrap();

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
        let policy = Policy::compile(&[department(), pii]).unwrap();

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
        let policy = Policy::compile(&[quiet]).unwrap();

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
        let policy = Policy::compile(&[odd]).unwrap();

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
        let policy = Policy::compile(&[failing]).unwrap();

        let outcome = policy.evaluate(&json!({}));

        assert!(!outcome.allowed);
    }

    #[test]
    fn odd_input_still_gets_a_decision() {
        let policy = Policy::compile(&[department()]).unwrap();

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

        let error = Policy::compile(&[stray]).err().unwrap();

        assert!(error.to_string().contains("policies/stray.rego"), "{error}");
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let broken = module(
            "policies/broken.rego",
            "package mercator.policy.broken\n\nallow if {",
        );

        let error = Policy::compile(&[broken]).err().unwrap().to_string();

        assert!(error.contains("policies/broken.rego"), "{error}");
        assert!(error.contains(":3:"), "{error}");
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
