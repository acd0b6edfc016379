//! Server-Sent Events written by hand, so that a scenario can cut a stream mid-event.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;

/// The pause before each event, so that every event leaves in its own write.
const EVENT_GAP: Duration = Duration::from_millis(1);

/// One event: an optional `event:` name (Anthropic names them, OpenAI does not) and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    name: Option<&'static str>,
    data: String,
}

impl SseEvent {
    /// An unnamed event, as OpenAI sends them.
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            name: None,
            data: data.into(),
        }
    }

    /// A named event, as Anthropic sends them.
    pub fn named(name: &'static str, data: impl Into<String>) -> Self {
        Self {
            name: Some(name),
            data: data.into(),
        }
    }

    /// This event with its data cut in half, so that it is no longer JSON.
    fn with_broken_data(self) -> Self {
        if self.data == "[DONE]" {
            return self;
        }
        let half = self.data.chars().count() / 2;
        Self {
            name: self.name,
            data: self.data.chars().take(half).collect(),
        }
    }

    fn encode(&self) -> String {
        match self.name {
            Some(name) => format!("event: {name}\ndata: {}\n\n", self.data),
            None => format!("data: {}\n\n", self.data),
        }
    }
}

/// How a stream ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every event, whole.
    Complete,
    /// Every event, each with data that is not valid JSON.
    Malformed,
    /// The first half of the events, then half of the next one, then the end of the body.
    /// The body still ends cleanly (a final chunk), so a proxy sees a normal end of stream
    /// with an incomplete event in it.
    CutMidEvent,
    /// Every event, with a `: keep-alive` comment before the first and a `ping` event that
    /// has no `data` line in the middle.
    WithKeepAlives,
    /// Every event, written a few bytes at a time, so events and lines fall across writes.
    SplitWrites,
    /// The first half of the events, then this error event (the provider failing in the
    /// middle of its answer), then the end of the body.
    ProviderError(SseEvent),
}

/// Bytes per write in [`Ending::SplitWrites`]: small and odd, so that writes end inside
/// field names, JSON strings and UTF-8 characters.
const SPLIT_WRITE_BYTES: usize = 7;

/// A `text/event-stream` answer that sends `events` one write at a time.
pub fn response(events: Vec<SseEvent>, ending: Ending) -> Response {
    let frames: Vec<String> = match ending {
        Ending::Complete => events.iter().map(SseEvent::encode).collect(),
        Ending::Malformed => events
            .into_iter()
            .map(|event| event.with_broken_data().encode())
            .collect(),
        Ending::CutMidEvent => {
            let whole = events.len() / 2;
            let mut frames: Vec<String> = events.iter().take(whole).map(SseEvent::encode).collect();
            if let Some(next) = events.get(whole) {
                let encoded = next.encode();
                let half = encoded.chars().count() / 2;
                frames.push(encoded.chars().take(half).collect());
            }
            frames
        }
        Ending::WithKeepAlives => {
            let middle = events.len() / 2;
            let mut frames = vec![": keep-alive\n\n".to_owned()];
            for (index, event) in events.iter().enumerate() {
                if index == middle {
                    frames.push("event: ping\n\n".to_owned());
                }
                frames.push(event.encode());
            }
            frames
        }
        Ending::SplitWrites => {
            let whole: String = events.iter().map(SseEvent::encode).collect();
            return bytes_response(
                whole
                    .into_bytes()
                    .chunks(SPLIT_WRITE_BYTES)
                    .map(<[u8]>::to_vec)
                    .collect(),
            );
        }
        Ending::ProviderError(error) => {
            let whole = events.len() / 2;
            let mut frames: Vec<String> = events.iter().take(whole).map(SseEvent::encode).collect();
            frames.push(error.encode());
            frames
        }
    };
    bytes_response(frames.into_iter().map(String::into_bytes).collect())
}

/// A `text/event-stream` answer that sends each of `writes` on its own.
fn bytes_response(writes: Vec<Vec<u8>>) -> Response {
    let stream = futures_util::stream::iter(writes).then(|frame| async move {
        tokio::time::sleep(EVENT_GAP).await;
        Ok::<Bytes, Infallible>(Bytes::from(frame))
    });

    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
