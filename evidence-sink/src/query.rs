//! `GET /v1/evidence`: the query parameters, checked, and the three export formats.
//!
//! Parameters: `user_id`, `request_id`, `decision` (exact matches), `from` (inclusive)
//! and `to` (exclusive) as RFC 3339 instants compared with each record's `timestamp`,
//! `limit` (1 to 1000, default 100) and `format` (`json`, `jsonl` or `csv`). Anything
//! else is refused, so that a typo such as `userid=` cannot silently widen an audit.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use mercator_evidence::Decision;
use serde_json::Value;

use crate::error::SinkError;
use crate::intake::record_instant;
use crate::store::RecordFilter;

/// How many records a query returns when it does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most records one query returns.
pub const MAX_LIMIT: u32 = 1000;

/// The columns of the CSV export, in order.
pub const CSV_COLUMNS: [&str; 14] = [
    "id",
    "timestamp",
    "request_id",
    "user_id",
    "provider",
    "model",
    "decision",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "key_id",
    "signature",
];

/// The shape of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// `{"records":[…],"count":N}`.
    #[default]
    Json,
    /// One record per line.
    Jsonl,
    /// One row per record, the columns of [`CSV_COLUMNS`].
    Csv,
}

/// A checked query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceQuery {
    /// Which records.
    pub filter: RecordFilter,
    /// In which format.
    pub format: ExportFormat,
}

/// Checks the query's parameters, naming the first one that is wrong.
pub fn parse_query(pairs: &[(String, String)]) -> Result<EvidenceQuery, SinkError> {
    let mut filter = RecordFilter {
        limit: DEFAULT_LIMIT,
        ..RecordFilter::default()
    };
    let mut format = ExportFormat::default();
    let mut seen: Vec<&str> = Vec::new();

    for (name, value) in pairs {
        if seen.contains(&name.as_str()) {
            return Err(invalid(name, "is given more than once"));
        }
        seen.push(name);

        match name.as_str() {
            "user_id" => filter.user_id = Some(value.clone()),
            "request_id" => filter.request_id = Some(value.clone()),
            "decision" => filter.decision = Some(decision(value)?),
            "from" => filter.from_unix_ns = Some(instant(name, value)?),
            "to" => filter.to_unix_ns = Some(instant(name, value)?),
            "limit" => filter.limit = limit(value)?,
            "format" => format = export_format(value)?,
            _ => {
                return Err(invalid(
                    name,
                    "is not known; use user_id, request_id, decision, from, to, limit or format",
                ))
            }
        }
    }

    Ok(EvidenceQuery { filter, format })
}

fn invalid(parameter: &str, message: &str) -> SinkError {
    let parameter = if parameter.chars().count() > 64 {
        parameter.chars().take(64).collect::<String>() + "…"
    } else {
        parameter.to_owned()
    };
    SinkError::InvalidQuery {
        parameter,
        message: message.to_owned(),
    }
}

/// Checks a decision against the record schema's own list, so that a typo is refused
/// instead of matching nothing.
fn decision(value: &str) -> Result<String, SinkError> {
    serde_json::from_value::<Decision>(Value::String(value.to_owned()))
        .map(|decision| decision.as_str().to_owned())
        .map_err(|_| {
            invalid(
                "decision",
                "must be one of allow, deny, unauthenticated, invalid, error",
            )
        })
}

fn instant(name: &str, value: &str) -> Result<i64, SinkError> {
    if let Some(nanos) = record_instant(value) {
        return Ok(nanos);
    }

    // In a query string `+` means a space, so an offset such as `+01:00` arrives broken.
    let hint = if value.contains(' ') {
        " (write `+` in an offset as %2B)"
    } else {
        ""
    };
    Err(invalid(
        name,
        &format!(
            "must be an RFC 3339 instant such as 2026-12-03T10:30:00Z, between the years \
             1678 and 2262{hint}"
        ),
    ))
}

fn limit(value: &str) -> Result<u32, SinkError> {
    match value.parse::<u32>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(invalid(
            "limit",
            &format!("must be a whole number from 1 to {MAX_LIMIT}"),
        )),
    }
}

fn export_format(value: &str) -> Result<ExportFormat, SinkError> {
    match value {
        "json" => Ok(ExportFormat::Json),
        "jsonl" => Ok(ExportFormat::Jsonl),
        "csv" => Ok(ExportFormat::Csv),
        _ => Err(invalid("format", "must be json, jsonl or csv")),
    }
}

/// Renders stored record texts in `format`. The JSON forms embed each text verbatim, so
/// an exported record is byte for byte the one `GET /v1/evidence/{id}` returns.
pub fn render(format: ExportFormat, records: &[String]) -> Result<Response, SinkError> {
    match format {
        ExportFormat::Json => {
            let body = format!(
                r#"{{"records":[{}],"count":{}}}"#,
                records.join(","),
                records.len()
            );
            Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
        }
        ExportFormat::Jsonl => {
            let body: String = records.iter().map(|text| format!("{text}\n")).collect();
            Ok(([(CONTENT_TYPE, "application/x-ndjson")], body).into_response())
        }
        ExportFormat::Csv => {
            let body = csv_of(records)?;
            Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
        }
    }
}

/// The CSV export: one header row, then one row per record.
///
/// Cells are the record's values as they are. A spreadsheet may read a cell that starts
/// with `=` as a formula, and `request_id` comes from a header that clients can set; the
/// export does not alter cells against that, so open it as text or import it, do not
/// double-click it.
fn csv_of(records: &[String]) -> Result<Vec<u8>, SinkError> {
    let csv_error = |e: csv::Error| SinkError::Internal(format!("CSV export failed: {e}"));
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(CSV_COLUMNS).map_err(csv_error)?;

    for text in records {
        let record: Value = serde_json::from_str(text)
            .map_err(|e| SinkError::Internal(format!("a stored record does not parse: {e}")))?;
        let row = [
            cell(record.pointer("/id")),
            cell(record.pointer("/timestamp")),
            cell(record.pointer("/request_id")),
            cell(record.pointer("/user_id")),
            cell(record.pointer("/provider")),
            cell(record.pointer("/model")),
            cell(record.pointer("/decision")),
            cell(record.pointer("/response/status")),
            cell(record.pointer("/token_usage/prompt_tokens")),
            cell(record.pointer("/token_usage/completion_tokens")),
            cell(record.pointer("/token_usage/total_tokens")),
            cell(record.pointer("/cost")),
            cell(record.pointer("/key_id")),
            cell(record.pointer("/signature")),
        ];
        writer.write_record(&row).map_err(csv_error)?;
    }

    writer
        .into_inner()
        .map_err(|e| SinkError::Internal(format!("CSV export failed: {e}")))
}

/// A JSON value as a CSV cell: strings as they are, `null` and missing as empty, other
/// values as their JSON text.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn refused_parameter(list: &[(&str, &str)]) -> String {
        match parse_query(&pairs(list)) {
            Err(SinkError::InvalidQuery { parameter, .. }) => parameter,
            other => panic!("expected invalid_query, got {other:?}"),
        }
    }

    #[test]
    fn no_parameters_give_the_default_limit_and_json() {
        let query = parse_query(&[]).unwrap();

        assert_eq!(query.filter.limit, DEFAULT_LIMIT);
        assert_eq!(query.format, ExportFormat::Json);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        assert_eq!(refused_parameter(&[("from", "yesterday")]), "from");
        assert_eq!(refused_parameter(&[("to", "2026-13-01T00:00:00Z")]), "to");
        assert_eq!(refused_parameter(&[("limit", "0")]), "limit");
        assert_eq!(refused_parameter(&[("limit", "1001")]), "limit");
        assert_eq!(refused_parameter(&[("limit", "-1")]), "limit");
        assert_eq!(refused_parameter(&[("format", "xml")]), "format");
        assert_eq!(refused_parameter(&[("decision", "maybe")]), "decision");
        assert_eq!(refused_parameter(&[("userid", "a")]), "userid");
        assert_eq!(
            refused_parameter(&[("user_id", "a"), ("user_id", "b")]),
            "user_id"
        );
    }

    #[test]
    fn an_offset_broken_by_query_decoding_gets_a_hint() {
        let Err(error) = parse_query(&pairs(&[("from", "2026-12-03T10:30:00 01:00")])) else {
            panic!("a space is not an offset");
        };

        assert!(error.to_string().contains("%2B"));
    }

    #[test]
    fn csv_cells_are_quoted_when_they_need_it() {
        let record = r#"{"id":"evt_1","request_id":"a,\"b\"\nc","cost":0.5,"token_usage":null,"response":{"status":200}}"#;

        let text = String::from_utf8(csv_of(&[record.to_owned()]).unwrap()).unwrap();

        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(&row[0], "evt_1");
        assert_eq!(&row[2], "a,\"b\"\nc");
        assert_eq!(&row[7], "200");
        assert_eq!(&row[8], "");
        assert_eq!(&row[11], "0.5");
    }
}
