//! API keys for callers of the gateway: made here, shown once, stored only as a hash.
//!
//! A key is `mj_` followed by the unpadded base64url of 32 random bytes (43 characters):
//! 256 bits of entropy, and a prefix that secret scanners and people recognise. The gateway
//! configuration holds the lowercase hex of SHA-256 over the key's UTF-8 bytes, in an
//! entry with the fields of `mercator_filter::config::ApiKeyConfig`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{random_bytes, ToolError};

/// The prefix of every key this tool makes.
pub const API_KEY_PREFIX: &str = "mj_";

/// A newly made API key. Not `Debug` and not `Display`, so it reaches the screen only
/// where a command prints it on purpose, once.
pub struct ApiKey(String);

impl ApiKey {
    /// Makes a key from 32 bytes of the operating system's secure random source.
    pub fn generate() -> Result<Self, ToolError> {
        let bytes = random_bytes::<32>()?;
        Ok(Self(format!(
            "{API_KEY_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// The key itself, to hand to its user once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash the gateway configuration stores (see [`api_key_sha256`]).
    pub fn sha256(&self) -> String {
        api_key_sha256(&self.0)
    }
}

/// The lowercase hex of SHA-256 over the key's UTF-8 bytes, as `ApiKeyConfig.sha256`.
///
/// ```
/// use mercator_evidence_sink::tools::api_key::api_key_sha256;
/// assert_eq!(
///     api_key_sha256(""),
///     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// ```
pub fn api_key_sha256(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// One entry of `api_keys` (or of an `api_key_files` file), written by this tool.
///
/// The filter's `ApiKeyConfig` only deserializes, so this is its written form; the tests
/// read what this writes back through `ApiKeyConfig`, whose unknown-field check keeps
/// the two in step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyEntry {
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
    /// The user the key authenticates.
    pub user_id: String,
    /// The key's own name, shown in logs and evidence.
    pub name: String,
    /// Whether the key may be used.
    pub enabled: bool,
    /// RFC 3339 instant after which the key is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Attributes that policies see (`department: finance`).
    pub attributes: BTreeMap<String, String>,
}

impl ApiKeyEntry {
    /// An enabled entry for `key`.
    pub fn for_key(key: &ApiKey, user_id: &str, name: &str) -> Self {
        Self {
            sha256: key.sha256(),
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            enabled: true,
            expires_at: None,
            attributes: BTreeMap::new(),
        }
    }
}

/// What `mercator api-key new` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewApiKeyRequest {
    /// The user the key authenticates.
    pub user_id: String,
    /// The key's own name.
    pub name: String,
    /// Attributes, in the order given; a name given twice is a usage error.
    pub attributes: Vec<(String, String)>,
    /// RFC 3339 expiry, already checked by the command line parser.
    pub expires_at: Option<String>,
}

/// Makes a key and its configuration entry. The caller prints the key once.
pub fn new_api_key(request: &NewApiKeyRequest) -> Result<(ApiKey, ApiKeyEntry), ToolError> {
    if request.user_id.trim().is_empty() {
        return Err(ToolError::Usage("--user must not be empty".to_owned()));
    }
    if request.name.trim().is_empty() {
        return Err(ToolError::Usage("--name must not be empty".to_owned()));
    }

    let mut attributes = BTreeMap::new();
    for (name, value) in &request.attributes {
        if attributes.insert(name.clone(), value.clone()).is_some() {
            return Err(ToolError::Usage(format!(
                "--attr {name} is given twice; give each attribute once"
            )));
        }
    }

    let key = ApiKey::generate()?;
    let entry = ApiKeyEntry {
        expires_at: request.expires_at.clone(),
        attributes,
        ..ApiKeyEntry::for_key(&key, &request.user_id, &request.name)
    };
    Ok((key, entry))
}

/// The YAML list of `entries`, as an `api_key_files` file or the `api_keys` field holds it.
pub fn entries_yaml(entries: &[ApiKeyEntry]) -> Result<String, ToolError> {
    serde_norway::to_string(entries).map_err(|e| ToolError::Serialize {
        what: "the API key entry as YAML".to_owned(),
        reason: e.to_string(),
    })
}

/// The key that `mercator api-key hash` read: surrounding whitespace (the newline of
/// `echo`) is not part of it.
pub fn key_from_input(input: &str) -> Result<&str, ToolError> {
    let key = input.trim();
    if key.is_empty() {
        return Err(ToolError::NoKeyOnStdin);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mercator_filter::config::ApiKeyConfig;

    #[test]
    fn a_key_has_the_prefix_and_43_base64url_characters() {
        let key = ApiKey::generate().unwrap();
        let text = key.expose();

        let body = text.strip_prefix("mj_").unwrap();
        assert_eq!(body.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_ne!(ApiKey::generate().unwrap().expose(), text);
    }

    #[test]
    fn the_hash_is_lowercase_hex_sha256_of_the_key_text() {
        // The SHA-256 test vector of FIPS 180-2 for "abc".
        assert_eq!(
            api_key_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn input_whitespace_is_not_part_of_the_key() {
        assert_eq!(key_from_input("  mj_abc\n").unwrap(), "mj_abc");
        assert!(matches!(key_from_input("\n"), Err(ToolError::NoKeyOnStdin)));
    }

    #[test]
    fn a_written_entry_reads_back_as_the_filters_api_key_config() {
        let request = NewApiKeyRequest {
            user_id: "alice".to_owned(),
            name: "alice-laptop".to_owned(),
            attributes: vec![("department".to_owned(), "finance".to_owned())],
            expires_at: Some("2027-01-01T00:00:00Z".to_owned()),
        };
        let (key, entry) = new_api_key(&request).unwrap();

        let yaml = entries_yaml(&[entry]).unwrap();
        let read: Vec<ApiKeyConfig> = serde_norway::from_str(&yaml).unwrap();

        assert_eq!(read.len(), 1);
        assert_eq!(read[0].sha256, key.sha256());
        assert_eq!(read[0].user_id, "alice");
        assert_eq!(read[0].attributes["department"], "finance");
        assert_eq!(read[0].expires_at.as_deref(), Some("2027-01-01T00:00:00Z"));
        assert!(!yaml.contains(key.expose()));
    }

    #[test]
    fn an_attribute_given_twice_is_a_usage_error() {
        let request = NewApiKeyRequest {
            user_id: "alice".to_owned(),
            name: "k".to_owned(),
            attributes: vec![
                ("department".to_owned(), "finance".to_owned()),
                ("department".to_owned(), "legal".to_owned()),
            ],
            expires_at: None,
        };

        let error = new_api_key(&request).err().unwrap();

        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("department"), "{error}");
    }
}
