//! The logic of `mercator`, the operator's command-line tool; `src/bin/mercator.rs` only
//! parses the command line and prints what these modules return.
//!
//! | command | module |
//! |---|---|
//! | `mercator dev-init --dir .dev` | [`dev_init`]: development CA, server certificate, signing key, sink keys file, demo API keys, stand-in provider keys |
//! | `mercator api-key new` / `hash` | [`api_key`]: new `mj_…` keys and the SHA-256 that the gateway configuration holds |
//! | `mercator signing-key new` / `public` | [`signing_key`]: Ed25519 seeds and the sink's keys file |
//! | `mercator plugin-config` | [`gateway`]: `config/gateway.yaml` and the `.rego` files to the filter's JSON configuration |
//! | `mercator render` | [`render`]: an Envoy template with `{{name}}` placeholders filled |
//! | `mercator policy digest` / `test` | [`gateway::policy_modules`], [`policy_test`] |
//! | `mercator verify` | [`verify`]: signed records checked offline against a keys file |
//! | `mercator audit bundle` / `consistency` | [`audit`]: a bundle's signatures and inclusion proofs against a signed tree head; two tree heads' consistency |
//!
//! The gateway's own types do the checking: the plugin configuration is parsed and checked
//! by `mercator_filter::config`, policies are compiled by `mercator_filter::policy`, records
//! are verified by `mercator_evidence`, so the tool can never accept what the gateway or
//! the sink would refuse.
//!
//! Every failure is a [`ToolError`] whose message names the file or field at fault and
//! never contains a secret.

pub mod api_key;
pub mod audit;
pub mod cert;
pub mod dev_init;
mod error;
mod files;
pub mod gateway;
pub mod policy_test;
pub mod render;
pub mod signing_key;
pub mod verify;

pub use error::ToolError;

/// Fills `N` bytes from the operating system's secure random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], ToolError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(ToolError::Random)?;
    Ok(bytes)
}

/// One line out of a multi-line message. regorus reports a problem as
///
/// ```text
/// --> policies/x.rego:3:1
///   |
/// 3 | allow if {
///   | ^
/// error: expecting expression
/// ```
///
/// which becomes `policies/x.rego:3:1: expecting expression`, after whatever line came
/// before it (`policy … does not compile:`). Other messages have their lines joined.
pub(crate) fn one_line_message(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let location = lines
        .iter()
        .find_map(|line| line.strip_prefix("-->"))
        .map(str::trim);
    let message = lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("error:"))
        .map(str::trim);

    match (location, message) {
        (Some(location), Some(message)) => {
            let head: Vec<&str> = lines
                .iter()
                .take_while(|line| !line.starts_with("-->"))
                .filter(|line| !line.is_empty())
                .copied()
                .collect();
            let head = head.join(" ");
            if head.is_empty() {
                format!("{location}: {message}")
            } else {
                format!("{head} {location}: {message}")
            }
        }
        _ => lines
            .iter()
            .filter(|line| !line.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regorus_report_becomes_location_and_message() {
        let report = "policy p/b.rego does not compile: \n--> p/b.rego:3:1\n  |\n3 | allow if {\n  | ^\nerror: expecting expression";

        assert_eq!(
            one_line_message(report),
            "policy p/b.rego does not compile: p/b.rego:3:1: expecting expression"
        );
        assert_eq!(one_line_message("first\n\nsecond"), "first second");
    }
}
