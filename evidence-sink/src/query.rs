//! The query parameters of `GET /v1/evidence` (a page), `GET /v1/evidence/export` (every
//! matching record, streamed) and `GET /v1/evidence/bundle` (records with their proofs),
//! checked, and the three export formats.
//!
//! Filters, on every one of them: `user_id`, `request_id`, `provider`, `model`,
//! `decision` (exact matches), `from` (inclusive) and `to` (exclusive) as RFC 3339
//! instants compared with each record's `timestamp`. A page also takes `limit` (1 to 1000,
//! default 100) and `cursor` (the `next_cursor` of the page before); a page and an export
//! take `format` (`json`, `jsonl` or `csv`). Anything else is refused, so that a typo such
//! as `userid=` cannot silently widen an audit, and so is a range whose `from` is not
//! before its `to`.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use mercator_evidence::Decision;
use serde_json::Value;

use crate::error::SinkError;
use crate::intake::record_instant;
use crate::store::{RecordFilter, StoredRow};

/// How many records a page holds when the query does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most records one page holds.
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
    /// `{"records":[…],"count":N}` (a page adds `next_cursor`).
    #[default]
    Json,
    /// One record per line.
    Jsonl,
    /// One row per record, the columns of [`CSV_COLUMNS`].
    Csv,
}

/// Which endpoint the parameters are for: each takes a different set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `GET /v1/evidence`: filters, `limit`, `cursor`, `format`.
    Page,
    /// `GET /v1/evidence/export`: filters and `format`.
    Export,
    /// `GET /v1/evidence/bundle`: filters only.
    Bundle,
}

/// A checked query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceQuery {
    /// Which records.
    pub filter: RecordFilter,
    /// In which format.
    pub format: ExportFormat,
    /// At most this many (pages only).
    pub limit: u32,
    /// After this position (pages only; 0 from the start).
    pub cursor: i64,
}

/// Checks the query's parameters for `kind`, naming the first one that is wrong.
pub fn parse_query(
    pairs: &[(String, String)],
    kind: QueryKind,
) -> Result<EvidenceQuery, SinkError> {
    let mut query = EvidenceQuery {
        filter: RecordFilter::default(),
        format: ExportFormat::default(),
        limit: DEFAULT_LIMIT,
        cursor: 0,
    };
    let mut seen: Vec<&str> = Vec::new();
    let page = kind == QueryKind::Page;
    let formatted = kind != QueryKind::Bundle;

    for (name, value) in pairs {
        if seen.contains(&name.as_str()) {
            return Err(invalid(name, "is given more than once"));
        }
        seen.push(name);

        match name.as_str() {
            "user_id" => query.filter.user_id = Some(value.clone()),
            "request_id" => query.filter.request_id = Some(value.clone()),
            "provider" => query.filter.provider = Some(value.clone()),
            "model" => query.filter.model = Some(value.clone()),
            "decision" => query.filter.decision = Some(decision(value)?),
            "from" => query.filter.from_unix_ns = Some(instant(name, value)?),
            "to" => query.filter.to_unix_ns = Some(instant(name, value)?),
            "limit" if page => query.limit = limit(value)?,
            "cursor" if page => query.cursor = cursor(value)?,
            "format" if formatted => query.format = export_format(value)?,
            _ => {
                let known = match kind {
                    QueryKind::Page => "user_id, request_id, provider, model, decision, from, to, limit, cursor or format",
                    QueryKind::Export => "user_id, request_id, provider, model, decision, from, to or format",
                    QueryKind::Bundle => "user_id, request_id, provider, model, decision, from or to",
                };
                return Err(invalid(name, &format!("is not known here; use {known}")));
            }
        }
    }

    if let (Some(from), Some(to)) = (query.filter.from_unix_ns, query.filter.to_unix_ns) {
        if from >= to {
            return Err(invalid(
                "to",
                "must be later than `from`: the range is from (inclusive) to (exclusive)",
            ));
        }
    }
    Ok(query)
}

/// A tree size or a leaf count from a query string.
pub fn size_parameter(name: &str, value: &str) -> Result<u64, SinkError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|size| *size <= i64::MAX as u64)
        .ok_or_else(|| invalid(name, "must be a whole number of leaves"))
}

fn cursor(value: &str) -> Result<i64, SinkError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|position| *position >= 0)
        .ok_or_else(|| invalid("cursor", "must be the next_cursor of an earlier page"))
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

/// Renders a page of records in `format`, with the cursor of the next page if there may be
/// one. The JSON forms embed each text verbatim, so an exported record is byte for byte the
/// one `GET /v1/evidence/{id}` returns.
pub fn render_page(
    format: ExportFormat,
    rows: &[StoredRow],
    next_cursor: Option<i64>,
) -> Result<Response, SinkError> {
    let texts: Vec<&str> = rows.iter().map(|row| row.text.as_str()).collect();
    let next = next_cursor.map(|position| position.to_string());
    let mut response = match format {
        ExportFormat::Json => {
            let cursor = next
                .as_ref()
                .map_or_else(|| "null".to_owned(), |c| format!("\"{c}\""));
            let body = format!(
                r#"{{"records":[{}],"count":{},"next_cursor":{cursor}}}"#,
                texts.join(","),
                texts.len()
            );
            ([(CONTENT_TYPE, "application/json")], body).into_response()
        }
        ExportFormat::Jsonl => {
            let body: String = texts.iter().map(|text| format!("{text}\n")).collect();
            ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        ExportFormat::Csv => {
            let mut body = csv_header()?;
            body.extend(csv_rows(&texts)?);
            ([(CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
        }
    };
    if let Some(next) = next {
        if let Ok(value) = next.parse() {
            response.headers_mut().insert(NEXT_CURSOR_HEADER, value);
        }
    }
    Ok(response)
}

/// The header that carries a page's next cursor in every format.
pub const NEXT_CURSOR_HEADER: &str = "x-mercator-next-cursor";

/// The content type of an export in `format`.
pub fn content_type(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Json => "application/json",
        ExportFormat::Jsonl => "application/x-ndjson",
        ExportFormat::Csv => "text/csv; charset=utf-8",
    }
}

/// The CSV header line.
pub fn csv_header() -> Result<Vec<u8>, SinkError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(CSV_COLUMNS).map_err(csv_error)?;
    writer
        .into_inner()
        .map_err(|e| SinkError::Internal(format!("CSV export failed: {e}")))
}

fn csv_error(e: csv::Error) -> SinkError {
    SinkError::Internal(format!("CSV export failed: {e}"))
}

/// CSV rows, one per record, without the header.
///
/// Cells are the record's values as they are. A spreadsheet may read a cell that starts
/// with `=` as a formula, and `request_id` comes from a header that clients can set; the
/// export does not alter cells against that, so open it as text or import it, do not
/// double-click it.
pub fn csv_rows(records: &[&str]) -> Result<Vec<u8>, SinkError> {
    let mut writer = csv::Writer::from_writer(Vec::new());

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
        match parse_query(&pairs(list), QueryKind::Page) {
            Err(SinkError::InvalidQuery { parameter, .. }) => parameter,
            other => panic!("expected invalid_query, got {other:?}"),
        }
    }

    #[test]
    fn no_parameters_give_the_default_limit_and_json() {
        let query = parse_query(&[], QueryKind::Page).unwrap();

        assert_eq!(query.limit, DEFAULT_LIMIT);
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
        assert_eq!(refused_parameter(&[("cursor", "-4")]), "cursor");
        assert_eq!(
            refused_parameter(&[
                ("from", "2026-12-03T10:00:00Z"),
                ("to", "2026-12-03T10:00:00Z")
            ]),
            "to"
        );
        assert_eq!(
            refused_parameter(&[
                ("from", "2026-12-03T11:00:00+01:00"),
                ("to", "2026-12-03T09:59:00Z")
            ]),
            "to"
        );
    }

    #[test]
    fn each_endpoint_takes_only_its_own_parameters() {
        let limited = pairs(&[("limit", "5")]);
        let formatted = pairs(&[("format", "csv")]);

        assert!(parse_query(&limited, QueryKind::Export).is_err());
        assert!(parse_query(&formatted, QueryKind::Bundle).is_err());
        let export = parse_query(&formatted, QueryKind::Export).unwrap();
        assert_eq!(export.format, ExportFormat::Csv);
        let all = parse_query(
            &pairs(&[("provider", "openai"), ("model", "gpt-4"), ("cursor", "12")]),
            QueryKind::Page,
        )
        .unwrap();
        assert_eq!(all.filter.provider.as_deref(), Some("openai"));
        assert_eq!(all.filter.model.as_deref(), Some("gpt-4"));
        assert_eq!(all.cursor, 12);
    }

    #[test]
    fn an_offset_broken_by_query_decoding_gets_a_hint() {
        let Err(error) = parse_query(
            &pairs(&[("from", "2026-12-03T10:30:00 01:00")]),
            QueryKind::Page,
        ) else {
            panic!("a space is not an offset");
        };

        assert!(error.to_string().contains("%2B"));
    }

    #[test]
    fn csv_cells_are_quoted_when_they_need_it() {
        let record = r#"{"id":"evt_1","request_id":"a,\"b\"\nc","cost":0.5,"token_usage":null,"response":{"status":200}}"#;

        let text = String::from_utf8(csv_header().unwrap()).unwrap()
            + &String::from_utf8(csv_rows(&[record]).unwrap()).unwrap();

        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(&row[0], "evt_1");
        assert_eq!(&row[2], "a,\"b\"\nc");
        assert_eq!(&row[7], "200");
        assert_eq!(&row[8], "");
        assert_eq!(&row[11], "0.5");
    }
}
