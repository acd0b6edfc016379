//! Canonical JSON, signing and verification of records (the bytes are described in the
//! crate docs).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::keys::{SigningKey, VerifyingKey};
use crate::record::EvidenceRecord;

/// Why a record could not be canonicalized or signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvidenceError {
    /// The value has no RFC 8785 form (a number that is not finite, say).
    #[error("the record has no canonical JSON form: {0}")]
    NotCanonical(String),
    /// A record must be a JSON object.
    #[error("an evidence record must be a JSON object")]
    NotAnObject,
}

/// Why a record does or does not verify. `verify_record` never panics and never errors:
/// every input gets a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The signature is good and made by the key with this id.
    Valid {
        /// The id of the key that signed.
        key_id: String,
    },
    /// The record is not a JSON object.
    NotAnObject,
    /// There is no `signature` string member.
    MissingSignature,
    /// `signature` is not base64 of 64 bytes.
    MalformedSignature,
    /// There is no `key_id` string member.
    MissingKeyId,
    /// No known verifying key has this id.
    UnknownKey(String),
    /// The rest of the record has no canonical JSON form.
    NotCanonical,
    /// The signature does not match the record: it was altered, or signed by another key.
    BadSignature,
}

impl Verdict {
    /// Whether the record verified.
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid { .. })
    }

    /// A sentence for the caller: why the record was refused.
    pub fn reason(&self) -> String {
        match self {
            Self::Valid { key_id } => format!("signature verified with key {key_id}"),
            Self::NotAnObject => "an evidence record must be a JSON object".to_owned(),
            Self::MissingSignature => "the record has no `signature` string".to_owned(),
            Self::MalformedSignature => {
                "`signature` is not the base64 of a 64-byte Ed25519 signature".to_owned()
            }
            Self::MissingKeyId => "the record has no `key_id` string".to_owned(),
            Self::UnknownKey(id) => format!("no known verifying key has id `{id}`"),
            Self::NotCanonical => "the record has no RFC 8785 canonical form".to_owned(),
            Self::BadSignature => "the signature does not match the record".to_owned(),
        }
    }
}

/// The RFC 8785 canonical JSON bytes of any serializable value.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, EvidenceError> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| EvidenceError::NotCanonical(e.to_string()))
}

/// The bytes a record's signature covers: its canonical JSON without `signature`.
pub fn signing_payload(record: &Value) -> Result<Vec<u8>, EvidenceError> {
    let object = record.as_object().ok_or(EvidenceError::NotAnObject)?;
    canonical_json(&without_signature(object))
}

fn without_signature(object: &Map<String, Value>) -> Map<String, Value> {
    object
        .iter()
        .filter(|(name, _)| name.as_str() != "signature")
        .map(clone_entry)
        .collect()
}

fn clone_entry((name, value): (&String, &Value)) -> (String, Value) {
    (name.clone(), value.clone())
}

impl EvidenceRecord {
    /// Signs the record with `key` and returns the canonical JSON of the signed record,
    /// ready to send. `key_id` is set to the key's id before signing, so the two cannot
    /// disagree.
    pub fn sign(&self, key: &SigningKey) -> Result<String, EvidenceError> {
        let mut record = self.clone();
        record.key_id = key.key_id().as_str().to_owned();

        let value = serde_json::to_value(&record)
            .map_err(|e| EvidenceError::NotCanonical(e.to_string()))?;
        let Value::Object(mut object) = value else {
            return Err(EvidenceError::NotAnObject);
        };
        let payload = canonical_json(&object)?;

        let signature = BASE64.encode(key.sign_bytes(&payload));
        object.insert("signature".to_owned(), Value::String(signature));

        let signed = canonical_json(&object)?;
        String::from_utf8(signed).map_err(|e| EvidenceError::NotCanonical(e.to_string()))
    }
}

/// Verifies a record against the keys that `lookup` finds by id.
///
/// ```
/// use mercator_evidence::{verify_record, SigningKey, Verdict};
/// let key = SigningKey::from_seed(&[1; 32]);
/// let public = key.verifying_key();
/// let lookup = |id: &str| (id == public.key_id().as_str()).then_some(&public);
///
/// let tampered = serde_json::json!({"id": "evt_x", "key_id": public.key_id().as_str(),
///                                   "signature": "AAAA"});
/// assert_eq!(verify_record(&tampered, lookup), Verdict::MalformedSignature);
/// assert_eq!(verify_record(&serde_json::json!([1]), lookup), Verdict::NotAnObject);
/// ```
pub fn verify_record<'k, F>(record: &Value, lookup: F) -> Verdict
where
    F: Fn(&str) -> Option<&'k VerifyingKey>,
{
    let Some(object) = record.as_object() else {
        return Verdict::NotAnObject;
    };
    let Some(signature_text) = object.get("signature").and_then(Value::as_str) else {
        return Verdict::MissingSignature;
    };
    let Some(signature) = decode_signature(signature_text) else {
        return Verdict::MalformedSignature;
    };
    let Some(key_id) = object.get("key_id").and_then(Value::as_str) else {
        return Verdict::MissingKeyId;
    };
    let Some(key) = lookup(key_id) else {
        return Verdict::UnknownKey(key_id.to_owned());
    };

    let Ok(payload) = canonical_json(&without_signature(object)) else {
        return Verdict::NotCanonical;
    };
    if key.verifies(&payload, &signature) {
        Verdict::Valid {
            key_id: key_id.to_owned(),
        }
    } else {
        Verdict::BadSignature
    }
}

fn decode_signature(text: &str) -> Option<[u8; 64]> {
    let bytes = BASE64.decode(text).ok()?;
    <[u8; 64]>::try_from(bytes.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::*;

    fn sample_record() -> EvidenceRecord {
        EvidenceRecord {
            schema: RECORD_SCHEMA.to_owned(),
            id: "evt_00000000000000000000000000".to_owned(),
            timestamp: "2026-12-03T10:30:00.000Z".to_owned(),
            request_id: "req-1".to_owned(),
            user_id: Some("user_finance".to_owned()),
            provider: Some("openai".to_owned()),
            model: Some("gpt-4".to_owned()),
            decision: Decision::Allow,
            auth: AuthEvidence {
                method: AuthMethod::ApiKey,
                result: AuthResult::Authenticated,
                key_name: Some("finance-demo".to_owned()),
                key_fingerprint: Some("sha256:0123456789ab".to_owned()),
                certificate: None,
                source_address: Some("192.0.2.10:50312".to_owned()),
            },
            request: ExchangeEvidence {
                path: Some("/v1/chat/completions".to_owned()),
                status: None,
                body_bytes: Some(2),
                body_sha256: Some(
                    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
                        .to_owned(),
                ),
                body: Some("{}".to_owned()),
            },
            response: ExchangeEvidence {
                path: None,
                status: Some(200),
                body_bytes: Some(0),
                body_sha256: Some(
                    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                        .to_owned(),
                ),
                body: None,
            },
            error: None,
            policy_bundle: Some("sha256:abc".to_owned()),
            policy_decisions: vec![PolicyDecision {
                policy: "department".to_owned(),
                phase: PolicyPhase::Request,
                decision: PolicyVerdict::Allow,
                code: None,
                reason: None,
            }],
            obligations: None,
            token_usage: Some(TokenUsage {
                prompt_tokens: 3,
                completion_tokens: 5,
                total_tokens: 8,
            }),
            cost: Some(0.00039),
            key_id: String::new(),
        }
    }

    fn signed(key: &SigningKey) -> Value {
        let text = sample_record().sign(key).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_signed_record_verifies_with_its_key() {
        let key = SigningKey::from_seed(&[5; 32]);
        let public = key.verifying_key();

        let verdict = verify_record(&signed(&key), |_| Some(&public));

        assert_eq!(
            verdict,
            Verdict::Valid {
                key_id: key.key_id().to_string()
            }
        );
    }

    #[test]
    fn any_changed_member_breaks_the_signature() {
        let key = SigningKey::from_seed(&[5; 32]);
        let public = key.verifying_key();
        let mut record = signed(&key);

        record["cost"] = serde_json::json!(0.0);

        assert_eq!(
            verify_record(&record, |_| Some(&public)),
            Verdict::BadSignature
        );
    }

    #[test]
    fn an_added_member_breaks_the_signature() {
        let key = SigningKey::from_seed(&[5; 32]);
        let public = key.verifying_key();
        let mut record = signed(&key);

        record["note"] = serde_json::json!("added later");

        assert_eq!(
            verify_record(&record, |_| Some(&public)),
            Verdict::BadSignature
        );
    }

    #[test]
    fn another_key_with_the_same_id_claim_does_not_verify() {
        let key = SigningKey::from_seed(&[5; 32]);
        let other = SigningKey::from_seed(&[6; 32]).verifying_key();

        assert_eq!(
            verify_record(&signed(&key), |_| Some(&other)),
            Verdict::BadSignature
        );
    }

    #[test]
    fn an_unknown_key_id_is_named() {
        let key = SigningKey::from_seed(&[5; 32]);

        let verdict = verify_record(&signed(&key), |_| None);

        assert_eq!(verdict, Verdict::UnknownKey(key.key_id().to_string()));
    }

    #[test]
    fn signing_sets_the_key_id_of_the_signing_key() {
        let key = SigningKey::from_seed(&[5; 32]);

        assert_eq!(signed(&key)["key_id"], key.key_id().as_str());
    }

    #[test]
    fn the_signed_text_is_canonical() {
        let key = SigningKey::from_seed(&[5; 32]);
        let text = sample_record().sign(&key).unwrap();

        let value: Value = serde_json::from_str(&text).unwrap();

        assert_eq!(canonical_json(&value).unwrap(), text.as_bytes());
        assert!(text.starts_with(r#"{"auth":{"certificate":null,"key_fingerprint":"#));
    }

    #[test]
    fn payload_is_the_record_without_its_signature() {
        let key = SigningKey::from_seed(&[5; 32]);
        let record = signed(&key);

        let payload = String::from_utf8(signing_payload(&record).unwrap()).unwrap();

        assert!(!payload.contains("\"signature\""));
        assert!(payload.contains("\"key_id\""));
    }

    /// A fixed vector: the Python integration tests verify the same record and signature
    /// with independent RFC 8785 and Ed25519 code (`tests/test_evidence_vector.py`).
    #[test]
    fn fixed_vector_matches_the_published_signature() {
        let key = SigningKey::from_seed(&[42; 32]);
        let text = sample_record().sign(&key).unwrap();

        let expected = include_str!("../testdata/signed-record.json");

        assert_eq!(text, expected.trim_end());
    }
}
