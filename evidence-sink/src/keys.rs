//! The verifying keys the sink trusts, read once at start from a keys file.
//!
//! The file has the shape that `GET /v1/keys` answers with:
//!
//! ```json
//! {"keys": [{"key_id": "ed25519:b600306cfa76723f", "public_key": "<base64 of 32 bytes>"}]}
//! ```
//!
//! Every `key_id` must be the id derived from its `public_key` (see `mercator_evidence`
//! on key ids), so a file cannot vouch for a key under another key's name.
//!
//! # Validity windows
//!
//! An entry may bound when its key signs, with RFC 3339 instants:
//!
//! ```json
//! {"key_id": "ed25519:…", "public_key": "…",
//!  "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z",
//!  "revoked_at": "2026-06-30T12:00:00Z"}
//! ```
//!
//! A record verifies with a key only if its own `timestamp` is at or after `not_before`
//! and before both `not_after` and `revoked_at` (each when given). So a key rotated out
//! (`not_after`) or revoked (`revoked_at`) still verifies the records it signed while it
//! was valid, and refuses records claimed to be signed later. Entries without these
//! members (the format before windows existed) are valid at every instant.
//!
//! The window is judged by the record's own timestamp, which the signer chose: someone who
//! stole a key can back-date a forgery into its window. What protects records already
//! accepted is the sink's Merkle tree: a forgery added later gets a later leaf, outside
//! every tree head signed before the theft was noticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mercator_evidence::{verify_record, KeyError, Verdict, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::intake::record_instant;

/// Why a keys file could not be loaded. Each variant names the file or the entry.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file could not be read (missing, no permission).
    #[error("cannot read keys file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// The file is not the JSON shape `{"keys":[{"key_id":…,"public_key":…}]}`.
    #[error("keys file {path} is not valid: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why parsing stopped.
        source: serde_json::Error,
    },

    /// The file lists no key, so the sink could never accept a record.
    #[error("keys file {path} lists no key; the sink would refuse every record")]
    Empty {
        /// The file.
        path: PathBuf,
    },

    /// An entry's `public_key` is not the base64 of a valid Ed25519 public key.
    #[error("keys file {path}, entry {index} ({key_id}): public_key is unusable: {source}")]
    BadPublicKey {
        /// The file.
        path: PathBuf,
        /// The entry's position, from 0.
        index: usize,
        /// The id the entry states.
        key_id: String,
        /// Why the key is unusable.
        source: KeyError,
    },

    /// An entry's `key_id` is not the id derived from its public key.
    #[error(
        "keys file {path}, entry {index}: key_id {stated} does not match its public_key, \
         whose id is {derived}"
    )]
    IdMismatch {
        /// The file.
        path: PathBuf,
        /// The entry's position, from 0.
        index: usize,
        /// The id the entry states.
        stated: String,
        /// The id derived from the entry's public key.
        derived: String,
    },

    /// An instant of a validity window is not RFC 3339, or the window is empty.
    #[error("keys file {path}, entry {index} ({key_id}): `{field}` {reason}")]
    BadWindow {
        /// The file.
        path: PathBuf,
        /// The entry's position, from 0.
        index: usize,
        /// The id the entry states.
        key_id: String,
        /// `not_before`, `not_after` or `revoked_at`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// Two entries have the same key id.
    #[error("keys file {path}, entry {index}: key {key_id} is listed twice")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The position of the second entry, from 0.
        index: usize,
        /// The repeated id.
        key_id: String,
    },
}

/// One entry of a keys file and of `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// `ed25519:` and 16 hex digits, derived from the public key.
    pub key_id: String,
    /// The standard base64 of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// Records timestamped before this instant are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Records timestamped at or after this instant are refused (the key was rotated out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Records timestamped at or after this instant are refused (the key was revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl KeyEntry {
    /// An entry valid at every instant.
    pub fn unbounded(key_id: String, public_key: String) -> Self {
        Self {
            key_id,
            public_key,
            not_before: None,
            not_after: None,
            revoked_at: None,
        }
    }
}

/// When a key may sign, in Unix nanoseconds; `None` leaves a side open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyWindow {
    /// The first instant a record may carry.
    pub not_before: Option<i64>,
    /// The first instant a record may no longer carry (rotation).
    pub not_after: Option<i64>,
    /// The first instant a record may no longer carry (revocation).
    pub revoked_at: Option<i64>,
}

impl KeyWindow {
    /// Why a record timestamped `at` falls outside the window, if it does.
    pub fn refusal(&self, at: i64) -> Option<&'static str> {
        if self.not_before.is_some_and(|start| at < start) {
            return Some("is before the key's not_before");
        }
        if self.revoked_at.is_some_and(|revoked| at >= revoked) {
            return Some("is at or after the key's revoked_at");
        }
        if self.not_after.is_some_and(|end| at >= end) {
            return Some("is at or after the key's not_after");
        }
        None
    }
}

/// Why a record does not verify against the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No trusted key has the record's `key_id`.
    UnknownKey(String),
    /// The signature is missing, malformed or wrong.
    BadSignature(String),
    /// The signature is good, but the record's timestamp is outside its key's window.
    OutsideWindow(String),
}

impl KeyRefusal {
    /// The sentence for the caller.
    pub fn reason(&self) -> &str {
        match self {
            Self::UnknownKey(reason) | Self::BadSignature(reason) | Self::OutsideWindow(reason) => {
                reason
            }
        }
    }
}

/// The document of a keys file and of `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysDocument {
    /// The keys, in the order listed.
    pub keys: Vec<KeyEntry>,
}

/// The verifying keys that the sink accepts records from, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, TrustedKey>,
}

#[derive(Debug, Clone)]
struct TrustedKey {
    key: VerifyingKey,
    window: KeyWindow,
    entry: KeyEntry,
}

impl KeyRing {
    /// A ring of the given keys; a key listed twice is kept once.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let keys = keys
            .into_iter()
            .map(|key| {
                let entry = KeyEntry::unbounded(key.key_id().to_string(), key.to_base64());
                let trusted = TrustedKey {
                    key,
                    window: KeyWindow::default(),
                    entry,
                };
                (trusted.entry.key_id.clone(), trusted)
            })
            .collect();
        Self { keys }
    }

    /// Checks a keys document: every entry's id must be derived from its key, and no id
    /// may repeat. `path` only names the source in errors.
    pub fn from_document(document: &KeysDocument, path: &Path) -> Result<Self, KeysError> {
        if document.keys.is_empty() {
            return Err(KeysError::Empty {
                path: path.to_owned(),
            });
        }

        let mut keys = BTreeMap::new();
        for (index, entry) in document.keys.iter().enumerate() {
            let key = VerifyingKey::from_base64(&entry.public_key).map_err(|source| {
                KeysError::BadPublicKey {
                    path: path.to_owned(),
                    index,
                    key_id: entry.key_id.clone(),
                    source,
                }
            })?;

            let derived = key.key_id().as_str();
            if derived != entry.key_id {
                return Err(KeysError::IdMismatch {
                    path: path.to_owned(),
                    index,
                    stated: entry.key_id.clone(),
                    derived: derived.to_owned(),
                });
            }

            let window = window_of(entry, index, path)?;
            let trusted = TrustedKey {
                key,
                window,
                entry: entry.clone(),
            };
            if keys.insert(entry.key_id.clone(), trusted).is_some() {
                return Err(KeysError::Duplicate {
                    path: path.to_owned(),
                    index,
                    key_id: entry.key_id.clone(),
                });
            }
        }

        Ok(Self { keys })
    }

    /// The key with this id, if the sink trusts one.
    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id).map(|trusted| &trusted.key)
    }

    /// Verifies a record: its signature by a trusted key, and its `timestamp` (given as
    /// Unix nanoseconds, `None` when it is missing or not RFC 3339) inside that key's
    /// window. Returns the id of the key that signed.
    pub fn verify(&self, record: &Value, timestamp: Option<i64>) -> Result<String, KeyRefusal> {
        let key_id = match verify_record(record, |id| self.get(id)) {
            Verdict::Valid { key_id } => key_id,
            unknown @ Verdict::UnknownKey(_) => {
                return Err(KeyRefusal::UnknownKey(unknown.reason()))
            }
            refused => return Err(KeyRefusal::BadSignature(refused.reason())),
        };
        let Some(trusted) = self.keys.get(&key_id) else {
            return Err(KeyRefusal::UnknownKey(format!(
                "no known verifying key has id `{key_id}`"
            )));
        };
        if trusted.window == KeyWindow::default() {
            return Ok(key_id);
        }
        let Some(at) = timestamp else {
            return Err(KeyRefusal::OutsideWindow(format!(
                "key {key_id} has a validity window and the record has no RFC 3339 `timestamp`"
            )));
        };
        match trusted.window.refusal(at) {
            None => Ok(key_id),
            Some(why) => Err(KeyRefusal::OutsideWindow(format!(
                "the record's timestamp {why}: key {key_id} did not sign records then"
            ))),
        }
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids, in order, for logs.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The ring as a keys document, ordered by key id.
    pub fn to_document(&self) -> KeysDocument {
        let keys = self
            .keys
            .values()
            .map(|trusted| trusted.entry.clone())
            .collect();
        KeysDocument { keys }
    }
}

fn window_of(entry: &KeyEntry, index: usize, path: &Path) -> Result<KeyWindow, KeysError> {
    let bad = |field: &'static str, reason: &str| KeysError::BadWindow {
        path: path.to_owned(),
        index,
        key_id: entry.key_id.clone(),
        field,
        reason: reason.to_owned(),
    };
    let instant = |field: &'static str, value: &Option<String>| match value {
        None => Ok(None),
        Some(text) => record_instant(text).map(Some).ok_or_else(|| {
            bad(
                field,
                "is not an RFC 3339 instant such as 2027-01-01T00:00:00Z",
            )
        }),
    };
    let window = KeyWindow {
        not_before: instant("not_before", &entry.not_before)?,
        not_after: instant("not_after", &entry.not_after)?,
        revoked_at: instant("revoked_at", &entry.revoked_at)?,
    };
    if let (Some(start), Some(end)) = (window.not_before, window.not_after) {
        if start >= end {
            return Err(bad("not_after", "must be later than not_before"));
        }
    }
    Ok(window)
}

/// Reads and checks a keys file (see the module docs for its shape).
///
/// ```
/// use mercator_evidence_sink::{load_keys, KeysError};
/// let missing = load_keys(std::path::Path::new("/nonexistent/keys.json"));
/// assert!(matches!(missing, Err(KeysError::Read { .. })));
/// ```
pub fn load_keys(path: &Path) -> Result<KeyRing, KeysError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: path.to_owned(),
        source,
    })?;

    let document: KeysDocument =
        serde_json::from_str(&text).map_err(|source| KeysError::Parse {
            path: path.to_owned(),
            source,
        })?;

    KeyRing::from_document(&document, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mercator_evidence::SigningKey;
    use serde_json::json;

    fn entry_of(seed: u8) -> KeyEntry {
        let key = SigningKey::from_seed(&[seed; 32]).verifying_key();
        KeyEntry::unbounded(key.key_id().to_string(), key.to_base64())
    }

    fn check(keys: Vec<KeyEntry>) -> Result<KeyRing, KeysError> {
        KeyRing::from_document(&KeysDocument { keys }, Path::new("keys.json"))
    }

    #[test]
    fn a_well_formed_document_round_trips() {
        let document = KeysDocument {
            keys: vec![entry_of(1), entry_of(2)],
        };

        let ring = KeyRing::from_document(&document, Path::new("keys.json")).unwrap();

        assert_eq!(ring.len(), 2);
        let mut expected = document.keys.clone();
        expected.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        assert_eq!(ring.to_document().keys, expected);
    }

    #[test]
    fn a_key_id_that_is_not_derived_from_its_key_is_refused_by_entry() {
        let mut wrong = entry_of(2);
        wrong.key_id = entry_of(3).key_id;

        let error = check(vec![entry_of(1), wrong]).unwrap_err();

        assert!(matches!(error, KeysError::IdMismatch { index: 1, .. }));
        assert!(error.to_string().contains("entry 1"));
    }

    #[test]
    fn a_key_listed_twice_is_refused() {
        let error = check(vec![entry_of(1), entry_of(1)]).unwrap_err();

        assert!(matches!(error, KeysError::Duplicate { index: 1, .. }));
    }

    #[test]
    fn an_empty_key_list_is_refused() {
        assert!(matches!(check(vec![]), Err(KeysError::Empty { .. })));
    }

    #[test]
    fn a_public_key_that_is_not_base64_is_refused() {
        let mut bad = entry_of(1);
        bad.public_key = "not base64!".to_owned();

        assert!(matches!(
            check(vec![bad]),
            Err(KeysError::BadPublicKey { index: 0, .. })
        ));
    }

    #[test]
    fn unknown_members_in_a_keys_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, r#"{"keys":[],"extra":1}"#).unwrap();

        assert!(matches!(load_keys(&path), Err(KeysError::Parse { .. })));
    }

    fn signed_at(seed: u8, timestamp: &str) -> Value {
        let mut record: mercator_evidence::EvidenceRecord = serde_json::from_str(include_str!(
            "../../crates/evidence/testdata/signed-record.json"
        ))
        .unwrap();
        record.timestamp = timestamp.to_owned();
        let text = record.sign(&SigningKey::from_seed(&[seed; 32])).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn verify_at(ring: &KeyRing, record: &Value) -> Result<String, KeyRefusal> {
        let at = record["timestamp"].as_str().and_then(record_instant);
        ring.verify(record, at)
    }

    #[test]
    fn a_rotated_and_a_revoked_key_verify_only_inside_their_windows() {
        let mut rotated = entry_of(1);
        rotated.not_before = Some("2026-01-01T00:00:00Z".to_owned());
        rotated.not_after = Some("2026-07-01T00:00:00Z".to_owned());
        let mut revoked = entry_of(2);
        revoked.revoked_at = Some("2026-03-01T12:00:00+01:00".to_owned());
        let ring = check(vec![rotated, revoked, entry_of(3)]).unwrap();

        assert!(verify_at(&ring, &signed_at(1, "2026-03-01T00:00:00Z")).is_ok());
        assert!(matches!(
            verify_at(&ring, &signed_at(1, "2025-12-31T23:59:59.999Z")),
            Err(KeyRefusal::OutsideWindow(m)) if m.contains("not_before")
        ));
        assert!(matches!(
            verify_at(&ring, &signed_at(1, "2026-07-01T00:00:00Z")),
            Err(KeyRefusal::OutsideWindow(m)) if m.contains("not_after")
        ));
        assert!(verify_at(&ring, &signed_at(2, "2026-03-01T10:59:59.999Z")).is_ok());
        assert!(matches!(
            verify_at(&ring, &signed_at(2, "2026-03-01T11:00:00Z")),
            Err(KeyRefusal::OutsideWindow(m)) if m.contains("revoked_at")
        ));
        assert!(verify_at(&ring, &signed_at(3, "2099-01-01T00:00:00Z")).is_ok());
        assert!(matches!(
            verify_at(&ring, &signed_at(9, "2026-03-01T00:00:00Z")),
            Err(KeyRefusal::UnknownKey(_))
        ));
        let mut tampered = signed_at(1, "2026-03-01T00:00:00Z");
        tampered["timestamp"] = json!("2026-03-02T00:00:00Z");
        assert!(matches!(
            verify_at(&ring, &tampered),
            Err(KeyRefusal::BadSignature(_))
        ));
    }

    #[test]
    fn bad_window_instants_and_empty_windows_are_refused_by_field() {
        let mut bad = entry_of(1);
        bad.revoked_at = Some("last week".to_owned());
        let mut empty = entry_of(2);
        empty.not_before = Some("2027-01-01T00:00:00Z".to_owned());
        empty.not_after = Some("2026-01-01T00:00:00Z".to_owned());

        assert!(matches!(
            check(vec![bad]),
            Err(KeysError::BadWindow {
                field: "revoked_at",
                ..
            })
        ));
        assert!(matches!(
            check(vec![empty]),
            Err(KeysError::BadWindow {
                field: "not_after",
                ..
            })
        ));
    }

    #[test]
    fn a_keys_file_without_windows_still_loads_and_is_served_as_it_was() {
        let entry = entry_of(5);
        let text = format!(
            r#"{{"keys":[{{"key_id":"{}","public_key":"{}"}}]}}"#,
            entry.key_id, entry.public_key
        );
        let document: KeysDocument = serde_json::from_str(&text).unwrap();

        let ring = check(document.keys).unwrap();

        assert_eq!(serde_json::to_string(&ring.to_document()).unwrap(), text);
    }

    #[test]
    fn a_keys_file_is_loaded_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let document = KeysDocument {
            keys: vec![entry_of(4)],
        };
        std::fs::write(&path, serde_json::to_string(&document).unwrap()).unwrap();

        let ring = load_keys(&path).unwrap();

        assert!(ring.get(&entry_of(4).key_id).is_some());
    }
}
