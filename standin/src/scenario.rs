//! Test scenarios, chosen per request with the `x-standin-scenario` header.

use axum::http::HeaderMap;

use crate::error::StandinError;

/// The request header that chooses a scenario.
pub const SCENARIO_HEADER: &str = "x-standin-scenario";

/// How the stand-in misbehaves for one request; `Normal` when the header is absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A well-formed answer.
    Normal,
    /// Status 200 with a body that is not valid JSON (for streams: events whose data is not JSON).
    Malformed,
    /// A well-formed answer without any usage.
    MissingUsage,
    /// A well-formed answer whose token counts are negative.
    NegativeUsage,
    /// Status 500 with the provider's error object.
    Error500,
    /// Waits two seconds, then answers normally.
    Slow,
    /// A stream that stops in the middle of an event, without its final events.
    CutStream,
    /// A stream with a keep-alive comment and an event that has no `data` line.
    KeepAlive,
    /// A stream written a few bytes at a time.
    SplitEvents,
    /// A stream that the provider ends half-way with its own error event.
    StreamError,
}

impl Scenario {
    /// The header values, in the order of the variants after `Normal`.
    pub const NAMES: [&'static str; 9] = [
        "malformed",
        "missing-usage",
        "negative-usage",
        "error-500",
        "slow",
        "cut-stream",
        "keep-alive",
        "split-events",
        "stream-error",
    ];

    /// The scenario a request asks for; an unknown name is the caller's mistake.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, StandinError> {
        let Some(value) = headers.get(SCENARIO_HEADER) else {
            return Ok(Self::Normal);
        };
        let name = value
            .to_str()
            .map_err(|_| StandinError::UnknownScenario("<not visible ASCII>".to_owned()))?;

        match name.trim() {
            "malformed" => Ok(Self::Malformed),
            "missing-usage" => Ok(Self::MissingUsage),
            "negative-usage" => Ok(Self::NegativeUsage),
            "error-500" => Ok(Self::Error500),
            "slow" => Ok(Self::Slow),
            "cut-stream" => Ok(Self::CutStream),
            "keep-alive" => Ok(Self::KeepAlive),
            "split-events" => Ok(Self::SplitEvents),
            "stream-error" => Ok(Self::StreamError),
            other => Err(StandinError::UnknownScenario(other.to_owned())),
        }
    }

    /// The name as it appears in the header, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Malformed => "malformed",
            Self::MissingUsage => "missing-usage",
            Self::NegativeUsage => "negative-usage",
            Self::Error500 => "error-500",
            Self::Slow => "slow",
            Self::CutStream => "cut-stream",
            Self::KeepAlive => "keep-alive",
            Self::SplitEvents => "split-events",
            Self::StreamError => "stream-error",
        }
    }

    /// Whether this scenario only makes sense for a streaming request.
    pub(crate) fn needs_stream(self) -> bool {
        matches!(
            self,
            Self::CutStream | Self::KeepAlive | Self::SplitEvents | Self::StreamError
        )
    }

    /// What the answer's usage looks like under this scenario.
    pub(crate) fn usage_mode(self) -> UsageMode {
        match self {
            Self::MissingUsage => UsageMode::Missing,
            Self::NegativeUsage => UsageMode::Negative,
            _ => UsageMode::Reported,
        }
    }
}

/// How usage appears in an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UsageMode {
    /// The estimated counts.
    Reported,
    /// No usage at all.
    Missing,
    /// The estimated counts, negated (totals stay the sum of their parts).
    Negative,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn every_listed_name_parses_and_round_trips() {
        for name in Scenario::NAMES {
            let mut headers = HeaderMap::new();
            headers.insert(SCENARIO_HEADER, HeaderValue::from_static(name));
            let scenario = Scenario::from_headers(&headers).unwrap();
            assert_eq!(scenario.name(), name);
        }
    }

    #[test]
    fn absent_header_is_the_normal_scenario() {
        assert_eq!(
            Scenario::from_headers(&HeaderMap::new()).unwrap(),
            Scenario::Normal
        );
    }
}
