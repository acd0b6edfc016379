//! The evidence record of Mercator Jupiter and everything both of its ends must agree on.
//!
//! The gateway's filter (inside Envoy, compiled to `wasm32-wasip1`) builds one
//! [`EvidenceRecord`] per request and signs it; the evidence sink verifies, stores and
//! serves it; an auditor verifies it again, years later, with any language. This crate is
//! the single definition of that contract, used natively by the sink and its tools and
//! compiled into the filter.
//!
//! # What is signed
//!
//! A record travels as a JSON object. Its `signature` member is the standard base64
//! (RFC 4648, with padding) of an Ed25519 signature (RFC 8032, pure Ed25519, no
//! pre-hash) over the RFC 8785 (JSON Canonicalization Scheme) serialization of the same
//! object **without** its `signature` member. Every other member, including ones this
//! version does not know, is covered. To verify by hand:
//!
//! 1. parse the record, remove `signature`, keep it aside;
//! 2. canonicalize the rest with any RFC 8785 implementation, giving UTF-8 bytes;
//! 3. find the public key whose key id equals the record's `key_id`;
//! 4. check the Ed25519 signature over those bytes.
//!
//! # Key ids
//!
//! A public key is the raw 32-byte Ed25519 key, exchanged as standard base64. Its key id
//! is `ed25519:` followed by the lowercase hex of the first 8 bytes of SHA-256 over those
//! 32 bytes, so anyone holding the public key can derive the id and nobody can pick an
//! id for a key they do not hold.
//!
//! # The Merkle tree and the signed tree head
//!
//! The sink appends every record it accepts to a Merkle tree in the style of RFC 6962 /
//! RFC 9162 ([`merkle`]): the leaf of a record is `SHA-256(0x00 || c)` where `c` is the
//! record's RFC 8785 canonical JSON **with** its `signature` (exactly the bytes the sink
//! stores and serves), an interior node is `SHA-256(0x01 || left || right)`, and leaves
//! are numbered from 0 in the order the sink accepted them. The sink signs the tree's
//! size and root with its own Ed25519 key ([`tree_head`]), by the same rule as records:
//! the signature covers the canonical JSON of the head without `signature`.
//!
//! # Testing
//!
//! `cargo test -p mercator-evidence` runs the unit tests, which include a fixed vector
//! that the Python integration tests check with independent RFC 8785 and Ed25519 code.

mod keys;
pub mod merkle;
mod record;
mod signing;
pub mod tree_head;

pub use keys::{KeyError, KeyId, SigningKey, VerifyingKey};
pub use record::{
    AppliedObligations, AuthEvidence, AuthMethod, AuthResult, CertificateEvidence, Decision,
    EvidenceRecord, ExchangeEvidence, GatewayError, PolicyDecision, PolicyPhase, PolicyVerdict,
    TokenUsage, RECORD_SCHEMA,
};
pub use signing::{canonical_json, signing_payload, verify_record, EvidenceError, Verdict};
pub use tree_head::{verify_tree_head, TreeHead, TreeHeadError, TREE_HEAD_SCHEMA};
