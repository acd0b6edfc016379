//! The plugin configuration: parsed once when Envoy configures the filter, validated, and
//! turned into a [`Gateway`] that every request borrows.
//!
//! The configuration arrives as JSON in the Envoy plugin's `configuration` (the `mercator
//! render` command produces it from `config/gateway.yaml` and the `.rego` files). Secrets
//! never travel in it: the signing key and provider keys are named by environment variable
//! and read from the VM's environment (Envoy's `vm_config.environment_variables`).

use std::collections::{BTreeMap, HashSet};

use mercator_evidence::SigningKey;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::auth::{ApiKeyHash, ApiKeyRecord, KeyRing};
use crate::forbidden::{ForbiddenContent, ForbiddenPattern};
use crate::identity::{Authenticator, ClientRecord, IdentityMode};
use crate::policy::{Policy, PolicyError, PolicyModule};

/// Why the filter refuses to start. Each variant names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration is not JSON of the expected shape (unknown field, wrong type).
    #[error("plugin configuration: {0}")]
    Shape(String),
    /// A field has a value that is the right type but cannot be used.
    #[error("plugin configuration: `{field}`: {reason}")]
    Invalid {
        /// The dotted path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable that the configuration names is not set in the VM.
    #[error(
        "plugin configuration: `{field}` names environment variable {variable}, which is not \
         set (pass it with vm_config.environment_variables)"
    )]
    MissingEnvironment {
        /// The dotted path of the field naming the variable.
        field: String,
        /// The variable.
        variable: String,
    },
    /// A policy does not compile.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The plugin configuration as written. Unknown fields are refused: a typo in a security
/// setting must not silently fall back to a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Names this gateway in logs.
    #[serde(default = "default_gateway_id")]
    pub gateway_id: String,
    /// Size limits on what the gateway reads.
    #[serde(default)]
    pub limits: Limits,
    /// The providers requests may go to, by name (`openai`).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// The API keys that may call, as SHA-256 hashes.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Which credentials a request must carry, and the mTLS client identities.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// The Rego policy bundle.
    pub policies: PolicyConfig,
    /// Prices per model, in US dollars per million tokens.
    #[serde(default)]
    pub pricing: BTreeMap<String, ModelPrice>,
    /// Where and how evidence is signed and delivered.
    pub evidence: EvidenceConfig,
    /// Patterns that no answer may match (see [`crate::forbidden`]).
    #[serde(default)]
    pub forbidden_content: Vec<ForbiddenPattern>,
    /// For `make bench` only: the filter is loaded and configured as usual, but every
    /// request and answer passes through untouched, with no authentication, validation,
    /// policy or evidence. It measures what merely loading the filter costs. Never set it
    /// on a gateway that serves callers: the filter logs a critical line at start when it
    /// is on.
    #[serde(default)]
    pub benchmark_passthrough: bool,
}

fn default_gateway_id() -> String {
    "mercator".to_owned()
}

/// Limits on what callers may send and on what the gateway reads. Each has a default; a
/// request over a limit is refused (400, or 413 for sizes) with the field named.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[serde(default = "default_max_request_body")]
    pub max_request_body_bytes: usize,
    /// Largest provider answer the gateway reads, in bytes; a larger one fails closed with
    /// 502 (a stream is stopped with an error event).
    #[serde(default = "default_max_response_body")]
    pub max_response_body_bytes: usize,
    /// Longest one policy evaluation may run; a longer one is stopped and denies.
    #[serde(default = "default_policy_evaluation_ms")]
    pub policy_evaluation_ms: u64,
    /// Most messages in one request (Anthropic's `system` counts as one); more get 400.
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// Most characters of text in one message (text parts, tool calls and tool results;
    /// images are bounded by the body size only); more get 413.
    #[serde(default = "default_max_message_chars")]
    pub max_message_chars: usize,
    /// Most characters of text in all messages together; more get 413.
    #[serde(default = "default_max_prompt_chars")]
    pub max_prompt_chars: usize,
    /// Highest `max_tokens` (or `max_completion_tokens`) a caller may ask for; higher gets
    /// 400. None: no ceiling (a policy obligation can still cap it).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The models each provider may be asked for, by provider name; a name may end in `*`
    /// to take every model that starts with it (`gpt-4o*`). A provider not listed takes any
    /// model; another model gets 400.
    #[serde(default)]
    pub allowed_models: BTreeMap<String, Vec<String>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_body_bytes: default_max_request_body(),
            max_response_body_bytes: default_max_response_body(),
            policy_evaluation_ms: default_policy_evaluation_ms(),
            max_messages: default_max_messages(),
            max_message_chars: default_max_message_chars(),
            max_prompt_chars: default_max_prompt_chars(),
            max_tokens: None,
            allowed_models: BTreeMap::new(),
        }
    }
}

fn default_max_messages() -> usize {
    1000
}

fn default_max_message_chars() -> usize {
    256 * 1024
}

fn default_max_prompt_chars() -> usize {
    1024 * 1024
}

fn default_max_request_body() -> usize {
    1024 * 1024
}

fn default_max_response_body() -> usize {
    8 * 1024 * 1024
}

fn default_policy_evaluation_ms() -> u64 {
    crate::policy::DEFAULT_EVALUATION_LIMIT.as_millis() as u64
}

/// One provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The environment variable holding the provider's API key (`OPENAI_API_KEY`).
    pub api_key_env: String,
}

/// One API key, stored only as the SHA-256 of the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Lowercase or uppercase hex of SHA-256 over the key's UTF-8 bytes.
    pub sha256: String,
    /// The user this key authenticates.
    pub user_id: String,
    /// A name for the key itself, shown in logs and evidence (`finance-laptop-2026`).
    pub name: String,
    /// A disabled key is refused with 401.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// RFC 3339 instant after which the key is refused.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Attributes of the user that policies see (`department: finance`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn enabled_by_default() -> bool {
    true
}

/// Which credentials a request must carry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `api_key` (default), `mtls`, `either` or `both`.
    #[serde(default)]
    pub mode: IdentityMode,
    /// Client certificate identities, each mapped to a user like an API key.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

/// One client certificate identity. Exactly one of `spiffe_id` and `subject` is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The certificate's URI SAN, such as `spiffe://example.org/ns/prod/sa/billing`.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// The certificate's subject in RFC 2253 form, such as `CN=billing,O=Example`.
    #[serde(default)]
    pub subject: Option<String>,
    /// The user this certificate authenticates.
    pub user_id: String,
    /// A name for this identity, shown in logs and evidence.
    pub name: String,
    /// Attributes of the user that policies see.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// The policy bundle: Rego modules with their source, as `mercator render` inlines them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The modules, each with the path it was read from (for error messages and the digest).
    pub modules: Vec<PolicyModule>,
}

/// The price of a model.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Dollars per million prompt tokens.
    pub input_per_million: f64,
    /// Dollars per million completion tokens.
    pub output_per_million: f64,
}

/// How much of the exchange the evidence keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentMode {
    /// The request and response bodies, verbatim, with their digests.
    Full,
    /// Only the digests and sizes.
    Digest,
}

/// Evidence signing and delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// The Envoy cluster of the evidence sink.
    pub sink_cluster: String,
    /// The `:authority` to send to the sink.
    #[serde(default = "default_sink_authority")]
    pub sink_authority: String,
    /// The sink's ingestion path.
    #[serde(default = "default_sink_path")]
    pub sink_path: String,
    /// The environment variable holding the base64 Ed25519 seed.
    #[serde(default = "default_signing_key_env")]
    pub signing_key_env: String,
    /// How much of the bodies to keep.
    #[serde(default = "default_content")]
    pub content: ContentMode,
    /// Timeout of one delivery call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How often the queue of signed records is flushed to the sink.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Records sent per call at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Signed records kept, per Envoy worker, while the sink is unreachable or slow.
    #[serde(default = "default_max_buffered")]
    pub max_buffered_records: usize,
    /// What happens when `max_buffered_records` is reached: refuse new requests (the
    /// default) or serve them and drop their records.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Longest wait between delivery attempts while the sink fails. It is also the longest
    /// a record waits after the sink comes back.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

/// The choice when the buffer of signed records is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Fail closed: new requests get 503 `evidence_unavailable`; no record is ever dropped.
    #[default]
    Refuse,
    /// Serve new requests and drop their records, counted in the
    /// `mercator_evidence_dropped` stat and logged.
    Drop,
}

fn default_sink_authority() -> String {
    "evidence-sink".to_owned()
}

fn default_sink_path() -> String {
    "/v1/evidence".to_owned()
}

fn default_signing_key_env() -> String {
    "MERCATOR_SIGNING_KEY".to_owned()
}

fn default_content() -> ContentMode {
    ContentMode::Full
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_flush_interval_ms() -> u64 {
    200
}

fn default_batch_size() -> usize {
    100
}

fn default_max_buffered() -> usize {
    10_000
}

fn default_max_backoff_ms() -> u64 {
    5_000
}

impl PluginConfig {
    /// Parses the JSON configuration, refusing unknown fields.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Shape(e.to_string()))
    }

    /// Checks everything that does not need the environment: key hashes, expiry dates,
    /// prices, limits, and that the policies compile. `mercator render` runs this so a bad
    /// configuration fails before Envoy starts.
    pub fn check(&self) -> Result<(Authenticator, Policy), ConfigError> {
        if self.limits.max_request_body_bytes == 0 {
            return Err(invalid(
                "limits.max_request_body_bytes",
                "must be at least 1",
            ));
        }
        if self.providers.is_empty() {
            return Err(invalid("providers", "at least one provider is needed"));
        }
        self.check_limits()?;
        self.forbidden_content()?;
        for (model, price) in &self.pricing {
            let finite =
                price.input_per_million.is_finite() && price.output_per_million.is_finite();
            if !finite || price.input_per_million < 0.0 || price.output_per_million < 0.0 {
                return Err(invalid(
                    format!("pricing.{model}"),
                    "prices must be finite and >= 0",
                ));
            }
        }
        if self.evidence.batch_size == 0 || self.evidence.max_buffered_records == 0 {
            return Err(invalid(
                "evidence",
                "batch_size and max_buffered_records must be >= 1",
            ));
        }
        if !(10..=600_000).contains(&self.evidence.max_backoff_ms) {
            return Err(invalid(
                "evidence.max_backoff_ms",
                "must be between 10 and 600000",
            ));
        }

        let keys = self.key_ring()?;
        let clients = self.clients()?;
        let authenticator = Authenticator::new(self.identity.mode, keys, clients);
        if !(1..=10_000).contains(&self.limits.policy_evaluation_ms) {
            return Err(invalid(
                "limits.policy_evaluation_ms",
                "must be between 1 and 10000",
            ));
        }
        let limit = std::time::Duration::from_millis(self.limits.policy_evaluation_ms);
        let policy = Policy::compile(&self.policies.modules, limit)?;
        Ok((authenticator, policy))
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        for (field, value) in [
            (
                "limits.max_response_body_bytes",
                limits.max_response_body_bytes,
            ),
            ("limits.max_messages", limits.max_messages),
            ("limits.max_message_chars", limits.max_message_chars),
            ("limits.max_prompt_chars", limits.max_prompt_chars),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if limits.max_tokens == Some(0) {
            return Err(invalid("limits.max_tokens", "must be at least 1"));
        }
        for (provider, models) in &limits.allowed_models {
            let field = format!("limits.allowed_models.{provider}");
            if !self.providers.contains_key(provider) {
                return Err(invalid(field, "names no configured provider"));
            }
            if models.is_empty() {
                return Err(invalid(
                    field,
                    "is empty, which would refuse every call; remove it to allow any model",
                ));
            }
            if models
                .iter()
                .any(|model| model.trim().is_empty() || model == "*")
            {
                return Err(invalid(
                    field,
                    "holds an empty name or a bare `*`; remove the entry to allow any model",
                ));
            }
        }
        Ok(())
    }

    /// The compiled forbidden-content patterns.
    pub fn forbidden_content(&self) -> Result<ForbiddenContent, ConfigError> {
        ForbiddenContent::compile(&self.forbidden_content)
            .map_err(|error| invalid(error.field, error.reason))
    }

    fn clients(&self) -> Result<Vec<ClientRecord>, ConfigError> {
        let needs_certificates =
            matches!(self.identity.mode, IdentityMode::Mtls | IdentityMode::Both);
        if needs_certificates && self.identity.clients.is_empty() {
            return Err(invalid(
                "identity.clients",
                "this identity.mode requires certificates, so at least one client is needed",
            ));
        }

        let mut seen = HashSet::new();
        let mut clients = Vec::with_capacity(self.identity.clients.len());
        for (index, client) in self.identity.clients.iter().enumerate() {
            let field = format!("identity.clients[{index}]");
            let nonempty =
                |value: &Option<String>| value.as_ref().filter(|v| !v.trim().is_empty()).cloned();
            let (spiffe_id, subject) = (nonempty(&client.spiffe_id), nonempty(&client.subject));
            let identity = match (&spiffe_id, &subject) {
                (Some(uri), None) => format!("uri:{uri}"),
                (None, Some(subject)) => format!("subject:{subject}"),
                _ => return Err(invalid(field, "give exactly one of spiffe_id and subject")),
            };
            if !seen.insert(identity) {
                return Err(invalid(
                    field,
                    "the same certificate identity is listed twice",
                ));
            }
            if client.user_id.trim().is_empty() {
                return Err(invalid(format!("{field}.user_id"), "must not be empty"));
            }
            clients.push(ClientRecord {
                spiffe_id,
                subject,
                user_id: client.user_id.clone(),
                name: client.name.clone(),
                attributes: client.attributes.clone(),
            });
        }
        Ok(clients)
    }

    fn key_ring(&self) -> Result<KeyRing, ConfigError> {
        let mut seen = HashSet::new();
        let mut records = Vec::with_capacity(self.api_keys.len());

        for (index, entry) in self.api_keys.iter().enumerate() {
            let field = format!("api_keys[{index}]");
            let hash = ApiKeyHash::from_hex(&entry.sha256)
                .ok_or_else(|| invalid(format!("{field}.sha256"), "must be 64 hex digits"))?;
            if !seen.insert(hash.clone()) {
                return Err(invalid(
                    format!("{field}.sha256"),
                    "the same key is listed twice",
                ));
            }
            if entry.user_id.trim().is_empty() {
                return Err(invalid(format!("{field}.user_id"), "must not be empty"));
            }
            let expires_at = match &entry.expires_at {
                None => None,
                Some(text) => Some(parse_instant(text).ok_or_else(|| {
                    invalid(format!("{field}.expires_at"), "must be an RFC 3339 instant")
                })?),
            };
            records.push(ApiKeyRecord {
                hash,
                user_id: entry.user_id.clone(),
                name: entry.name.clone(),
                enabled: entry.enabled,
                expires_at,
                attributes: entry.attributes.clone(),
            });
        }
        Ok(KeyRing::new(records))
    }
}

fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Everything a request needs, built once per configuration and shared by every request.
pub struct Gateway {
    /// The configuration as written.
    pub config: PluginConfig,
    /// The API keys and client identities, and how they combine.
    pub auth: Authenticator,
    /// The compiled policy bundle.
    pub policy: Policy,
    /// The key that signs evidence.
    pub signing_key: SigningKey,
    /// Provider name to the provider's API key.
    pub provider_keys: BTreeMap<String, String>,
    /// The compiled forbidden-content patterns.
    pub forbidden: ForbiddenContent,
}

impl Gateway {
    /// Validates the configuration and reads the secrets it names from `env`.
    pub fn new(
        config: PluginConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (auth, policy) = config.check()?;

        let variable = &config.evidence.signing_key_env;
        let seed = env(variable).ok_or_else(|| ConfigError::MissingEnvironment {
            field: "evidence.signing_key_env".to_owned(),
            variable: variable.clone(),
        })?;
        let signing_key = SigningKey::from_base64(&seed)
            .map_err(|e| invalid("evidence.signing_key_env", format!("{variable}: {e}")))?;

        let mut provider_keys = BTreeMap::new();
        for (name, provider) in &config.providers {
            let key =
                env(&provider.api_key_env).ok_or_else(|| ConfigError::MissingEnvironment {
                    field: format!("providers.{name}.api_key_env"),
                    variable: provider.api_key_env.clone(),
                })?;
            provider_keys.insert(name.clone(), key);
        }

        let forbidden = config.forbidden_content()?;
        Ok(Self {
            config,
            auth,
            policy,
            signing_key,
            provider_keys,
            forbidden,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SIGNING_SEED: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

    pub(crate) fn sample_json() -> serde_json::Value {
        serde_json::json!({
            "providers": {"openai": {"api_key_env": "OPENAI_API_KEY"}},
            "api_keys": [{
                // sha256("mj-finance-test-key")
                "sha256": crate::auth::tests::hash_hex("mj-finance-test-key"),
                "user_id": "alice", "name": "alice-laptop",
                "attributes": {"department": "finance"}
            }],
            "policies": {"modules": [{
                "path": "policies/department.rego",
                "source": include_str!("../../policies/department.rego")
            }]},
            "pricing": {"gpt-4": {"input_per_million": 30.0, "output_per_million": 60.0}},
            "evidence": {"sink_cluster": "evidence_sink"}
        })
    }

    pub(crate) fn env(name: &str) -> Option<String> {
        match name {
            "MERCATOR_SIGNING_KEY" => Some(SIGNING_SEED.to_owned()),
            "OPENAI_API_KEY" => Some("sk-provider-secret".to_owned()),
            _ => None,
        }
    }

    pub(crate) fn sample_gateway() -> Gateway {
        let config = PluginConfig::from_json(sample_json().to_string().as_bytes()).unwrap();
        Gateway::new(config, env).unwrap()
    }

    #[test]
    fn a_complete_configuration_builds_a_gateway() {
        let gateway = sample_gateway();

        assert_eq!(gateway.provider_keys["openai"], "sk-provider-secret");
        assert_eq!(gateway.config.limits.max_request_body_bytes, 1024 * 1024);
    }

    #[test]
    fn governance_is_on_unless_benchmark_passthrough_is_set() {
        let mut json = sample_json();
        let default = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();
        json["benchmark_passthrough"] = serde_json::json!(true);
        let bench = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();

        assert!(!default.benchmark_passthrough);
        assert!(bench.benchmark_passthrough);
    }

    #[test]
    fn evidence_delivery_defaults_fail_closed_with_a_short_backoff() {
        let gateway = sample_gateway();

        assert_eq!(gateway.config.evidence.when_full, WhenFull::Refuse);
        assert_eq!(gateway.config.evidence.max_backoff_ms, 5_000);
    }

    #[test]
    fn when_full_accepts_drop_and_refuses_an_unknown_choice() {
        let mut json = sample_json();
        json["evidence"]["when_full"] = serde_json::json!("drop");
        let config = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(config.evidence.when_full, WhenFull::Drop);

        json["evidence"]["when_full"] = serde_json::json!("block");
        let error = PluginConfig::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().contains("block"), "{error}");
    }

    #[test]
    fn a_backoff_cap_out_of_range_is_refused_by_name() {
        let mut json = sample_json();
        json["evidence"]["max_backoff_ms"] = serde_json::json!(0);
        let config = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();

        let error = config.check().err().unwrap();
        assert!(
            error.to_string().contains("evidence.max_backoff_ms"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let mut json = sample_json();
        json["evidence"]["contnet"] = serde_json::json!("digest");

        let error = PluginConfig::from_json(json.to_string().as_bytes()).unwrap_err();

        assert!(error.to_string().contains("contnet"), "{error}");
    }

    #[test]
    fn a_missing_signing_key_stops_the_configuration() {
        let config = PluginConfig::from_json(sample_json().to_string().as_bytes()).unwrap();

        let error = Gateway::new(config, |_| None).err().unwrap();

        assert!(
            error.to_string().contains("MERCATOR_SIGNING_KEY"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_key_hash_is_named() {
        let mut json = sample_json();
        json["api_keys"][0]["sha256"] = serde_json::json!("abc");
        let config = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();

        let error = config.check().err().unwrap();

        assert!(error.to_string().contains("api_keys[0].sha256"), "{error}");
    }

    #[test]
    fn a_bad_expiry_is_named() {
        let mut json = sample_json();
        json["api_keys"][0]["expires_at"] = serde_json::json!("next tuesday");
        let config = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();

        let error = config.check().err().unwrap();

        assert!(
            error.to_string().contains("api_keys[0].expires_at"),
            "{error}"
        );
    }

    #[test]
    fn mtls_mode_without_clients_is_refused() {
        let mut json = sample_json();
        json["identity"] = serde_json::json!({"mode": "mtls"});
        let config = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();

        assert!(config
            .check()
            .err()
            .unwrap()
            .to_string()
            .contains("identity.clients"));
    }

    #[test]
    fn a_client_needs_exactly_one_certificate_identity() {
        let mut json = sample_json();
        json["identity"] = serde_json::json!({"mode": "either", "clients": [
            {"spiffe_id": "spiffe://x/a", "subject": "CN=a", "user_id": "a", "name": "a"}
        ]});
        let config = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();

        assert!(config
            .check()
            .err()
            .unwrap()
            .to_string()
            .contains("identity.clients[0]"));
    }

    #[test]
    fn a_negative_price_is_refused() {
        let mut json = sample_json();
        json["pricing"]["gpt-4"]["input_per_million"] = serde_json::json!(-1.0);
        let config = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();

        assert!(config
            .check()
            .err()
            .unwrap()
            .to_string()
            .contains("pricing.gpt-4"));
    }

    #[test]
    fn bad_limits_and_patterns_are_named() {
        let cases = [
            (
                serde_json::json!({"limits": {"max_messages": 0}}),
                "limits.max_messages",
            ),
            (
                serde_json::json!({"limits": {"max_tokens": 0}}),
                "limits.max_tokens",
            ),
            (
                serde_json::json!({"limits": {"allowed_models": {"mistral": ["m"]}}}),
                "limits.allowed_models.mistral",
            ),
            (
                serde_json::json!({"limits": {"allowed_models": {"openai": []}}}),
                "limits.allowed_models.openai",
            ),
            (
                serde_json::json!({"forbidden_content": [{"name": "x", "pattern": "("}]}),
                "forbidden_content[0].pattern",
            ),
        ];
        for (extra, field) in cases {
            let mut json = sample_json();
            for (key, value) in extra.as_object().unwrap() {
                json[key] = value.clone();
            }
            let config = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();

            let error = config.check().err().unwrap();

            assert!(error.to_string().contains(field), "{field}: {error}");
        }
    }

    #[test]
    fn limits_have_defaults_and_refuse_unknown_fields() {
        let config = PluginConfig::from_json(sample_json().to_string().as_bytes()).unwrap();
        assert_eq!(config.limits.max_messages, 1000);
        assert_eq!(config.limits.max_tokens, None);

        let mut json = sample_json();
        json["limits"] = serde_json::json!({"max_mesages": 5});
        let error = PluginConfig::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().contains("max_mesages"), "{error}");
    }

    #[test]
    fn a_policy_that_does_not_compile_stops_the_configuration_with_its_file() {
        let mut json = sample_json();
        json["policies"]["modules"][0]["source"] = serde_json::json!("package x\nallow if {");
        let config = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();

        let error = config.check().err().unwrap();

        assert!(
            error.to_string().contains("policies/department.rego"),
            "{error}"
        );
    }
}
