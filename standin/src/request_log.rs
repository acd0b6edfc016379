//! The record of what reached the stand-in, read by tests through `GET /_standin/requests`.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use axum::http::request::Parts;
use serde::Serialize;

/// How many requests the log keeps; older ones are dropped first.
pub const REQUEST_LOG_CAPACITY: usize = 1000;

/// One request as it arrived, headers and body untouched (the body lossily as UTF-8).
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// The method, such as `POST`.
    pub method: String,
    /// The path with its query, such as `/v1/chat/completions`.
    pub path: String,
    /// Every header in arrival order, as `[name, value]`.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl RecordedRequest {
    /// Records a request from its head and its whole body.
    pub fn new(parts: &Parts, body: &[u8]) -> Self {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |path| path.as_str());
        Self {
            method: parts.method.to_string(),
            path: path.to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

/// The last [`REQUEST_LOG_CAPACITY`] requests, oldest first.
#[derive(Debug, Default)]
pub struct RequestLog {
    requests: Mutex<VecDeque<RecordedRequest>>,
}

impl RequestLog {
    /// Appends a request, dropping the oldest one when the log is full.
    pub fn push(&self, request: RecordedRequest) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.push_back(request);
        while requests.len() > REQUEST_LOG_CAPACITY {
            requests.pop_front();
        }
    }

    /// A copy of the log, oldest first.
    pub fn snapshot(&self) -> Vec<RecordedRequest> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.iter().cloned().collect()
    }

    /// Forgets every request.
    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    #[test]
    fn log_keeps_only_the_newest_requests() {
        let log = RequestLog::default();
        for index in 0..REQUEST_LOG_CAPACITY + 5 {
            let (parts, ()) = Request::post(format!("/v1/chat/completions?i={index}"))
                .body(())
                .unwrap()
                .into_parts();
            log.push(RecordedRequest::new(&parts, b"{}"));
        }

        let requests = log.snapshot();
        assert_eq!(requests.len(), REQUEST_LOG_CAPACITY);
        assert_eq!(requests[0].path, "/v1/chat/completions?i=5");
        assert_eq!(
            requests[REQUEST_LOG_CAPACITY - 1].path,
            format!("/v1/chat/completions?i={}", REQUEST_LOG_CAPACITY + 4)
        );
    }
}
