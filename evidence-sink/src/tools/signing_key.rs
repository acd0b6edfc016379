//! The gateway's Ed25519 signing key and the sink's keys file.
//!
//! A signing key file holds one line: the standard base64 of the 32-byte seed, as the
//! filter reads it from `MERCATOR_SIGNING_KEY`. It is written with mode 0600 and never
//! printed. Its public half goes into the sink's keys file (see `crate::load_keys`).

use std::path::Path;

use mercator_evidence::SigningKey;

use super::files::{read_text, write_new, write_replacing, PUBLIC, SECRET};
use super::{random_bytes, ToolError};
use crate::keys::{KeyEntry, KeyRing, KeysDocument, KeysError};

/// Makes a signing key from 32 bytes of the operating system's secure random source.
pub fn generate_signing_key() -> Result<SigningKey, ToolError> {
    let seed = random_bytes::<32>()?;
    Ok(SigningKey::from_seed(&seed))
}

/// Reads a signing key file. The error names the file and never shows its contents.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, ToolError> {
    let text = read_text(path)?;
    SigningKey::from_base64(&text).map_err(|source| ToolError::SigningKey {
        path: path.to_owned(),
        source,
    })
}

/// The keys file entry of a signing key's public half.
pub fn key_entry(key: &SigningKey) -> KeyEntry {
    let public = key.verifying_key();
    KeyEntry::unbounded(public.key_id().to_string(), public.to_base64())
}

/// The contents of a signing key file: the seed's base64 and a newline.
pub(crate) fn signing_key_file(key: &SigningKey) -> String {
    format!("{}\n", key.to_base64())
}

/// The contents of a keys file.
pub(crate) fn keys_file(document: &KeysDocument) -> Result<String, ToolError> {
    serde_json::to_string_pretty(document)
        .map(|text| text + "\n")
        .map_err(|e| ToolError::Serialize {
            what: "the keys file".to_owned(),
            reason: e.to_string(),
        })
}

/// `mercator signing-key new`: writes a fresh seed to `out` (refusing to overwrite) and,
/// when `keys_file` is given, adds the public key to it (creating it when missing).
/// Returns the public entry.
///
/// The keys file is read and checked before the seed is written, so a broken keys file
/// stops the command before it makes a key that nobody trusts.
pub fn new_signing_key(out: &Path, keys_file_path: Option<&Path>) -> Result<KeyEntry, ToolError> {
    if out.exists() {
        return Err(ToolError::Exists {
            path: out.to_owned(),
        });
    }
    let key = generate_signing_key()?;
    let entry = key_entry(&key);

    let document = match keys_file_path {
        Some(path) => Some((path, with_entry(path, &entry)?)),
        None => None,
    };

    write_new(out, signing_key_file(&key).as_bytes(), SECRET)?;
    if let Some((path, document)) = document {
        write_replacing(path, keys_file(&document)?.as_bytes(), PUBLIC)?;
    }
    Ok(entry)
}

/// The keys file at `path` (or a new one) with `entry` added, checked as the sink checks it.
fn with_entry(path: &Path, entry: &KeyEntry) -> Result<KeysDocument, ToolError> {
    let mut document = if path.exists() {
        let text = read_text(path)?;
        serde_json::from_str::<KeysDocument>(&text).map_err(|source| KeysError::Parse {
            path: path.to_owned(),
            source,
        })?
    } else {
        KeysDocument { keys: Vec::new() }
    };

    if !document
        .keys
        .iter()
        .any(|known| known.key_id == entry.key_id)
    {
        document.keys.push(entry.clone());
    }
    KeyRing::from_document(&document, path)?;
    Ok(document)
}

/// `mercator signing-key public`: the keys file entry of the key in `path`.
pub fn public_key_entry(path: &Path) -> Result<KeyEntry, ToolError> {
    Ok(key_entry(&read_signing_key(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_keys;

    #[test]
    fn a_new_key_is_added_to_an_existing_keys_file_and_the_sink_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.json");
        let first = new_signing_key(&dir.path().join("one.key"), Some(&keys)).unwrap();

        let second = new_signing_key(&dir.path().join("two.key"), Some(&keys)).unwrap();

        let ring = load_keys(&keys).unwrap();
        assert_eq!(ring.len(), 2);
        assert!(ring.get(&first.key_id).is_some());
        assert!(ring.get(&second.key_id).is_some());
    }

    #[test]
    fn the_public_entry_is_derived_from_the_written_seed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");

        let made = new_signing_key(&path, None).unwrap();

        assert_eq!(public_key_entry(&path).unwrap(), made);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[test]
    fn an_existing_key_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        std::fs::write(&path, "keep me").unwrap();

        let error = new_signing_key(&path, None).unwrap_err();

        assert!(matches!(error, ToolError::Exists { .. }));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }

    #[test]
    fn a_broken_keys_file_stops_the_command_before_a_key_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.json");
        std::fs::write(&keys, "{not json").unwrap();
        let out = dir.path().join("signing.key");

        let error = new_signing_key(&out, Some(&keys)).unwrap_err();

        assert!(error.to_string().contains("keys.json"), "{error}");
        assert!(!out.exists());
    }

    #[test]
    fn an_unusable_key_file_is_named_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        std::fs::write(&path, "c2hvcnQ=\n").unwrap();

        let error = public_key_entry(&path).err().unwrap().to_string();

        assert!(error.contains("signing.key"), "{error}");
        assert!(!error.contains("c2hvcnQ"), "{error}");
    }
}
