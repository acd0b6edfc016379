//! The signed tree head: the sink's signed statement that its Merkle tree (see
//! [`crate::merkle`]) held `tree_size` leaves with root `root_hash`.
//!
//! A tree head is a JSON object:
//!
//! ```json
//! {"schema": "mercator.tree_head.v1", "tree_size": 42,
//!  "root_hash": "<64 lowercase hex digits>", "timestamp": "2026-12-04T06:00:00.000Z",
//!  "key_id": "ed25519:…", "signature": "<base64>"}
//! ```
//!
//! It is signed exactly as a record is: `signature` is the standard base64 of an Ed25519
//! signature over the RFC 8785 canonical JSON of the object without `signature`, that is,
//! over the UTF-8 bytes
//!
//! ```text
//! {"key_id":"ed25519:…","root_hash":"…","schema":"mercator.tree_head.v1","timestamp":"…","tree_size":42}
//! ```
//!
//! `key_id` is derived from the sink's own tree key (not a gateway key) as the crate docs
//! describe. `schema` keeps a tree head from ever being taken for an evidence record, and
//! `timestamp` is when the sink signed it (RFC 3339, UTC, milliseconds).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::keys::{SigningKey, VerifyingKey};
use crate::merkle::{from_hex, to_hex, Hash};
use crate::signing::{canonical_json, verify_record, EvidenceError, Verdict};

/// The schema tag of a tree head.
pub const TREE_HEAD_SCHEMA: &str = "mercator.tree_head.v1";

/// A signed tree head, as `GET /v1/tree` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeHead {
    /// Always [`TREE_HEAD_SCHEMA`].
    pub schema: String,
    /// How many leaves (accepted records, erased and pruned ones included) the tree had.
    pub tree_size: u64,
    /// The tree's root, lowercase hex.
    pub root_hash: String,
    /// When the sink signed this head.
    pub timestamp: String,
    /// The id of the sink's tree key.
    pub key_id: String,
    /// Base64 Ed25519 signature (see the module docs for the bytes).
    pub signature: String,
}

/// Why a tree head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeHeadError {
    /// Not the JSON shape of a tree head (a member missing, unknown or of the wrong type).
    #[error("not a tree head: {0}")]
    Malformed(String),
    /// `schema` is not [`TREE_HEAD_SCHEMA`].
    #[error("tree head schema is `{0}`, expected `{TREE_HEAD_SCHEMA}`")]
    WrongSchema(String),
    /// `root_hash` is not 64 hex digits.
    #[error("tree head root_hash is not 64 hex digits")]
    BadRoot,
    /// Signed by another key than the trusted tree key.
    #[error("tree head is signed by key {found}, but the trusted tree key is {expected}")]
    WrongKey {
        /// The trusted key's id.
        expected: String,
        /// The id the head names.
        found: String,
    },
    /// The signature does not verify.
    #[error("tree head signature: {0}")]
    Signature(String),
}

impl TreeHead {
    /// Signs a head for a tree of `tree_size` leaves with `root`, at `timestamp`.
    pub fn sign(
        tree_size: u64,
        root: &Hash,
        timestamp: &str,
        key: &SigningKey,
    ) -> Result<Self, EvidenceError> {
        let unsigned = json!({
            "schema": TREE_HEAD_SCHEMA,
            "tree_size": tree_size,
            "root_hash": to_hex(root),
            "timestamp": timestamp,
            "key_id": key.key_id().as_str(),
        });
        let payload = canonical_json(&unsigned)?;
        Ok(Self {
            schema: TREE_HEAD_SCHEMA.to_owned(),
            tree_size,
            root_hash: to_hex(root),
            timestamp: timestamp.to_owned(),
            key_id: key.key_id().as_str().to_owned(),
            signature: BASE64.encode(key.sign_bytes(&payload)),
        })
    }

    /// The root as bytes, when `root_hash` is well formed.
    pub fn root(&self) -> Option<Hash> {
        from_hex(&self.root_hash)
    }
}

/// Checks a tree head against the sink's tree key: its shape, schema, key and signature.
/// Never panics; every input gets an answer.
pub fn verify_tree_head(value: &Value, key: &VerifyingKey) -> Result<TreeHead, TreeHeadError> {
    let head: TreeHead = serde_json::from_value(value.clone())
        .map_err(|e| TreeHeadError::Malformed(e.to_string()))?;
    if head.schema != TREE_HEAD_SCHEMA {
        return Err(TreeHeadError::WrongSchema(head.schema));
    }
    if head.root().is_none() {
        return Err(TreeHeadError::BadRoot);
    }
    if head.key_id != key.key_id().as_str() {
        return Err(TreeHeadError::WrongKey {
            expected: key.key_id().to_string(),
            found: head.key_id,
        });
    }
    match verify_record(value, |id| (id == key.key_id().as_str()).then_some(key)) {
        Verdict::Valid { .. } => Ok(head),
        other => Err(TreeHeadError::Signature(other.reason())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::leaf_hash;

    fn tree_key() -> SigningKey {
        SigningKey::from_seed(&[42; 32])
    }

    fn signed() -> Value {
        let head = TreeHead::sign(3, &leaf_hash(b"x"), "2026-12-04T06:00:00.000Z", &tree_key());
        serde_json::to_value(head.unwrap()).unwrap()
    }

    #[test]
    fn a_signed_head_verifies_and_its_signed_bytes_are_the_canonical_json_without_signature() {
        let value = signed();

        let head = verify_tree_head(&value, &tree_key().verifying_key()).unwrap();

        assert_eq!(head.tree_size, 3);
        let expected = format!(
            r#"{{"key_id":"{}","root_hash":"{}","schema":"mercator.tree_head.v1","timestamp":"2026-12-04T06:00:00.000Z","tree_size":3}}"#,
            tree_key().key_id(),
            to_hex(&leaf_hash(b"x"))
        );
        let signature = BASE64.decode(&head.signature).unwrap();
        let public = ed25519_dalek::VerifyingKey::from_bytes(
            &BASE64
                .decode(tree_key().verifying_key().to_base64())
                .unwrap()
                .try_into()
                .unwrap(),
        )
        .unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
        public
            .verify_strict(expected.as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn a_changed_size_or_root_or_another_key_is_refused() {
        let key = tree_key().verifying_key();
        let other = SigningKey::from_seed(&[1; 32]).verifying_key();

        let mut bigger = signed();
        bigger["tree_size"] = json!(4);
        let mut rooted = signed();
        rooted["root_hash"] = json!(to_hex(&leaf_hash(b"y")));
        let mut schema = signed();
        schema["schema"] = json!("mercator.evidence.v1");

        assert!(matches!(
            verify_tree_head(&bigger, &key),
            Err(TreeHeadError::Signature(_))
        ));
        assert!(matches!(
            verify_tree_head(&rooted, &key),
            Err(TreeHeadError::Signature(_))
        ));
        assert!(matches!(
            verify_tree_head(&schema, &key),
            Err(TreeHeadError::WrongSchema(_))
        ));
        assert!(matches!(
            verify_tree_head(&signed(), &other),
            Err(TreeHeadError::WrongKey { .. })
        ));
        assert!(matches!(
            verify_tree_head(&json!([1]), &key),
            Err(TreeHeadError::Malformed(_))
        ));
    }
}
