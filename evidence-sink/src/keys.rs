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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mercator_evidence::{KeyError, VerifyingKey};
use serde::{Deserialize, Serialize};

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
    keys: BTreeMap<String, VerifyingKey>,
}

impl KeyRing {
    /// A ring of the given keys; a key listed twice is kept once.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let keys = keys
            .into_iter()
            .map(|key| (key.key_id().as_str().to_owned(), key))
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

            if keys.insert(entry.key_id.clone(), key).is_some() {
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
        self.keys.get(key_id)
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
            .iter()
            .map(|(key_id, key)| KeyEntry {
                key_id: key_id.clone(),
                public_key: key.to_base64(),
            })
            .collect();
        KeysDocument { keys }
    }
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

    fn entry_of(seed: u8) -> KeyEntry {
        let key = SigningKey::from_seed(&[seed; 32]).verifying_key();
        KeyEntry {
            key_id: key.key_id().to_string(),
            public_key: key.to_base64(),
        }
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
