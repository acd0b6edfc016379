//! The evidence record: what the gateway states, under its signature, about one request.
//!
//! Field names and meanings are part of the product's contract with auditors; a change
//! here is a new [`RECORD_SCHEMA`].

use serde::{Deserialize, Serialize};

/// The schema tag every record carries in `schema`.
pub const RECORD_SCHEMA: &str = "mercator.evidence.v1";

/// One request as the gateway saw and decided it.
///
/// Optional members are written as `null`, never left out, so that every record of a
/// schema has the same members and an auditor can tell "not known" from "forgotten".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// Always [`RECORD_SCHEMA`] for this version.
    pub schema: String,
    /// `evt_` and 26 lowercase base32 characters of randomness.
    pub id: String,
    /// When the gateway finished the request, RFC 3339 in UTC with milliseconds.
    pub timestamp: String,
    /// Envoy's `x-request-id` for the request.
    pub request_id: String,
    /// The authenticated user, `null` when authentication failed.
    pub user_id: Option<String>,
    /// The provider the request was (or would have been) sent to, such as `openai`.
    pub provider: Option<String>,
    /// The model the client asked for, `null` when the body did not name one.
    pub model: Option<String>,
    /// What the gateway decided: the request went on, or the gateway answered it.
    pub decision: Decision,
    /// How the caller was identified.
    pub auth: AuthEvidence,
    /// What the client sent.
    pub request: ExchangeEvidence,
    /// What the client received.
    pub response: ExchangeEvidence,
    /// The gateway's own error, when it answered the request itself.
    pub error: Option<GatewayError>,
    /// `sha256:` and the hex digest of the policy bundle that decided.
    pub policy_bundle: Option<String>,
    /// Each policy's verdict; empty when the request did not reach the policies.
    pub policy_decisions: Vec<PolicyDecision>,
    /// The policies' obligations on an allowed request, `null` when there were none.
    pub obligations: Option<AppliedObligations>,
    /// Tokens the provider reported, `null` when it reported none.
    pub token_usage: Option<TokenUsage>,
    /// Cost in US dollars from the gateway's price table, `null` when the model has no price.
    pub cost: Option<f64>,
    /// The id of the key that signed this record.
    pub key_id: String,
}

/// The gateway's decision on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Authenticated, valid and allowed by policy: forwarded to the provider.
    Allow,
    /// Refused by policy.
    Deny,
    /// Refused before policy: no or bad credentials.
    Unauthenticated,
    /// Refused before policy: the request itself is malformed or too large.
    Invalid,
    /// The gateway failed (a dependency, a malformed provider answer); failed closed.
    Error,
}

impl Decision {
    /// The name used in records and queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Unauthenticated => "unauthenticated",
            Self::Invalid => "invalid",
            Self::Error => "error",
        }
    }
}

/// How the caller was identified, without any secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthEvidence {
    /// The credentials the gateway looked at.
    pub method: AuthMethod,
    /// Whether they identified a user, and if not, why.
    pub result: AuthResult,
    /// The configured name of the API key that matched (or of the certificate identity).
    pub key_name: Option<String>,
    /// `sha256:` and the first 12 hex digits of the SHA-256 of the presented key: enough
    /// to tell keys apart in an audit, too little to help anyone guess one.
    pub key_fingerprint: Option<String>,
    /// The client certificate Envoy verified on the connection, if any.
    #[serde(default)]
    pub certificate: Option<CertificateEvidence>,
    /// The address the request came from, as Envoy saw it.
    #[serde(default)]
    pub source_address: Option<String>,
}

/// A client certificate, as Envoy verified it during the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateEvidence {
    /// The first URI SAN (a SPIFFE id, say), if any.
    pub uri_san: Option<String>,
    /// The subject, in RFC 2253 form.
    pub subject: Option<String>,
}

/// The credentials the gateway looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `Authorization: Bearer …` or `x-api-key`.
    ApiKey,
    /// A verified mTLS client certificate.
    Certificate,
    /// Both, as a configuration that requires both asks.
    ApiKeyAndCertificate,
    /// No credential was presented.
    None,
}

/// The outcome of authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthResult {
    /// A known, enabled, unexpired key, or a mapped certificate, as configured.
    Authenticated,
    /// No credential.
    Missing,
    /// A credential that is not well formed (empty, two of them, bad bytes).
    Malformed,
    /// A well-formed key that no configured hash matches.
    UnknownKey,
    /// A known key that is disabled.
    Disabled,
    /// A known key past its expiry.
    Expired,
    /// The configuration requires a client certificate and the connection has none.
    CertificateMissing,
    /// A verified certificate whose identity no configured client matches.
    UnknownCertificate,
    /// The key and the certificate name different users.
    IdentityMismatch,
}

impl AuthResult {
    /// The name used in records and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::CertificateMissing => "certificate_missing",
            Self::UnknownCertificate => "unknown_certificate",
            Self::IdentityMismatch => "identity_mismatch",
        }
    }
}

/// One side of the exchange: what was sent or received, as configured (full or digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeEvidence {
    /// The request's `:path`, or `null` on the response side.
    pub path: Option<String>,
    /// The HTTP status on the response side, `null` on the request side.
    pub status: Option<u16>,
    /// Length of the body in bytes, `null` when the gateway did not read it (a request
    /// refused at its headers, such as one without credentials).
    pub body_bytes: Option<u64>,
    /// `sha256:` and the hex digest of the exact body bytes, `null` when not read.
    pub body_sha256: Option<String>,
    /// The body itself as text, when the gateway keeps full content and the body is UTF-8;
    /// `null` in digest-only mode.
    pub body: Option<String>,
}

/// The error the gateway answered with, in the terms of its own API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayError {
    /// The HTTP status.
    pub status: u16,
    /// A stable code, such as `invalid_api_key` or `policy_denied`.
    pub code: String,
    /// The message the client saw.
    pub message: String,
}

/// One policy module's verdict on one request, or on its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// The module's name, the last part of its package (`mercator.policy.<name>`).
    pub policy: String,
    /// Whether the module decided on the request or on the provider's answer.
    pub phase: PolicyPhase,
    /// What the module said.
    pub decision: PolicyVerdict,
    /// The stable code of a deny reason (when the policy gave one) or of a gateway error.
    pub code: Option<String>,
    /// Why, for a deny (one of the module's deny reasons) or an error.
    pub reason: Option<String>,
}

/// When a policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyPhase {
    /// On the request, before anything was forwarded.
    Request,
    /// On the provider's answer, before the caller saw it.
    Response,
}

/// What the policies required of a request they allowed, and what the gateway changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedObligations {
    /// The `max_tokens` the provider was asked for, when a policy capped it.
    pub max_tokens: Option<u64>,
    /// Headers the gateway added to the forwarded request.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Top-level request fields removed before forwarding.
    pub redacted: Vec<String>,
    /// `sha256:` digest of the body as the client sent it, when the gateway rewrote it;
    /// the record's `request` then describes the body that was forwarded.
    pub original_body_sha256: Option<String>,
}

/// What one policy module said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyVerdict {
    /// It allowed the request and had no deny reason.
    Allow,
    /// It gave a deny reason.
    Deny,
    /// It neither allowed nor denied.
    Abstain,
    /// Evaluation failed or gave no usable decision; the gateway denies.
    Error,
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens in the completion.
    pub completion_tokens: u64,
    /// Their total as the provider reported it.
    pub total_tokens: u64,
}
