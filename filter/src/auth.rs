//! Who is calling: API keys, presented as `Authorization: Bearer …` or `x-api-key`, checked
//! against SHA-256 hashes from the configuration.
//!
//! The gateway never holds a plain key. It hashes what the caller presents and compares
//! the digest with every configured hash in constant time, so neither the position of a
//! match nor the number of matching bytes shows in the timing.

use std::collections::BTreeMap;

use mercator_evidence::{AuthMethod, AuthResult};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// Longest key accepted; longer credentials are malformed rather than hashed.
const MAX_KEY_LEN: usize = 512;

/// The SHA-256 of an API key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    /// Hashes a presented key.
    pub fn of_key(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }

    /// Reads 64 hex digits, as configured.
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// `sha256:` and the first 12 hex digits, for logs and evidence.
    pub fn fingerprint(&self) -> String {
        let hex: String = self
            .0
            .iter()
            .take(6)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("sha256:{hex}")
    }
}

/// A configured key, validated.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    /// The key's hash.
    pub hash: ApiKeyHash,
    /// The user it authenticates.
    pub user_id: String,
    /// The key's own name.
    pub name: String,
    /// Whether it may be used.
    pub enabled: bool,
    /// When it stops working.
    pub expires_at: Option<OffsetDateTime>,
    /// The user's attributes for policies.
    pub attributes: BTreeMap<String, String>,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user_id: String,
    /// The name of the key used.
    pub key_name: String,
    /// The user's attributes (department, …).
    pub attributes: BTreeMap<String, String>,
}

/// The result of looking at a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOutcome {
    /// The credentials looked at.
    pub method: AuthMethod,
    /// Whether a user was identified and, if not, why.
    pub result: AuthResult,
    /// The user, when `result` is `Authenticated`.
    pub identity: Option<Identity>,
    /// Whether any credential header was present.
    pub presented: bool,
    /// The name of the configured key that matched, even a disabled or expired one.
    pub key_name: Option<String>,
    /// The fingerprint of the presented key, when one was well formed.
    pub fingerprint: Option<String>,
    /// The presented key, redacted to its first and last four characters, for logs.
    pub redacted: Option<String>,
}

impl AuthOutcome {
    /// A refusal with nothing identified yet.
    pub fn refused(result: AuthResult, presented: bool) -> Self {
        Self {
            method: if presented {
                AuthMethod::ApiKey
            } else {
                AuthMethod::None
            },
            result,
            identity: None,
            presented,
            key_name: None,
            fingerprint: None,
            redacted: None,
        }
    }

    /// A sentence for the caller, in the terms of the provider APIs' 401 messages.
    pub fn message(&self) -> &'static str {
        match self.result {
            AuthResult::Authenticated => "authenticated",
            AuthResult::Missing => {
                "No API key provided: send it as `Authorization: Bearer <key>` or `x-api-key`."
            }
            AuthResult::Malformed => {
                "The API key is malformed: send exactly one key of printable ASCII characters."
            }
            AuthResult::UnknownKey => "Incorrect API key provided.",
            AuthResult::Disabled => "This API key has been disabled.",
            AuthResult::Expired => "This API key has expired.",
            AuthResult::CertificateMissing => "A client certificate is required.",
            AuthResult::UnknownCertificate => "The client certificate is not mapped to any user.",
            AuthResult::IdentityMismatch => {
                "The API key and the client certificate belong to different users."
            }
        }
    }
}

/// The configured API keys.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    records: Vec<ApiKeyRecord>,
}

impl KeyRing {
    /// Wraps validated records.
    pub fn new(records: Vec<ApiKeyRecord>) -> Self {
        Self { records }
    }

    /// Authenticates a request from its headers (lowercase names, raw values).
    pub fn authenticate(&self, headers: &[(String, Vec<u8>)], now: OffsetDateTime) -> AuthOutcome {
        let key = match presented_key(headers) {
            Presented::None => return AuthOutcome::refused(AuthResult::Missing, false),
            Presented::Malformed => return AuthOutcome::refused(AuthResult::Malformed, true),
            Presented::Key(key) => key,
        };

        let hash = ApiKeyHash::of_key(key);
        let mut outcome = AuthOutcome::refused(AuthResult::UnknownKey, true);
        outcome.fingerprint = Some(hash.fingerprint());
        outcome.redacted = Some(redact(key));

        let Some(record) = self.find(&hash) else {
            return outcome;
        };
        outcome.key_name = Some(record.name.clone());

        outcome.result = if !record.enabled {
            AuthResult::Disabled
        } else if record.expires_at.is_some_and(|expiry| now >= expiry) {
            AuthResult::Expired
        } else {
            outcome.identity = Some(Identity {
                user_id: record.user_id.clone(),
                key_name: record.name.clone(),
                attributes: record.attributes.clone(),
            });
            AuthResult::Authenticated
        };
        outcome
    }

    /// Compares with every record, always, in constant time per comparison.
    fn find(&self, hash: &ApiKeyHash) -> Option<&ApiKeyRecord> {
        let mut found = None;
        for record in &self.records {
            if bool::from(record.hash.0.ct_eq(&hash.0)) {
                found = Some(record);
            }
        }
        found
    }
}

enum Presented<'h> {
    None,
    Malformed,
    Key(&'h [u8]),
}

fn presented_key(headers: &[(String, Vec<u8>)]) -> Presented<'_> {
    let authorization: Vec<&[u8]> = values(headers, "authorization");
    let api_key: Vec<&[u8]> = values(headers, "x-api-key");

    let candidate = match (authorization.as_slice(), api_key.as_slice()) {
        ([], []) => return Presented::None,
        ([bearer], []) => match bearer_token(bearer) {
            Some(token) => token,
            None => return Presented::Malformed,
        },
        ([], [key]) => *key,
        _ => return Presented::Malformed,
    };

    let well_formed = !candidate.is_empty()
        && candidate.len() <= MAX_KEY_LEN
        && candidate.iter().all(|byte| byte.is_ascii_graphic());
    if well_formed {
        Presented::Key(candidate)
    } else {
        Presented::Malformed
    }
}

fn values<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Vec<&'h [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    value.get(7..)
}

/// The first and last four characters of a key, for logs: `sk-1…9xyz`. Keys shorter than
/// twelve characters show nothing.
pub fn redact(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 12 {
        return "***".to_owned();
    }
    let head: String = chars.iter().take(4).collect();
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) fn hash_hex(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn ring() -> KeyRing {
        let record = |key: &str, name: &str, enabled, expires_at| ApiKeyRecord {
            hash: ApiKeyHash::from_hex(&hash_hex(key)).unwrap(),
            user_id: format!("user-of-{name}"),
            name: name.to_owned(),
            enabled,
            expires_at,
            attributes: BTreeMap::from([("department".to_owned(), "finance".to_owned())]),
        };
        KeyRing::new(vec![
            record("mj-good-key-000000000001", "good", true, None),
            record("mj-old-key-0000000000002", "old", false, None),
            record(
                "mj-expiring-key-00000003",
                "expiring",
                true,
                Some(datetime!(2026-01-01 0:00 UTC)),
            ),
        ])
    }

    fn headers(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    #[test]
    fn a_known_bearer_key_authenticates_its_user() {
        let outcome = ring().authenticate(
            &headers(&[("authorization", b"Bearer mj-good-key-000000000001")]),
            NOW,
        );

        assert_eq!(outcome.result, AuthResult::Authenticated);
        assert_eq!(outcome.identity.unwrap().user_id, "user-of-good");
        assert_eq!(outcome.redacted.as_deref(), Some("mj-g…0001"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_x_api_key_works_too() {
        let ring = ring();

        let lower = ring.authenticate(
            &headers(&[("authorization", b"bearer mj-good-key-000000000001")]),
            NOW,
        );
        let header =
            ring.authenticate(&headers(&[("x-api-key", b"mj-good-key-000000000001")]), NOW);

        assert_eq!(lower.result, AuthResult::Authenticated);
        assert_eq!(header.result, AuthResult::Authenticated);
    }

    type Case<'a> = (&'a [(&'a str, &'a [u8])], AuthResult);

    #[test]
    fn each_refusal_has_its_reason() {
        let ring = ring();
        let cases: &[Case] = &[
            (&[], AuthResult::Missing),
            (&[("authorization", b"Bearer ")], AuthResult::Malformed),
            (&[("authorization", b"Basic abc")], AuthResult::Malformed),
            (&[("authorization", b"Bearer a b")], AuthResult::Malformed),
            (
                &[("authorization", b"Bearer caf\xc3\xa9-key-000000")],
                AuthResult::Malformed,
            ),
            (
                &[("x-api-key", b"k1"), ("x-api-key", b"k2")],
                AuthResult::Malformed,
            ),
            (
                &[
                    ("authorization", b"Bearer mj-good-key-000000000001"),
                    ("x-api-key", b"other"),
                ],
                AuthResult::Malformed,
            ),
            (
                &[("authorization", b"Bearer mj-wrong-key-00000000000")],
                AuthResult::UnknownKey,
            ),
            (
                &[("x-api-key", b"mj-old-key-0000000000002")],
                AuthResult::Disabled,
            ),
            (
                &[("x-api-key", b"mj-expiring-key-00000003")],
                AuthResult::Expired,
            ),
        ];

        for (pairs, expected) in cases {
            let outcome = ring.authenticate(&headers(pairs), NOW);
            assert_eq!(outcome.result, *expected, "{pairs:?}");
            assert!(outcome.identity.is_none());
        }
    }

    #[test]
    fn a_huge_key_is_malformed_not_hashed() {
        let huge = vec![b'a'; 10_000];

        let outcome = ring().authenticate(&[("x-api-key".to_owned(), huge)], NOW);

        assert_eq!(outcome.result, AuthResult::Malformed);
    }

    #[test]
    fn a_disabled_key_still_names_itself_for_the_audit() {
        let outcome =
            ring().authenticate(&headers(&[("x-api-key", b"mj-old-key-0000000000002")]), NOW);

        assert_eq!(outcome.key_name.as_deref(), Some("old"));
        assert!(outcome.fingerprint.unwrap().starts_with("sha256:"));
    }

    #[test]
    fn redaction_keeps_four_characters_each_side_and_hides_short_keys() {
        assert_eq!(redact(b"sk-1234567890abcdef9xyz"), "sk-1…9xyz");
        assert_eq!(redact(b"short"), "***");
    }

    #[test]
    fn hash_hex_accepts_either_case_and_refuses_other_lengths() {
        let lower = hash_hex("k");

        assert!(ApiKeyHash::from_hex(&lower.to_uppercase()).is_some());
        assert!(ApiKeyHash::from_hex(&lower[..62]).is_none());
        assert!(ApiKeyHash::from_hex(&"zz".repeat(32)).is_none());
    }
}
