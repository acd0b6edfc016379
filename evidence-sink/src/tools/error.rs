//! The one error type of the `mercator` tool. Each message is one line that names the file
//! or field at fault; none carries key material.

use std::path::PathBuf;

use mercator_evidence::KeyError;
use mercator_filter::config::ConfigError;

use super::one_line_message;
use crate::keys::KeysError;

/// Why a `mercator` command failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The command line is inconsistent in a way its parser cannot see (an attribute given
    /// twice, say). The tool exits with 2, as for any usage error.
    #[error("{0}")]
    Usage(String),

    /// A file or directory could not be read (missing, no permission).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// A file or directory could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// The command makes a new file and refuses to replace one that is there.
    #[error("{path} already exists; move it away first, the tool does not overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },

    /// A YAML file does not parse, or does not have the expected shape.
    #[error("{path}: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// Where and why parsing stopped.
        source: serde_norway::Error,
    },

    /// A JSON file does not parse.
    #[error("{path}: not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Where and why parsing stopped.
        source: serde_json::Error,
    },

    /// A field of the gateway configuration, or of an API key file, has a value the tool
    /// cannot use.
    #[error("{path}: `{field}`: {reason}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The dotted path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A file named in `api_key_files` does not exist, which usually means the development
    /// material has not been made yet.
    #[error(
        "{path} (listed in api_key_files of {gateway}) does not exist; run `make dev` or \
         `mercator dev-init --dir .dev` to create the development keys, or remove it from the list"
    )]
    MissingApiKeyFile {
        /// The missing file.
        path: PathBuf,
        /// The gateway configuration that lists it.
        gateway: PathBuf,
    },

    /// The plugin configuration built from the gateway YAML is refused by the filter's own
    /// checks (unknown field, bad key hash, a policy that does not compile, …).
    #[error("{}: {}{origin}", .path.display(), one_line_message(&.source.to_string()))]
    PluginConfig {
        /// The gateway configuration.
        path: PathBuf,
        /// The filter's reason.
        source: ConfigError,
        /// Where an API key entry came from, when it came from an `api_key_files` file.
        origin: String,
    },

    /// A directory holds no policy module (`*.rego` other than `*_test.rego`).
    #[error("{dir} holds no policy module (*.rego files other than *_test.rego)")]
    NoPolicies {
        /// The directory.
        dir: PathBuf,
    },

    /// A Rego file does not parse or compile (for `policy test`).
    #[error("policy {path} does not compile: {message}")]
    Rego {
        /// The module's path as shown to regorus.
        path: String,
        /// regorus's message, on one line.
        message: String,
    },

    /// A template placeholder has no value, or a given value has no placeholder.
    #[error("template {path}: {reason}")]
    Template {
        /// The template.
        path: PathBuf,
        /// Which placeholder and why.
        reason: String,
    },

    /// A signing key file does not hold the base64 of a 32-byte seed.
    #[error("signing key {path}: {source}")]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// Why the key is unusable; never the key itself.
        source: KeyError,
    },

    /// A keys file is unreadable or inconsistent.
    #[error(transparent)]
    Keys(#[from] KeysError),

    /// The input to `verify` holds no record at all.
    #[error("{source_name} holds no evidence record")]
    NoRecords {
        /// The file, or `standard input`.
        source_name: String,
    },

    /// The input to `api-key hash` is empty.
    #[error("no API key on standard input")]
    NoKeyOnStdin,

    /// The operating system's random source failed; nothing is generated without it.
    #[error("the operating system's random number source failed: {0}")]
    Random(getrandom::Error),

    /// A certificate or its key could not be made or read.
    #[error("{what}: {source}")]
    Certificate {
        /// What was being made or read, with its file.
        what: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },

    /// Serializing output failed (a value YAML or JSON cannot represent).
    #[error("cannot write {what}: {reason}")]
    Serialize {
        /// What was being written.
        what: String,
        /// The serializer's reason.
        reason: String,
    },
}

impl ToolError {
    /// The process exit code for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}
