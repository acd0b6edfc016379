//! `mercator`: the operator's command-line tool for Mercator Jupiter.
//!
//! This file parses the command line and prints; the logic and its tests live in
//! `mercator_evidence_sink::tools`. A failure prints one `error: …` line on standard error
//! and exits with 1 (2 for a usage error); a check that ran and found failures (`verify`,
//! `policy test`) exits with 1 after its report.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mercator_evidence_sink::load_keys;
use mercator_evidence_sink::tools::api_key::{
    api_key_sha256, entries_yaml, key_from_input, new_api_key, NewApiKeyRequest,
};
use mercator_evidence_sink::tools::audit::{audit_bundle, audit_consistency, tree_key_from_json};
use mercator_evidence_sink::tools::cert::{
    certificate_authority, client_certificate, ClientRequest,
};
use mercator_evidence_sink::tools::dev_init::dev_init;
use mercator_evidence_sink::tools::gateway::{plugin_config, policy_modules};
use mercator_evidence_sink::tools::policy_test::run_policy_tests;
use mercator_evidence_sink::tools::render::{is_placeholder_name, render_envoy_config};
use mercator_evidence_sink::tools::signing_key::{new_signing_key, public_key_entry};
use mercator_evidence_sink::tools::verify::{summary, verify_input};
use mercator_evidence_sink::tools::ToolError;
use mercator_filter::policy::bundle_digest;

/// Operator tool of Mercator Jupiter: keys, certificates, gateway configuration, policy
/// tests and offline evidence verification.
#[derive(Debug, Parser)]
#[command(name = "mercator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make the development CA, server certificate, signing key, sink keys file, demo API
    /// keys, stand-in provider keys, the sink's tree key and operator token; files that
    /// exist are kept.
    DevInit {
        /// Directory of the development material.
        #[arg(long, default_value = ".dev")]
        dir: PathBuf,
    },

    /// Make API keys for callers, or hash one.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),

    /// Make the Ed25519 key that signs evidence, or show its public half.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),

    /// Make mTLS client certificates, or a separate CA.
    #[command(subcommand)]
    Cert(CertCommand),

    /// Print the filter's plugin configuration (one line of JSON) made from the gateway
    /// configuration, after the filter's own checks.
    PluginConfig {
        /// The gateway configuration.
        #[arg(long, default_value = "config/gateway.yaml")]
        gateway: PathBuf,
    },

    /// Fill an Envoy configuration template and write it; prints the policy bundle digest.
    Render {
        /// The gateway configuration.
        #[arg(long, default_value = "config/gateway.yaml")]
        gateway: PathBuf,
        /// The Envoy template, with {{name}} placeholders.
        #[arg(long)]
        template: PathBuf,
        /// Where to write the Envoy configuration.
        #[arg(long)]
        out: PathBuf,
        /// A placeholder's value, verbatim; repeat for each placeholder but plugin_config.
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
        sets: Vec<(String, String)>,
    },

    /// Policy bundle digest and Rego unit tests.
    #[command(subcommand)]
    Policy(PolicyCommand),

    /// Verify signed evidence records offline: one record, a JSON array, the sink's JSON
    /// export, or JSON lines.
    Verify {
        /// The trusted keys, shaped like the sink's keys file.
        #[arg(long)]
        keys: PathBuf,
        /// The records; `-` reads standard input.
        file: PathBuf,
    },

    /// Audit the sink's evidence offline: a bundle's signatures and inclusion proofs
    /// against its signed tree head, or the consistency of two tree heads.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check a bundle (GET /v1/evidence/bundle): the tree head's signature, every record's
    /// signature and inclusion proof. Prints a summary, or the first failure.
    Bundle {
        /// The gateway's verifying keys, shaped like the sink's keys file.
        #[arg(long)]
        keys: PathBuf,
        /// The sink's tree key, as GET /v1/tree/key serves it.
        #[arg(long)]
        tree_key: PathBuf,
        /// The bundle; `-` reads standard input.
        file: PathBuf,
    },
    /// Check that tree head NEW extends tree head OLD, with the answer of
    /// GET /v1/tree/consistency?first=OLD_SIZE&second=NEW_SIZE.
    Consistency {
        /// The sink's tree key, as GET /v1/tree/key serves it.
        #[arg(long)]
        tree_key: PathBuf,
        /// The older tree head (GET /v1/tree, kept from before).
        #[arg(long)]
        old: PathBuf,
        /// The newer tree head.
        #[arg(long)]
        new: PathBuf,
        /// The consistency proof.
        #[arg(long)]
        proof: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Make a key: prints the key once (first line), then its configuration entry as YAML.
    New {
        /// The user the key authenticates.
        #[arg(long)]
        user: String,
        /// A name for the key itself, shown in logs and evidence.
        #[arg(long)]
        name: String,
        /// An attribute that policies see; repeat for each.
        #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attribute)]
        attributes: Vec<(String, String)>,
        /// RFC 3339 instant after which the key is refused.
        #[arg(long, value_parser = parse_rfc3339)]
        expires_at: Option<String>,
    },
    /// Read a key from standard input and print its SHA-256 as the configuration holds it.
    Hash,
}

#[derive(Debug, Subcommand)]
enum SigningKeyCommand {
    /// Write a new seed (mode 0600; never overwrites) and print its public key entry.
    New {
        /// The seed file to create.
        #[arg(long)]
        out: PathBuf,
        /// A sink keys file to add the public key to (created when missing).
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
    /// Print the public key entry, {"key_id":…,"public_key":…}, of a seed file.
    Public {
        /// The seed file.
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Issue a client certificate from a CA: writes OUT_DIR/NAME.pem and NAME-key.pem and
    /// prints the identity to map in identity.clients.
    Client {
        /// The directory holding the issuing CA's ca.pem and ca-key.pem.
        #[arg(long, default_value = ".dev")]
        ca_dir: PathBuf,
        /// Where to write the certificate and key.
        #[arg(long, default_value = ".dev/clients")]
        out_dir: PathBuf,
        /// File stem and common name.
        #[arg(long)]
        name: String,
        /// URI SAN, such as spiffe://example.org/ns/prod/sa/billing; without it the
        /// certificate is identified by its subject.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Days of validity; a negative number makes an already expired certificate.
        #[arg(long, default_value_t = 365, allow_negative_numbers = true)]
        days: i64,
    },
    /// Make a separate CA (OUT_DIR/ca.pem, ca-key.pem), one the gateway does not trust.
    Ca {
        /// Where to write it.
        #[arg(long)]
        out_dir: PathBuf,
        /// Its common name.
        #[arg(long, default_value = "Mercator Jupiter other CA")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print the digest that evidence records name the bundle of DIR by.
    Digest {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Run the test_* rules of the *_test packages in DIR.
    Test {
        /// The policy directory.
        dir: PathBuf,
    },
}

/// What a command printed and whether its checks passed.
#[derive(Default)]
struct Report {
    stdout: String,
    stderr: String,
    failed: bool,
}

impl Report {
    fn out(stdout: impl Into<String>) -> Self {
        Self {
            stdout: stdout.into(),
            ..Self::default()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();

    match run(cli.command) {
        Ok(report) => {
            emit(&mut std::io::stdout(), &report.stdout);
            emit(&mut std::io::stderr(), &report.stderr);
            if report.failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            emit(&mut std::io::stderr(), &format!("error: {error}\n"));
            ExitCode::from(error.exit_code())
        }
    }
}

/// Writes all of `text`; a closed pipe (`mercator verify … | head`) is not an error.
fn emit(stream: &mut impl std::io::Write, text: &str) {
    let _ = stream
        .write_all(text.as_bytes())
        .and_then(|()| stream.flush());
}

fn run(command: Command) -> Result<Report, ToolError> {
    match command {
        Command::DevInit { dir } => {
            let report = dev_init(&dir)?;
            let mut stdout: String = report.files.iter().map(|f| format!("{f}\n")).collect();
            stdout.push_str(&format!(
                "development material is in {}; files holding secrets are created mode 0600\n",
                dir.display()
            ));
            let stderr = report
                .warnings
                .iter()
                .map(|w| format!("warning: {w}\n"))
                .collect();
            Ok(Report {
                stdout,
                stderr,
                failed: false,
            })
        }

        Command::ApiKey(ApiKeyCommand::New {
            user,
            name,
            attributes,
            expires_at,
        }) => {
            let request = NewApiKeyRequest {
                user_id: user,
                name,
                attributes,
                expires_at,
            };
            let (key, entry) = new_api_key(&request)?;
            let yaml = entries_yaml(&[entry])?;
            Ok(Report {
                stdout: format!("{}\n{yaml}", key.expose()),
                stderr: "The key above is shown only now: hand it to its user. Add the entry \
                         to an api_key_files file or to api_keys in config/gateway.yaml.\n"
                    .to_owned(),
                failed: false,
            })
        }

        Command::ApiKey(ApiKeyCommand::Hash) => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|source| ToolError::Read {
                    path: PathBuf::from("standard input"),
                    source,
                })?;
            let key = key_from_input(&input)?;
            Ok(Report::out(format!("{}\n", api_key_sha256(key))))
        }

        Command::SigningKey(SigningKeyCommand::New { out, keys_file }) => {
            let entry = new_signing_key(&out, keys_file.as_deref())?;
            let mut stderr = format!("wrote the signing key to {} (mode 0600)\n", out.display());
            if let Some(keys_file) = &keys_file {
                stderr.push_str(&format!(
                    "added {} to {}\n",
                    entry.key_id,
                    keys_file.display()
                ));
            }
            Ok(Report {
                stdout: format!("{}\n", entry_json(&entry)?),
                stderr,
                failed: false,
            })
        }

        Command::SigningKey(SigningKeyCommand::Public { key }) => {
            let entry = public_key_entry(&key)?;
            Ok(Report::out(format!("{}\n", entry_json(&entry)?)))
        }

        Command::Cert(CertCommand::Client {
            ca_dir,
            out_dir,
            name,
            spiffe_id,
            days,
        }) => {
            let request = ClientRequest {
                name,
                spiffe_id: spiffe_id.clone(),
                days,
            };
            let written = client_certificate(&ca_dir, &out_dir, &request)?;
            let identity = match spiffe_id {
                Some(uri) => format!("spiffe_id: {uri}"),
                None => format!("subject: \"{}\"", written.subject),
            };
            Ok(Report::out(format!(
                "certificate {}\nkey {}\nmap it under identity.clients:\n  - {identity}\n    \
                 user_id: <user>\n    name: {}\n",
                written.certificate.display(),
                written.key.display(),
                request.name
            )))
        }

        Command::Cert(CertCommand::Ca { out_dir, name }) => {
            let written = certificate_authority(&out_dir, &name)?;
            Ok(Report::out(format!(
                "certificate {}\nkey {}\n",
                written.certificate.display(),
                written.key.display()
            )))
        }

        Command::PluginConfig { gateway } => {
            let made = plugin_config(&gateway)?;
            Ok(Report::out(format!("{}\n", made.json)))
        }

        Command::Render {
            gateway,
            template,
            out,
            sets,
        } => {
            let digest = render_envoy_config(&gateway, &template, &out, &sets)?;
            Ok(Report {
                stdout: format!("policy.bundle={digest}\n"),
                stderr: format!("wrote {} from {}\n", out.display(), template.display()),
                failed: false,
            })
        }

        Command::Policy(PolicyCommand::Digest { dir }) => {
            let modules = policy_modules(&dir)?;
            Ok(Report::out(format!("{}\n", bundle_digest(&modules))))
        }

        Command::Policy(PolicyCommand::Test { dir }) => policy_test(&dir),

        Command::Verify { keys, file } => verify(&keys, &file),

        Command::Audit(AuditCommand::Bundle {
            keys,
            tree_key,
            file,
        }) => {
            let ring = load_keys(&keys)?;
            let tree_key = read_tree_key(&tree_key)?;
            let outcome = if file == Path::new("-") {
                audit_bundle(std::io::stdin().lock(), &ring, &tree_key)?
            } else {
                let opened = std::fs::File::open(&file).map_err(|source| ToolError::Read {
                    path: file.clone(),
                    source,
                })?;
                audit_bundle(std::io::BufReader::new(opened), &ring, &tree_key)?
            };
            Ok(match outcome {
                Ok(summary) => Report::out(summary.lines()),
                Err(failure) => Report {
                    stdout: format!("{}\n", failure.line()),
                    stderr: String::new(),
                    failed: true,
                },
            })
        }

        Command::Audit(AuditCommand::Consistency {
            tree_key,
            old,
            new,
            proof,
        }) => {
            let tree_key = read_tree_key(&tree_key)?;
            let outcome = audit_consistency(
                &read_json(&old)?,
                &read_json(&new)?,
                &read_json(&proof)?,
                &tree_key,
            );
            Ok(match outcome {
                Ok(line) => Report::out(line),
                Err(failure) => Report {
                    stdout: format!("{}\n", failure.line()),
                    stderr: String::new(),
                    failed: true,
                },
            })
        }
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, ToolError> {
    let text = std::fs::read_to_string(path).map_err(|source| ToolError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ToolError::Json {
        path: path.to_owned(),
        source,
    })
}

fn read_tree_key(path: &Path) -> Result<mercator_evidence::VerifyingKey, ToolError> {
    let text = std::fs::read_to_string(path).map_err(|source| ToolError::Read {
        path: path.to_owned(),
        source,
    })?;
    tree_key_from_json(&text).map_err(|reason| ToolError::Field {
        path: path.to_owned(),
        field: "public_key".to_owned(),
        reason,
    })
}

fn policy_test(dir: &Path) -> Result<Report, ToolError> {
    let results = run_policy_tests(dir)?;

    let mut stdout = String::new();
    for result in &results {
        match &result.failure {
            None => stdout.push_str(&format!("PASS {}\n", result.name)),
            Some(reason) => stdout.push_str(&format!("FAIL {}: {reason}\n", result.name)),
        }
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    let failed = results.len() - passed;
    stdout.push_str(&format!("{passed} passed, {failed} failed\n"));

    let stderr = if results.is_empty() {
        format!(
            "error: no tests in {}: a test is a rule test_… in a package whose name ends with _test\n",
            dir.display()
        )
    } else {
        String::new()
    };
    Ok(Report {
        stdout,
        stderr,
        failed: failed > 0 || results.is_empty(),
    })
}

fn verify(keys: &Path, file: &Path) -> Result<Report, ToolError> {
    let ring = load_keys(keys)?;

    let (input, source_name) = if file == Path::new("-") {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|source| ToolError::Read {
                path: PathBuf::from("standard input"),
                source,
            })?;
        (input, "standard input".to_owned())
    } else {
        let input = std::fs::read_to_string(file).map_err(|source| ToolError::Read {
            path: file.to_owned(),
            source,
        })?;
        (input, file.display().to_string())
    };

    let checks = verify_input(&input, &source_name, &ring)?;
    let mut stdout: String = checks.iter().map(|c| format!("{}\n", c.line())).collect();
    stdout.push_str(&format!("{}\n", summary(&checks)));
    Ok(Report {
        stdout,
        stderr: String::new(),
        failed: checks.iter().any(|c| c.outcome.is_err()),
    })
}

fn entry_json(entry: &mercator_evidence_sink::KeyEntry) -> Result<String, ToolError> {
    serde_json::to_string(entry).map_err(|e| ToolError::Serialize {
        what: "the key entry".to_owned(),
        reason: e.to_string(),
    })
}

/// `NAME=VALUE` for `--set`: NAME is a placeholder name, VALUE anything (even empty).
fn parse_set(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    if !is_placeholder_name(name) {
        return Err(format!(
            "`{name}` is not a placeholder name (letters, digits and _)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `KEY=VALUE` for `--attr`: KEY must not be empty.
fn parse_attribute(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    if key.trim().is_empty() {
        return Err(format!("`{text}` has an empty attribute name"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// An RFC 3339 instant, kept as written once it parses.
fn parse_rfc3339(text: &str) -> Result<String, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|_| text.to_owned())
        .map_err(|e| format!("`{text}` is not an RFC 3339 instant (2027-01-31T00:00:00Z): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn values_and_attributes_are_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_set("tls_key=/a=b").unwrap(),
            ("tls_key".to_owned(), "/a=b".to_owned())
        );
        assert!(parse_set("bad name=x").is_err());
        assert!(parse_set("novalue").is_err());
        assert!(parse_attribute("=x").is_err());
        assert!(parse_rfc3339("2027-01-31T00:00:00Z").is_ok());
        assert!(parse_rfc3339("next tuesday").is_err());
    }
}
