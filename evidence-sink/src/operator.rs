//! The operator token: what query, export, erasure and pruning require.
//!
//! The sink is configured with the token's SHA-256 only (64 hex digits, from
//! `--operator-token-sha256` or `MERCATOR_OPERATOR_TOKEN_SHA256`), never with the token.
//! A request presents the token as `Authorization: Bearer <token>`; the sink hashes it and
//! compares the two digests in constant time. Without a configured hash, every operator
//! endpoint refuses (fail closed) while ingestion, keys, tree heads and proofs still work.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::SinkError;
use crate::http::AppState;

/// The SHA-256 of the operator token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OperatorToken([u8; 32]);

impl OperatorToken {
    /// Reads the hash from 64 hex digits; `None` for anything else.
    pub fn from_sha256_hex(text: &str) -> Option<Self> {
        mercator_evidence::merkle::from_hex(text.trim()).map(Self)
    }

    /// The hash of a plain token, for tests and tools.
    pub fn of_token(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn admits(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(sha256:…)")
    }
}

/// A request that presented the operator token. Add it to a handler's arguments to make
/// the handler an operator endpoint.
#[derive(Debug)]
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = SinkError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, SinkError> {
        let Some(expected) = state.operator else {
            return Err(SinkError::OperatorTokenNotConfigured);
        };
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        match presented {
            None => Err(SinkError::OperatorTokenRequired),
            Some(token) if expected.admits(token) => Ok(Operator),
            Some(_) => Err(SinkError::OperatorTokenInvalid),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110, 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_admitted_only_by_its_own_hash() {
        let hash = OperatorToken::of_token("mjop_secret");
        let hex: String = Sha256::digest(b"mjop_secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();

        assert_eq!(OperatorToken::from_sha256_hex(&hex), Some(hash));
        assert!(hash.admits("mjop_secret"));
        assert!(!hash.admits("mjop_secreT"));
        assert!(!hash.admits(""));
        assert_eq!(OperatorToken::from_sha256_hex("mjop_secret"), None);
        assert!(!format!("{hash:?}").contains(&hex[..8]));
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_other_schemes_are_not() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
