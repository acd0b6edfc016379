//! From a request body to records ready to store: parse, check the members the sink
//! indexes, verify each signature, canonicalize. Pure functions, so every refusal can be
//! tested without HTTP or SQLite.
//!
//! A body is one record (a JSON object) or a batch (a JSON array of them). The first
//! record that fails refuses the whole body: a batch is stored entirely or not at all.

use mercator_evidence::canonical_json;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::SinkError;
use crate::keys::{KeyRefusal, KeyRing};

/// A verified record with the members the store indexes, and the exact text to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRecord {
    /// `evt_…`, the record's identity.
    pub id: String,
    /// The record's `timestamp` as sent.
    pub timestamp: String,
    /// The same instant as nanoseconds since the Unix epoch, for range queries.
    pub timestamp_unix_ns: i64,
    /// `request_id` when it is a string.
    pub request_id: Option<String>,
    /// `user_id` when it is a string.
    pub user_id: Option<String>,
    /// `provider` when it is a string.
    pub provider: Option<String>,
    /// `model` when it is a string.
    pub model: Option<String>,
    /// `decision` when it is a string.
    pub decision: Option<String>,
    /// The id of the key whose signature verified.
    pub key_id: String,
    /// The RFC 8785 canonical JSON of the whole record, `signature` included: the bytes
    /// stored and served.
    pub canonical: String,
}

/// Parses a body and verifies every record in it against `keys`.
pub fn verify_body(body: &[u8], keys: &KeyRing) -> Result<Vec<VerifiedRecord>, SinkError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| SinkError::InvalidJson(e.to_string()))?;

    match value {
        Value::Array(items) if items.is_empty() => Err(SinkError::InvalidRecord(
            "the batch is empty: send one record or an array of at least one".to_owned(),
        )),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| verify_one(item, &format!("record {index}"), keys))
            .collect(),
        single => Ok(vec![verify_one(&single, "the record", keys)?]),
    }
}

/// Checks and verifies one record; `label` names it in refusals ("record 3").
fn verify_one(value: &Value, label: &str, keys: &KeyRing) -> Result<VerifiedRecord, SinkError> {
    let Some(object) = value.as_object() else {
        return Err(SinkError::InvalidRecord(format!(
            "{label} is not a JSON object"
        )));
    };

    let id = required_string(object, "id", label)?;
    if !id.starts_with("evt_") {
        return Err(SinkError::InvalidRecord(format!(
            "{label}: `id` must start with `evt_`, found {}",
            shortened(id)
        )));
    }
    let label = format!("{label} ({})", shortened(id));

    let timestamp = required_string(object, "timestamp", &label)?;
    let timestamp_unix_ns = record_instant(timestamp).ok_or_else(|| {
        SinkError::InvalidRecord(format!(
            "{label}: `timestamp` must be an RFC 3339 instant between the years 1678 and 2262"
        ))
    })?;
    required_string(object, "key_id", &label)?;
    required_string(object, "signature", &label)?;

    let key_id = keys
        .verify(value, Some(timestamp_unix_ns))
        .map_err(|refusal| {
            let message = format!("{label}: {}", refusal.reason());
            match refusal {
                KeyRefusal::UnknownKey(_) => SinkError::UnknownKey(message),
                KeyRefusal::BadSignature(_) => SinkError::SignatureInvalid(message),
                KeyRefusal::OutsideWindow(_) => SinkError::KeyNotValid(message),
            }
        })?;

    let canonical = canonical_json(object)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            SinkError::InvalidRecord(format!("{label} has no RFC 8785 canonical form"))
        })?;

    Ok(VerifiedRecord {
        id: id.to_owned(),
        timestamp: timestamp.to_owned(),
        timestamp_unix_ns,
        request_id: optional_string(object, "request_id"),
        user_id: optional_string(object, "user_id"),
        provider: optional_string(object, "provider"),
        model: optional_string(object, "model"),
        decision: optional_string(object, "decision"),
        key_id,
        canonical,
    })
}

fn required_string<'a>(
    object: &'a Map<String, Value>,
    member: &str,
    label: &str,
) -> Result<&'a str, SinkError> {
    match object.get(member) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(SinkError::InvalidRecord(format!(
            "{label}: `{member}` must be a string"
        ))),
        None => Err(SinkError::InvalidRecord(format!(
            "{label}: `{member}` is missing"
        ))),
    }
}

/// Indexed members are kept only when they are strings; anything else is stored as NULL
/// in its column (the record itself keeps it as sent).
fn optional_string(object: &Map<String, Value>, member: &str) -> Option<String> {
    object
        .get(member)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Parses an RFC 3339 instant into nanoseconds since the Unix epoch, if it fits an `i64`.
pub(crate) fn record_instant(text: &str) -> Option<i64> {
    let instant = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(instant.unix_timestamp_nanos()).ok()
}

/// An id short enough to quote in a message: a hostile body may send a megabyte of id.
fn shortened(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() <= MAX_CHARS {
        text.to_owned()
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mercator_evidence::SigningKey;
    use serde_json::json;

    fn signed(key: &SigningKey, record: Value) -> Value {
        let record: mercator_evidence::EvidenceRecord = serde_json::from_value(record).unwrap();
        serde_json::from_str(&record.sign(key).unwrap()).unwrap()
    }

    fn sample() -> Value {
        json!({
            "schema": "mercator.evidence.v1",
            "id": "evt_aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "timestamp": "2026-12-03T10:30:00.000Z",
            "request_id": "req-1",
            "user_id": "user_finance",
            "provider": "openai",
            "model": "gpt-4",
            "decision": "allow",
            "auth": {"method": "api_key", "result": "authenticated",
                     "key_name": "finance-demo", "key_fingerprint": "sha256:0123456789ab"},
            "request": {"path": "/v1/chat/completions", "status": null, "body_bytes": 2,
                        "body_sha256": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                        "body": "{}"},
            "response": {"path": null, "status": 200, "body_bytes": 0,
                         "body_sha256": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                         "body": null},
            "error": null,
            "policy_bundle": null,
            "policy_decisions": [],
            "token_usage": null,
            "cost": null,
            "key_id": ""
        })
    }

    fn ring(key: &SigningKey) -> KeyRing {
        KeyRing::new([key.verifying_key()])
    }

    #[test]
    fn a_signed_record_is_verified_and_its_columns_extracted() {
        let key = SigningKey::from_seed(&[1; 32]);
        let body = serde_json::to_vec(&signed(&key, sample())).unwrap();

        let records = verify_body(&body, &ring(&key)).unwrap();

        let [record] = records.as_slice() else {
            panic!("one record expected")
        };
        assert_eq!(record.id, "evt_aaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(record.user_id.as_deref(), Some("user_finance"));
        assert_eq!(record.decision.as_deref(), Some("allow"));
        assert_eq!(record.key_id, key.key_id().as_str());
        assert_eq!(record.timestamp_unix_ns, 1_796_293_800_000_000_000);
    }

    #[test]
    fn the_stored_text_is_canonical_whatever_order_the_body_had() {
        let key = SigningKey::from_seed(&[1; 32]);
        let record = signed(&key, sample());
        let pretty = serde_json::to_vec_pretty(&record).unwrap();

        let verified = verify_body(&pretty, &ring(&key)).unwrap();

        let expected = String::from_utf8(canonical_json(&record).unwrap()).unwrap();
        assert_eq!(verified[0].canonical, expected);
    }

    #[test]
    fn a_missing_member_is_named() {
        let key = SigningKey::from_seed(&[1; 32]);
        let mut record = signed(&key, sample());
        record.as_object_mut().unwrap().remove("timestamp");

        let error = verify_body(record.to_string().as_bytes(), &ring(&key)).unwrap_err();

        assert!(matches!(error, SinkError::InvalidRecord(_)));
        assert!(error.to_string().contains("`timestamp` is missing"));
    }

    #[test]
    fn an_id_without_the_evt_prefix_is_refused() {
        let key = SigningKey::from_seed(&[1; 32]);
        let mut record = sample();
        record["id"] = json!("abc");

        let error = verify_body(signed(&key, record).to_string().as_bytes(), &ring(&key));

        assert!(matches!(error, Err(SinkError::InvalidRecord(m)) if m.contains("evt_")));
    }

    #[test]
    fn a_timestamp_that_is_not_rfc_3339_is_refused() {
        let key = SigningKey::from_seed(&[1; 32]);
        let mut record = sample();
        record["timestamp"] = json!("yesterday");

        let error = verify_body(signed(&key, record).to_string().as_bytes(), &ring(&key));

        assert!(matches!(error, Err(SinkError::InvalidRecord(m)) if m.contains("`timestamp`")));
    }

    #[test]
    fn a_batch_names_the_index_of_the_record_that_failed() {
        let key = SigningKey::from_seed(&[1; 32]);
        let good = signed(&key, sample());
        let mut bad = good.clone();
        bad["model"] = json!("gpt-5");

        let error = verify_body(json!([good, bad]).to_string().as_bytes(), &ring(&key));

        assert!(matches!(error, Err(SinkError::SignatureInvalid(m)) if m.starts_with("record 1")));
    }

    #[test]
    fn long_ids_are_shortened_in_messages() {
        let long = format!("evt_{}", "x".repeat(10_000));

        assert!(shortened(&long).chars().count() <= 65);
    }

    #[test]
    fn instants_with_offsets_are_compared_as_instants() {
        assert_eq!(
            record_instant("2026-12-03T11:30:00+01:00"),
            record_instant("2026-12-03T10:30:00Z")
        );
        assert_eq!(record_instant("2026-12-03"), None);
        assert_eq!(record_instant("9999-12-31T00:00:00Z"), None);
    }
}
