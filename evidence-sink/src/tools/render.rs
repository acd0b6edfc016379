//! Filling an Envoy configuration template.
//!
//! A placeholder is `{{name}}` (spaces inside the braces are allowed), `name` being
//! letters, digits and `_`. `{{plugin_config}}` becomes the filter's plugin configuration
//! as a JSON string literal, which is also a valid YAML double-quoted scalar; every other
//! placeholder becomes the value given with `--set name=value`, verbatim. A placeholder
//! without a value and a value without a placeholder are both errors: either one means
//! the template and the command line disagree. Any other `{{` is left as it is, and so is
//! a placeholder without a value on a whole-line `#` comment (comments may document
//! placeholders; they configure nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::files::{read_text, write_replacing, SECRET};
use super::gateway::plugin_config;
use super::ToolError;

/// The placeholder that the plugin configuration fills.
pub const PLUGIN_CONFIG: &str = "plugin_config";

/// Whether `name` can be a placeholder name.
pub fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The value of `{{plugin_config}}`: the JSON text as a JSON string literal.
pub fn plugin_config_value(plugin_config_json: &str) -> Result<String, ToolError> {
    serde_json::to_string(plugin_config_json).map_err(|e| ToolError::Serialize {
        what: "the plugin configuration as a string".to_owned(),
        reason: e.to_string(),
    })
}

/// `mercator render`: fills `template` with the plugin configuration made from `gateway`
/// and the `--set` values, writes `out` (mode 0600: operator configuration), and returns
/// the policy bundle's digest.
pub fn render_envoy_config(
    gateway: &Path,
    template: &Path,
    out: &Path,
    sets: &[(String, String)],
) -> Result<String, ToolError> {
    let mut values = BTreeMap::new();
    for (name, value) in sets {
        if name == PLUGIN_CONFIG {
            return Err(ToolError::Usage(format!(
                "--set {PLUGIN_CONFIG} is not allowed; it is made from --gateway"
            )));
        }
        if values.insert(name.clone(), value.clone()).is_some() {
            return Err(ToolError::Usage(format!(
                "--set {name} is given twice; give each value once"
            )));
        }
    }

    let made = plugin_config(gateway)?;
    values.insert(PLUGIN_CONFIG.to_owned(), plugin_config_value(&made.json)?);

    let text = read_text(template)?;
    let rendered = render(&text, template, &values)?;
    write_replacing(out, rendered.as_bytes(), SECRET)?;
    Ok(made.bundle_digest)
}

/// Replaces every placeholder of `template` with its value from `values`. `path` only
/// names the template in errors.
pub fn render(
    template: &str,
    path: &Path,
    values: &BTreeMap<String, String>,
) -> Result<String, ToolError> {
    let mut output = String::with_capacity(template.len());
    let mut used = BTreeSet::new();
    let mut missing: Vec<(&str, usize)> = Vec::new();

    for (index, line) in template.split_inclusive('\n').enumerate() {
        // A whole-line YAML comment documents the template: its placeholders are filled
        // when a value is given, left as they are otherwise, and configure nothing.
        let comment = line.trim_start().starts_with('#');
        let mut rest = line;

        while let Some(start) = rest.find("{{") {
            let (before, from_braces) = rest.split_at(start);
            output.push_str(before);

            let Some((name, length)) = placeholder_at(from_braces) else {
                output.push_str("{{");
                rest = from_braces.get(2..).unwrap_or_default();
                continue;
            };
            let (placeholder, after) = from_braces.split_at(length.min(from_braces.len()));
            match values.get(name) {
                Some(value) => {
                    output.push_str(value);
                    if !comment {
                        used.insert(name);
                    }
                }
                None if comment => output.push_str(placeholder),
                None => {
                    if !missing.iter().any(|(known, _)| *known == name) {
                        missing.push((name, index + 1));
                    }
                }
            }
            rest = after;
        }
        output.push_str(rest);
    }

    if !missing.is_empty() {
        let listed: Vec<String> = missing
            .iter()
            .map(|(name, line)| format!("{{{{{name}}}}} (line {line})"))
            .collect();
        return Err(ToolError::Template {
            path: path.to_owned(),
            reason: format!(
                "no value for {}; pass --set NAME=VALUE for each",
                listed.join(", ")
            ),
        });
    }
    if let Some(unused) = values.keys().find(|name| !used.contains(name.as_str())) {
        return Err(ToolError::Template {
            path: path.to_owned(),
            reason: format!("it has no {{{{{unused}}}}} placeholder, but a value is given for it"),
        });
    }
    Ok(output)
}

/// The name and the length of the placeholder that `text` starts with, if it is one.
fn placeholder_at(text: &str) -> Option<(&str, usize)> {
    let inner = text.strip_prefix("{{")?;
    let end = inner.find("}}")?;
    let name = inner.get(..end)?.trim_matches(' ');
    is_placeholder_name(name).then_some((name, end + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn every_placeholder_is_replaced_verbatim() {
        let template = "port: {{port}}\nhost: {{ host }}\nagain: {{port}}\nlua: \"{{x\"\n";

        let out = render(
            template,
            Path::new("t.yaml"),
            &values(&[("port", "8443"), ("host", "127.0.0.1")]),
        )
        .unwrap();

        assert_eq!(
            out,
            "port: 8443\nhost: 127.0.0.1\nagain: 8443\nlua: \"{{x\"\n"
        );
    }

    #[test]
    fn a_placeholder_without_a_value_is_named_with_its_line() {
        let error = render(
            "a: {{a}}\nb: {{bee}}\n",
            Path::new("envoy/t.yaml"),
            &values(&[("a", "1")]),
        )
        .unwrap_err()
        .to_string();

        assert!(error.contains("envoy/t.yaml"), "{error}");
        assert!(error.contains("no value for {{bee}} (line 2)"), "{error}");
    }

    #[test]
    fn placeholders_in_comment_lines_are_filled_when_known_and_kept_otherwise() {
        let template = "# fills each {{name}}; listens on {{port}}\nport: {{port}}\n";

        let out = render(template, Path::new("t.yaml"), &values(&[("port", "8443")])).unwrap();

        assert_eq!(out, "# fills each {{name}}; listens on 8443\nport: 8443\n");
    }

    #[test]
    fn a_value_used_only_in_a_comment_is_unused() {
        let error = render(
            "# {{port}}\na: 1\n",
            Path::new("t.yaml"),
            &values(&[("port", "8443")]),
        )
        .unwrap_err();

        assert!(error.to_string().contains("{{port}}"), "{error}");
    }

    #[test]
    fn a_value_without_a_placeholder_is_named() {
        let error = render(
            "a: {{a}}\n",
            Path::new("t.yaml"),
            &values(&[("a", "1"), ("sink_prot", "8600")]),
        )
        .unwrap_err()
        .to_string();

        assert!(error.contains("{{sink_prot}}"), "{error}");
    }

    #[test]
    fn the_plugin_configuration_is_a_yaml_string_that_reads_back_as_the_json() {
        let json = r#"{"a":"line\nbreak","b":"quote \" and 'single' # not a comment"}"#;
        let value = plugin_config_value(json).unwrap();

        let out = render(
            "value: {{plugin_config}}\n",
            Path::new("t.yaml"),
            &values(&[(PLUGIN_CONFIG, &value)]),
        )
        .unwrap();

        let read: BTreeMap<String, String> = serde_norway::from_str(&out).unwrap();
        assert_eq!(read["value"], json);
    }
}
