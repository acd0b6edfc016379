//! The one error type of the sink's HTTP service and the one place it becomes a response.
//!
//! Every refusal has the body `{"error":{"code":"…","message":"…"}}`; the codes are stable
//! and part of the sink's contract with the filter and with auditors' tools. Client
//! mistakes are answered and logged at debug at most; internal failures are logged once,
//! here, at error level, and answered without their details.

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::store::Removal;

/// Why the sink refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The body is not JSON at all (syntax, encoding, or nested deeper than the parser's
    /// limit of 128 levels).
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),

    /// The body is JSON but not a record, or a record lacks a member the sink needs.
    #[error("{0}")]
    InvalidRecord(String),

    /// A record's signature is malformed, or was made over other content or by another key.
    #[error("{0}")]
    SignatureInvalid(String),

    /// A record names a `key_id` that the sink was not started with.
    #[error("{0}")]
    UnknownKey(String),

    /// A record's signature is good, but its timestamp is outside its key's validity
    /// window: the key was not yet valid, rotated out or revoked.
    #[error("{0}")]
    KeyNotValid(String),

    /// A record's id is already stored with different content; evidence is never replaced.
    #[error("{0}")]
    ConflictingDuplicate(String),

    /// The body is longer than `--max-body-bytes`.
    #[error("the body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },

    /// The body could not be read to its end (the client went away, say).
    #[error("the body could not be read: {0}")]
    BodyUnreadable(String),

    /// A query parameter is unknown, repeated or has a value the sink cannot use.
    #[error("query parameter `{parameter}`: {message}")]
    InvalidQuery {
        /// The parameter's name as the client sent it.
        parameter: String,
        /// What is wrong with it.
        message: String,
    },

    /// The request needs the operator token and sent none.
    #[error("this endpoint needs the operator token: send `Authorization: Bearer <token>`")]
    OperatorTokenRequired,

    /// The request sent a token that is not the operator token.
    #[error("the operator token is not valid")]
    OperatorTokenInvalid,

    /// The sink was started without an operator token hash, so nobody may use this endpoint.
    #[error(
        "no operator token is configured (--operator-token-sha256), so query, export, \
         erasure and pruning are off"
    )]
    OperatorTokenNotConfigured,

    /// The record's content was erased or pruned; its leaf stays in the tree.
    #[error("{message}")]
    Removed {
        /// Erased or pruned.
        how: Removal,
        /// What happened and when.
        message: String,
    },

    /// No record, or no route, has this name.
    #[error("{0}")]
    NotFound(String),

    /// The route exists but not with this method.
    #[error("this path does not answer {0}")]
    MethodNotAllowed(String),

    /// SQLite failed. Logged with its cause; the client sees only that storage failed.
    #[error("the evidence store failed: {0}")]
    Database(#[from] rusqlite::Error),

    /// PostgreSQL failed (refused, unreachable, a constraint or trigger). Logged with its
    /// cause; the client sees only that storage failed.
    #[error("the evidence store failed: {}", postgres_cause(.0))]
    Postgres(#[from] tokio_postgres::Error),

    /// A failure that is the sink's own fault (a blocking task that did not finish, a
    /// stored record that no longer parses). Logged with its cause.
    #[error("internal error: {0}")]
    Internal(String),
}

/// tokio-postgres shows only "db error" or "error connecting to server"; the log needs the
/// server's message (or the I/O cause) and its SQLSTATE.
pub(crate) fn postgres_cause(error: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match (error.as_db_error(), error.source()) {
        (Some(db), _) => format!(
            "{}: {} (SQLSTATE {})",
            error,
            db.message(),
            db.code().code()
        ),
        (None, Some(source)) => format!("{error}: {source}"),
        (None, None) => error.to_string(),
    }
}

impl SinkError {
    /// The status code and stable code that this error is answered with.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            Self::InvalidRecord(_) => (StatusCode::BAD_REQUEST, "invalid_record"),
            Self::SignatureInvalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "signature_invalid"),
            Self::UnknownKey(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_key"),
            Self::KeyNotValid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "key_not_valid"),
            Self::ConflictingDuplicate(_) => (StatusCode::CONFLICT, "conflicting_duplicate"),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::BodyUnreadable(_) => (StatusCode::BAD_REQUEST, "body_unreadable"),
            Self::InvalidQuery { .. } => (StatusCode::BAD_REQUEST, "invalid_query"),
            Self::OperatorTokenRequired => (StatusCode::UNAUTHORIZED, "operator_token_required"),
            Self::OperatorTokenInvalid => (StatusCode::UNAUTHORIZED, "operator_token_invalid"),
            Self::OperatorTokenNotConfigured => {
                (StatusCode::FORBIDDEN, "operator_token_not_configured")
            }
            Self::Removed { how, .. } => (StatusCode::GONE, how.as_str()),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Database(_) | Self::Postgres(_) | Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }
}

impl IntoResponse for SinkError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();

        let message = if status.is_server_error() {
            tracing::error!(error = %self, "request failed inside the sink");
            "the evidence sink failed to handle the request; its log has the cause".to_owned()
        } else {
            tracing::debug!(error.code = code, error = %self, "request refused");
            self.to_string()
        };

        let body = json!({ "error": { "code": code, "message": message } });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mercator-evidence-sink\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_show_their_cause_to_the_client() {
        let response = SinkError::Internal("secret path /var/x".to_owned()).into_response();

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn every_client_error_has_a_four_hundred_status() {
        let errors = [
            SinkError::InvalidJson("x".to_owned()),
            SinkError::InvalidRecord("x".to_owned()),
            SinkError::SignatureInvalid("x".to_owned()),
            SinkError::UnknownKey("x".to_owned()),
            SinkError::ConflictingDuplicate("x".to_owned()),
            SinkError::BodyTooLarge { limit: 1 },
            SinkError::BodyUnreadable("x".to_owned()),
            SinkError::NotFound("x".to_owned()),
            SinkError::KeyNotValid("x".to_owned()),
            SinkError::OperatorTokenRequired,
            SinkError::OperatorTokenInvalid,
            SinkError::OperatorTokenNotConfigured,
            SinkError::Removed {
                how: Removal::Erased,
                message: "x".to_owned(),
            },
        ];

        for error in errors {
            assert!(error.status_and_code().0.is_client_error(), "{error:?}");
        }
    }
}
