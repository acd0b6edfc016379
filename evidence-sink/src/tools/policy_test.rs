//! `mercator policy test`: runs the Rego unit tests of a policy directory with regorus,
//! the same engine the filter uses.
//!
//! Every `*.rego` file of the directory, tests included, is loaded into one engine. A test
//! is a rule named `test_…` (not a function) in a package whose last component ends with
//! `_test`, as with `opa test`. It passes only when it evaluates to `true`: `false`, any
//! other value, undefined (a condition did not hold) and an evaluation error all fail.

use std::collections::BTreeSet;
use std::path::Path;

use regorus::unstable::{Parser, Rule, RuleHead};

use super::gateway::rego_files;
use super::{one_line_message, ToolError};

/// The outcome of one Rego test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoTestResult {
    /// The rule's full path, `data.<package>.<rule>`.
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

impl RegoTestResult {
    /// Whether the test passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Loads every `.rego` file of `dir` and runs its tests, in file and rule order.
pub fn run_policy_tests(dir: &Path) -> Result<Vec<RegoTestResult>, ToolError> {
    let mut engine = regorus::Engine::new();
    for file in rego_files(dir)? {
        engine
            .add_policy(file.module_path.clone(), file.source)
            .map_err(|e| ToolError::Rego {
                path: file.module_path,
                message: one_line_message(&format!("{e:#}")),
            })?;
    }

    let tests = test_rules(&mut engine)?;
    Ok(tests
        .into_iter()
        .map(|name| {
            let failure = match engine.eval_rule(name.clone()) {
                Ok(regorus::Value::Bool(true)) => None,
                Ok(regorus::Value::Undefined) => {
                    Some("undefined: a condition of the test did not hold".to_owned())
                }
                Ok(other) => Some(format!("evaluated to {other}, not true")),
                Err(error) => Some(format!(
                    "error: {}",
                    one_line_message(&format!("{error:#}"))
                )),
            };
            RegoTestResult { name, failure }
        })
        .collect())
}

/// The paths of the test rules of every `*_test` package, in module and rule order.
///
/// Rule names come from regorus's parsed modules (`regorus::unstable`): parsing the source
/// again with a pattern would miss rules that are not at the start of a line and take
/// `test_` text inside strings for rules. Should a regorus upgrade change that interface,
/// this stops compiling rather than finding fewer tests.
fn test_rules(engine: &mut regorus::Engine) -> Result<Vec<String>, ToolError> {
    let packages = engine.get_packages().map_err(|e| ToolError::Rego {
        path: "(bundle)".to_owned(),
        message: one_line_message(&e.to_string()),
    })?;

    let mut seen = BTreeSet::new();
    let mut tests = Vec::new();
    for (package, module) in packages.iter().zip(engine.get_modules().iter()) {
        let is_test_package = package
            .rsplit('.')
            .next()
            .is_some_and(|last| last.ends_with("_test"));
        if !is_test_package {
            continue;
        }
        for rule in &module.policy {
            let refr = match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. },
                    ..
                } => refr,
                _ => continue,
            };
            let Ok(components) = Parser::get_path_ref_components(refr) else {
                continue;
            };
            let [name] = components.as_slice() else {
                continue;
            };
            let path = format!("{package}.{}", name.text());
            if name.text().starts_with("test_") && seen.insert(path.clone()) {
                tests.push(path);
            }
        }
    }
    Ok(tests)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "package mercator.policy.sample\n\nimport rego.v1\n\nallow if input.ok\n";

    const TESTS: &str = r#"package mercator.policy.sample_test

import rego.v1

import data.mercator.policy.sample

test_allows_when_ok if {
	sample.allow with input as {"ok": true}
}

test_wrongly_expects_allow_without_ok if {
	sample.allow with input as {"ok": false}
}

test_is_false := false

helper(x) := x

test_function(x) if x
"#;

    #[test]
    fn passing_and_failing_tests_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sample.rego"), POLICY).unwrap();
        std::fs::write(dir.path().join("sample_test.rego"), TESTS).unwrap();

        let results = run_policy_tests(dir.path()).unwrap();

        let outcome: Vec<(&str, bool)> = results
            .iter()
            .map(|r| (r.name.as_str(), r.passed()))
            .collect();
        assert_eq!(
            outcome,
            vec![
                ("data.mercator.policy.sample_test.test_allows_when_ok", true),
                (
                    "data.mercator.policy.sample_test.test_wrongly_expects_allow_without_ok",
                    false
                ),
                ("data.mercator.policy.sample_test.test_is_false", false),
            ]
        );
        assert!(results[1].failure.as_deref().unwrap().contains("undefined"));
    }

    #[test]
    fn the_projects_policy_tests_pass() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");

        let results = run_policy_tests(&dir).unwrap();

        assert!(results.len() >= 6, "{results:?}");
        for result in &results {
            assert!(result.passed(), "{result:?}");
        }
    }

    #[test]
    fn a_module_that_does_not_parse_is_named_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.rego"), "package x\n\nallow if {\n").unwrap();

        let error = run_policy_tests(dir.path()).unwrap_err().to_string();

        assert!(error.contains("broken.rego"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }
}
