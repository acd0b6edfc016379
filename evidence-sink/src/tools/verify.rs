//! `mercator verify`: checks signed evidence records offline, against a keys file.
//!
//! The input may be one record (a JSON object), a JSON array of records, the sink's JSON
//! export (`{"records":[…],"count":N}`), or JSON lines (the sink's `jsonl` export). Each
//! record gets a verdict from [`KeyRing::verify`], the same check the sink makes when it
//! accepts a record: the signature, by a trusted key, inside that key's validity window.

use serde_json::Value;

use super::ToolError;
use crate::intake::record_instant;
use crate::keys::KeyRing;

/// The verdict on one record of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCheck {
    /// The record's `id`, or its position (`record 3`, `line 3`) when it has none.
    pub label: String,
    /// `Ok(key_id)` when the signature verified, otherwise why not.
    pub outcome: Result<String, String>,
}

impl RecordCheck {
    /// The line `mercator verify` prints: `ok evt_… key ed25519:…` or `FAIL evt_… <reason>`.
    pub fn line(&self) -> String {
        match &self.outcome {
            Ok(key_id) => format!("ok {} key {key_id}", self.label),
            Err(reason) => format!("FAIL {} {reason}", self.label),
        }
    }
}

/// Checks every record of `input` (see the module docs for the forms it may take).
/// `source_name` names the input in errors.
pub fn verify_input(
    input: &str,
    source_name: &str,
    keys: &KeyRing,
) -> Result<Vec<RecordCheck>, ToolError> {
    let checks: Vec<RecordCheck> = records_of(input)
        .into_iter()
        .map(|(position, record)| match record {
            Ok(record) => check(&record, position, keys),
            Err(reason) => RecordCheck {
                label: position,
                outcome: Err(reason),
            },
        })
        .collect();

    if checks.is_empty() {
        return Err(ToolError::NoRecords {
            source_name: source_name.to_owned(),
        });
    }
    Ok(checks)
}

/// One summary line: `N verified, M failed`.
pub fn summary(checks: &[RecordCheck]) -> String {
    let verified = checks.iter().filter(|c| c.outcome.is_ok()).count();
    format!("{verified} verified, {} failed", checks.len() - verified)
}

fn check(record: &Value, position: String, keys: &KeyRing) -> RecordCheck {
    let label = record
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or(position);
    let at = record
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(record_instant);
    let outcome = keys
        .verify(record, at)
        .map_err(|refusal| refusal.reason().to_owned());
    RecordCheck { label, outcome }
}

/// The records of the input with their positions; a JSON line that does not parse is a
/// failed record of its own, so one bad line does not hide the others.
fn records_of(input: &str) -> Vec<(String, Result<Value, String>)> {
    let numbered = |records: Vec<Value>| {
        records
            .into_iter()
            .enumerate()
            .map(|(index, record)| (format!("record {}", index + 1), Ok(record)))
            .collect()
    };

    match serde_json::from_str::<Value>(input) {
        Ok(Value::Object(mut object)) => match object.remove("records") {
            Some(Value::Array(records)) => numbered(records),
            Some(other) => {
                object.insert("records".to_owned(), other);
                numbered(vec![Value::Object(object)])
            }
            None => numbered(vec![Value::Object(object)]),
        },
        Ok(Value::Array(records)) => numbered(records),
        Ok(other) => numbered(vec![other]),
        Err(_) => input
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                let position = format!("line {}", index + 1);
                let record = serde_json::from_str::<Value>(line)
                    .map_err(|e| format!("not a JSON record: {e}"));
                (position, record)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mercator_evidence::SigningKey;

    fn ring(key: &SigningKey) -> KeyRing {
        KeyRing::new([key.verifying_key()])
    }

    /// A record signed by `key` with id `id`, as the filter signs and the sink exports it:
    /// the evidence crate's fixed record, given another id and signed again.
    fn signed(key: &SigningKey, id: &str) -> String {
        let mut record: mercator_evidence::EvidenceRecord = serde_json::from_str(include_str!(
            "../../../crates/evidence/testdata/signed-record.json"
        ))
        .unwrap();
        record.id = id.to_owned();
        record.sign(key).unwrap()
    }

    #[test]
    fn a_good_record_verifies_and_names_its_key() {
        let key = SigningKey::from_seed(&[7; 32]);
        let text = signed(&key, "evt_good");

        let checks = verify_input(&text, "record.json", &ring(&key)).unwrap();

        assert_eq!(checks.len(), 1);
        assert_eq!(
            checks[0].line(),
            format!("ok evt_good key {}", key.key_id())
        );
        assert_eq!(summary(&checks), "1 verified, 0 failed");
    }

    #[test]
    fn a_tampered_record_fails_with_the_reason() {
        let key = SigningKey::from_seed(&[7; 32]);
        let mut record: Value = serde_json::from_str(&signed(&key, "evt_bad")).unwrap();
        record["cost"] = serde_json::json!(0.0);

        let checks = verify_input(&record.to_string(), "record.json", &ring(&key)).unwrap();

        assert_eq!(
            checks[0].line(),
            "FAIL evt_bad the signature does not match the record"
        );
        assert_eq!(summary(&checks), "0 verified, 1 failed");
    }

    #[test]
    fn the_sinks_exports_and_arrays_and_json_lines_are_all_read() {
        let key = SigningKey::from_seed(&[7; 32]);
        let one = signed(&key, "evt_1");
        let two = signed(&key, "evt_2");
        let keys = ring(&key);

        let export = format!(r#"{{"records":[{one},{two}],"count":2}}"#);
        let array = format!("[{one},{two}]");
        let lines = format!("{one}\n\n{two}\nnot json\n");

        for input in [&export, &array] {
            let checks = verify_input(input, "in", &keys).unwrap();
            assert_eq!(summary(&checks), "2 verified, 0 failed", "{input}");
        }
        let checks = verify_input(&lines, "in", &keys).unwrap();
        assert_eq!(summary(&checks), "2 verified, 1 failed");
        assert!(checks[2]
            .line()
            .starts_with("FAIL line 4 not a JSON record"));
    }

    #[test]
    fn an_unknown_key_and_an_empty_input_are_reported() {
        let key = SigningKey::from_seed(&[7; 32]);
        let other = SigningKey::from_seed(&[8; 32]);

        let checks = verify_input(&signed(&key, "evt_x"), "in", &ring(&other)).unwrap();

        assert!(
            checks[0].line().contains("no known verifying key"),
            "{:?}",
            checks
        );
        assert!(matches!(
            verify_input("  \n", "in", &ring(&key)),
            Err(ToolError::NoRecords { .. })
        ));
    }
}
