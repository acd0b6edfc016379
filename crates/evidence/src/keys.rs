//! Ed25519 keys as the gateway and the sink exchange them, and the key ids derived from them.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use sha2::{Digest, Sha256};

/// Why a key could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not standard base64.
    #[error("the key is not valid base64")]
    NotBase64,
    /// The decoded key does not have the 32 bytes that an Ed25519 key has.
    #[error("an Ed25519 key has 32 bytes, this one has {0}")]
    WrongLength(usize),
    /// The 32 bytes are not a point on the curve, so no signature could ever verify.
    #[error("the bytes are not a valid Ed25519 public key")]
    NotOnCurve,
}

/// The id of a verifying key: `ed25519:` and 16 lowercase hex digits (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Derives the id of a raw 32-byte public key.
    pub fn of_public_key(public_key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public_key);
        let hex: String = digest
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self(format!("ed25519:{hex}"))
    }

    /// The id as it appears in records and in `GET /v1/keys`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The gateway's private signing key. Not `Debug`, not `Display`, zeroised on drop (by
/// `ed25519-dalek`'s `zeroize` feature), so it cannot end up in a log by accident.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    id: KeyId,
}

impl SigningKey {
    /// Builds a key from its 32-byte seed, which must come from a secure random source.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let id = KeyId::of_public_key(key.verifying_key().as_bytes());
        Self { key, id }
    }

    /// Reads a key from the standard base64 of its seed, as `MERCATOR_SIGNING_KEY` holds it.
    ///
    /// ```
    /// use mercator_evidence::{KeyError, SigningKey};
    /// assert!(SigningKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_ok());
    /// assert_eq!(SigningKey::from_base64("c2hvcnQ=").err(), Some(KeyError::WrongLength(5)));
    /// ```
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let seed = decode_32(text)?;
        Ok(Self::from_seed(&seed))
    }

    /// The seed as standard base64, for writing a newly generated key to a file once.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.key.to_bytes())
    }

    /// The id of this key's public half.
    pub fn key_id(&self) -> &KeyId {
        &self.id
    }

    /// The public half, to publish to the sink and to auditors.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            key: self.key.verifying_key(),
            id: self.id.clone(),
        }
    }

    /// Signs arbitrary bytes; records are signed through [`EvidenceRecord::sign`].
    ///
    /// [`EvidenceRecord::sign`]: crate::EvidenceRecord::sign
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// A public key that verifies records, with its derived id.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    key: ed25519_dalek::VerifyingKey,
    id: KeyId,
}

impl VerifyingKey {
    /// Reads a public key from the standard base64 of its 32 raw bytes.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = decode_32(text)?;
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotOnCurve)?;
        Ok(Self {
            key,
            id: KeyId::of_public_key(&bytes),
        })
    }

    /// The raw 32 bytes as standard base64.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.key.as_bytes())
    }

    /// The derived id of this key.
    pub fn key_id(&self) -> &KeyId {
        &self.id
    }

    /// Checks a signature, rejecting the malleable and small-order forms (`verify_strict`).
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.key.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("key_id", &self.id)
            .finish()
    }
}

fn decode_32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongLength(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_prefix_and_sixteen_hex_digits_of_the_public_key_digest() {
        let key = SigningKey::from_seed(&[7; 32]);
        let id = key.key_id().as_str().to_owned();

        assert!(id.starts_with("ed25519:"));
        assert_eq!(id.len(), "ed25519:".len() + 16);
        assert_eq!(key.verifying_key().key_id().as_str(), id);
    }

    #[test]
    fn seed_round_trips_through_base64() {
        let key = SigningKey::from_seed(&[9; 32]);
        let again = SigningKey::from_base64(&key.to_base64()).unwrap();

        assert_eq!(again.key_id(), key.key_id());
    }

    #[test]
    fn public_key_round_trips_and_keeps_its_id() {
        let public = SigningKey::from_seed(&[3; 32]).verifying_key();
        let again = VerifyingKey::from_base64(&public.to_base64()).unwrap();

        assert_eq!(again, public);
    }

    #[test]
    fn bad_key_text_is_named() {
        assert_eq!(
            VerifyingKey::from_base64("%%%").err(),
            Some(KeyError::NotBase64)
        );
        assert_eq!(
            VerifyingKey::from_base64("AAAA").err(),
            Some(KeyError::WrongLength(3))
        );
    }

    #[test]
    fn debug_of_a_public_key_shows_only_its_id() {
        let public = SigningKey::from_seed(&[1; 32]).verifying_key();

        let shown = format!("{public:?}");

        assert!(shown.contains("ed25519:"));
        assert!(!shown.contains(&public.to_base64()));
    }
}
