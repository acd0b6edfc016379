//! `mercator audit`: an auditor's offline checks of the sink's evidence, with nothing but
//! files and public keys, no network.
//!
//! * `mercator audit bundle --keys K --tree-key T BUNDLE` reads a bundle from
//!   `GET /v1/evidence/bundle` (see the sink's `export` module for its lines) and checks,
//!   in one pass of bounded memory: the tree head's signature by the sink's tree key; for
//!   every record, its signature by a gateway key of `K` inside that key's validity
//!   window, and its inclusion proof, from the leaf `SHA-256(0x00 || RFC 8785 JSON of the
//!   record)` to the tree head's root; that no id or leaf appears twice; and that the
//!   bundle ends with its count line (so a cut-off file is caught). It stops at the first
//!   failure and names it.
//! * `mercator audit consistency --tree-key T --old OLD --new NEW --proof P` checks that
//!   the tree of head `NEW` extends the tree of head `OLD` (an earlier head the auditor
//!   kept): both signatures and the consistency proof from `GET /v1/tree/consistency`. A
//!   record deleted or changed after `OLD` was signed makes this fail.
//!
//! `T` is the sink's tree key as `GET /v1/tree/key` serves it, `{"key_id":…,
//! "public_key":…}`; its id must be the one derived from the key.

use std::io::BufRead;

use mercator_evidence::merkle::{
    from_hex, leaf_hash, to_hex, verify_consistency, verify_inclusion, Hash,
};
use mercator_evidence::{canonical_json, verify_tree_head, TreeHead, VerifyingKey};
use serde::Deserialize;
use serde_json::Value;

use super::ToolError;
use crate::export::BUNDLE_SCHEMA;
use crate::intake::record_instant;
use crate::keys::KeyRing;

/// What a bundle that passed every check holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSummary {
    /// The verified tree head.
    pub head: TreeHead,
    /// How many records were checked.
    pub records: u64,
}

impl BundleSummary {
    /// The lines `mercator audit bundle` prints on success.
    pub fn lines(&self) -> String {
        format!(
            "tree head: {} leaves, root {}, signed at {} by {} (signature verified)\n\
             {} records: every signature verified, every inclusion proof verified\n",
            self.head.tree_size,
            self.head.root_hash,
            self.head.timestamp,
            self.head.key_id,
            self.records
        )
    }
}

/// The first check that failed: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFailure {
    /// `line 3 (evt_…)`, or `tree head`.
    pub location: String,
    /// What did not hold.
    pub reason: String,
}

impl AuditFailure {
    fn at(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            reason: reason.into(),
        }
    }

    /// The line printed: `FAIL <location>: <reason>`.
    pub fn line(&self) -> String {
        format!("FAIL {}: {}", self.location, self.reason)
    }
}

/// One record line of a bundle.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleEntry {
    leaf_index: u64,
    inclusion_proof: Vec<String>,
    record: Value,
}

/// Reads the sink's tree key from the text of `GET /v1/tree/key` (other members, such as
/// `role`, are ignored).
pub fn tree_key_from_json(text: &str) -> Result<VerifyingKey, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let public = value
        .get("public_key")
        .and_then(Value::as_str)
        .ok_or("no `public_key` string")?;
    let key = VerifyingKey::from_base64(public).map_err(|e| e.to_string())?;
    match value.get("key_id").and_then(Value::as_str) {
        Some(id) if id == key.key_id().as_str() => Ok(key),
        Some(id) => Err(format!(
            "`key_id` {id} is not the id of its public key ({})",
            key.key_id()
        )),
        None => Err("no `key_id` string".to_owned()),
    }
}

/// Checks a bundle line by line (see the module docs). `Err` is the first failure;
/// reading errors are [`ToolError`]s.
pub fn audit_bundle(
    input: impl BufRead,
    keys: &KeyRing,
    tree_key: &VerifyingKey,
) -> Result<Result<BundleSummary, AuditFailure>, ToolError> {
    let mut head: Option<(TreeHead, Hash)> = None;
    let mut records = 0u64;
    let mut ended = false;
    let mut seen_ids = std::collections::HashSet::new();
    let mut seen_leaves = std::collections::HashSet::new();

    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|source| ToolError::Read {
            path: "the bundle".into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let here = format!("line {number}");
        if ended {
            return Ok(Err(AuditFailure::at(here, "text after the end line")));
        }
        let value: Value = match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(e) => return Ok(Err(AuditFailure::at(here, format!("not JSON: {e}")))),
        };

        let Some((tree_head, root)) = &head else {
            match first_line(&value, tree_key) {
                Ok(verified) => head = Some(verified),
                Err(reason) => return Ok(Err(AuditFailure::at("tree head (line 1)", reason))),
            }
            continue;
        };

        if let Some(end) = value.get("end") {
            let stated = end.get("records").and_then(Value::as_u64);
            if stated != Some(records) {
                return Ok(Err(AuditFailure::at(
                    here,
                    format!("the end line counts {stated:?} records, the bundle holds {records}"),
                )));
            }
            ended = true;
            continue;
        }

        let entry: BundleEntry = match serde_json::from_value(value) {
            Ok(entry) => entry,
            Err(e) => {
                return Ok(Err(AuditFailure::at(
                    here,
                    format!("not a bundle entry: {e}"),
                )))
            }
        };
        let id = entry
            .record
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("no id")
            .to_owned();
        let here = format!("line {number} ({id})");
        if let Err(reason) = check_entry(&entry, keys, tree_head, root) {
            return Ok(Err(AuditFailure::at(here, reason)));
        }
        if !seen_ids.insert(id) || !seen_leaves.insert(entry.leaf_index) {
            return Ok(Err(AuditFailure::at(
                here,
                "a record or leaf appears twice",
            )));
        }
        records += 1;
    }

    let Some((head, _)) = head else {
        return Ok(Err(AuditFailure::at(
            "tree head (line 1)",
            "the bundle is empty",
        )));
    };
    if !ended {
        return Ok(Err(AuditFailure::at(
            "end",
            "the bundle has no end line: it was cut off",
        )));
    }
    Ok(Ok(BundleSummary { head, records }))
}

fn first_line(value: &Value, tree_key: &VerifyingKey) -> Result<(TreeHead, Hash), String> {
    if value.get("bundle").and_then(Value::as_str) != Some(BUNDLE_SCHEMA) {
        return Err(format!(
            "the first line is not a bundle header (`bundle`: `{BUNDLE_SCHEMA}`)"
        ));
    }
    let head_value = value
        .get("tree_head")
        .ok_or("the header has no `tree_head`")?;
    let head = verify_tree_head(head_value, tree_key).map_err(|e| e.to_string())?;
    let root = head
        .root()
        .ok_or("the tree head's root is not 64 hex digits")?;
    Ok((head, root))
}

fn check_entry(
    entry: &BundleEntry,
    keys: &KeyRing,
    head: &TreeHead,
    root: &Hash,
) -> Result<(), String> {
    let at = entry
        .record
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(record_instant);
    keys.verify(&entry.record, at)
        .map_err(|refusal| format!("signature: {}", refusal.reason()))?;

    let canonical = canonical_json(&entry.record).map_err(|e| format!("no canonical form: {e}"))?;
    let leaf = leaf_hash(&canonical);
    let proof: Option<Vec<Hash>> = entry.inclusion_proof.iter().map(|h| from_hex(h)).collect();
    let Some(proof) = proof else {
        return Err(
            "the inclusion proof holds something that is not a 64-hex-digit hash".to_owned(),
        );
    };
    if !verify_inclusion(&leaf, entry.leaf_index, head.tree_size, &proof, root) {
        return Err(format!(
            "its inclusion proof does not lead from its leaf {} (index {}) to the tree head's \
             root: the record is not the one the sink committed to",
            to_hex(&leaf),
            entry.leaf_index
        ));
    }
    Ok(())
}

/// Checks that tree head `new` extends tree head `old` through `proof` (the answer of
/// `GET /v1/tree/consistency`). `Ok` is the sentence printed.
pub fn audit_consistency(
    old: &Value,
    new: &Value,
    proof: &Value,
    tree_key: &VerifyingKey,
) -> Result<String, AuditFailure> {
    let old = verify_tree_head(old, tree_key)
        .map_err(|e| AuditFailure::at("old tree head", e.to_string()))?;
    let new = verify_tree_head(new, tree_key)
        .map_err(|e| AuditFailure::at("new tree head", e.to_string()))?;
    let first = proof.get("first").and_then(Value::as_u64);
    let second = proof.get("second").and_then(Value::as_u64);
    if first != Some(old.tree_size) || second != Some(new.tree_size) {
        return Err(AuditFailure::at(
            "proof",
            format!(
                "it is between sizes {first:?} and {second:?}, the heads have {} and {}",
                old.tree_size, new.tree_size
            ),
        ));
    }
    let hashes: Option<Vec<Hash>> = proof
        .get("consistency_proof")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().map(|h| h.as_str().and_then(from_hex)).collect());
    let Some(hashes) = hashes else {
        return Err(AuditFailure::at(
            "proof",
            "`consistency_proof` is not a list of 64-hex-digit hashes",
        ));
    };
    let (Some(old_root), Some(new_root)) = (old.root(), new.root()) else {
        return Err(AuditFailure::at(
            "tree heads",
            "a root is not 64 hex digits",
        ));
    };
    if verify_consistency(old.tree_size, new.tree_size, &old_root, &new_root, &hashes) {
        Ok(format!(
            "consistent: the tree of {} leaves (root {}, signed {}) extends the tree of {} \
             leaves (root {}, signed {}) without changing or removing any leaf\n",
            new.tree_size,
            new.root_hash,
            new.timestamp,
            old.tree_size,
            old.root_hash,
            old.timestamp
        ))
    } else {
        Err(AuditFailure::at(
            "consistency",
            format!(
                "the tree of {} leaves does not extend the tree of {} leaves: a leaf that the \
                 older head covered was changed or removed, or the proof is wrong",
                new.tree_size, old.tree_size
            ),
        ))
    }
}
