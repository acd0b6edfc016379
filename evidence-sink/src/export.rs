//! Streamed exports: `GET /v1/evidence/export` and `GET /v1/evidence/bundle`.
//!
//! Both read the store a page at a time (at most [`EXPORT_PAGE_RECORDS`] records, unless
//! `AppState::export_page_records` says otherwise, and about
//! [`PAGE_BYTES`] of text) and hand each page to the connection before reading the next,
//! so memory stays bounded by one page whatever the export's size, and the database lock
//! is held for one page at a time, never for the whole export. Each export is a snapshot:
//! it holds the records whose leaves were in the tree when it started.
//!
//! If the store fails halfway, the response is cut off (the chunked body never ends
//! properly), so a client cannot mistake a broken export for a short one; a bundle also
//! ends with a line that counts its records.
//!
//! # The bundle
//!
//! JSON lines, for `mercator audit`:
//!
//! ```text
//! {"bundle":"mercator.bundle.v1","tree_head":{…signed tree head…}}
//! {"leaf_index":0,"inclusion_proof":["<hex>",…],"record":{…the record as stored…}}
//! …
//! {"end":{"records":N}}
//! ```
//!
//! Each inclusion proof is against the tree head of the first line.

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use mercator_evidence::merkle::to_hex;
use mercator_evidence::TreeHead;

use crate::error::SinkError;
use crate::http::PAGE_BYTES;
use crate::query::{content_type, csv_header, csv_rows, ExportFormat};
use crate::store::{Page, RecordFilter, Store};

/// Records read from the store per page of an export.
pub const EXPORT_PAGE_RECORDS: u32 = 1000;

/// The tag on the first line of a bundle.
pub const BUNDLE_SCHEMA: &str = "mercator.bundle.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    Rows,
    Done,
}

/// What is being written.
enum Kind {
    Export(ExportFormat),
    Bundle(Box<TreeHead>),
}

struct Export {
    store: Store,
    filter: RecordFilter,
    kind: Kind,
    stage: Stage,
    after: i64,
    count: u64,
    snapshot: u64,
    page_records: u32,
}

impl Export {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SinkError> {
        match self.stage {
            Stage::Done => Ok(None),
            Stage::Start => {
                self.stage = Stage::Rows;
                let prefix = match &self.kind {
                    Kind::Export(format) => {
                        self.snapshot = self.store.tree_size().await?;
                        match format {
                            ExportFormat::Json => b"{\"records\":[".to_vec(),
                            ExportFormat::Jsonl => Vec::new(),
                            ExportFormat::Csv => csv_header()?,
                        }
                    }
                    Kind::Bundle(head) => {
                        self.snapshot = head.tree_size;
                        let head = serde_json::to_string(head).map_err(|e| {
                            SinkError::Internal(format!("the tree head does not serialize: {e}"))
                        })?;
                        format!(r#"{{"bundle":"{BUNDLE_SCHEMA}","tree_head":{head}}}"#)
                            .into_bytes()
                            .into_iter()
                            .chain(*b"\n")
                            .collect()
                    }
                };
                Ok(Some(Bytes::from(prefix)))
            }
            Stage::Rows => {
                let chunk = self.rows().await?;
                if let Some(chunk) = chunk {
                    return Ok(Some(Bytes::from(chunk)));
                }
                self.stage = Stage::Done;
                let suffix = match &self.kind {
                    Kind::Export(ExportFormat::Json) => {
                        format!(r#"],"count":{}}}"#, self.count).into_bytes()
                    }
                    Kind::Export(_) => return Ok(None),
                    Kind::Bundle(_) => {
                        format!("{{\"end\":{{\"records\":{}}}}}\n", self.count).into_bytes()
                    }
                };
                Ok(Some(Bytes::from(suffix)))
            }
        }
    }

    /// The next page, rendered; `None` when there are no more records.
    async fn rows(&mut self) -> Result<Option<Vec<u8>>, SinkError> {
        let page = Page {
            after: self.after,
            limit: self.page_records,
            max_bytes: PAGE_BYTES,
            leaves_below: Some(self.snapshot),
        };
        let mut out = Vec::new();

        match &self.kind {
            Kind::Export(format) => {
                let rows = self.store.page(self.filter.clone(), page).await?;
                let Some(last) = rows.last() else {
                    return Ok(None);
                };
                self.after = last.position;
                match format {
                    ExportFormat::Json => {
                        for row in &rows {
                            if self.count > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(row.text.as_bytes());
                            self.count += 1;
                        }
                    }
                    ExportFormat::Jsonl => {
                        for row in &rows {
                            out.extend_from_slice(row.text.as_bytes());
                            out.push(b'\n');
                            self.count += 1;
                        }
                    }
                    ExportFormat::Csv => {
                        let texts: Vec<&str> = rows.iter().map(|row| row.text.as_str()).collect();
                        out = csv_rows(&texts)?;
                        self.count += rows.len() as u64;
                    }
                }
            }
            Kind::Bundle(_) => {
                let rows = self
                    .store
                    .page_with_proofs(self.filter.clone(), page, self.snapshot)
                    .await?;
                let Some((last, _)) = rows.last() else {
                    return Ok(None);
                };
                self.after = last.position;
                for (row, proof) in &rows {
                    let proof: Vec<String> =
                        proof.iter().map(|h| format!("\"{}\"", to_hex(h))).collect();
                    out.extend_from_slice(
                        format!(
                            r#"{{"leaf_index":{},"inclusion_proof":[{}],"record":{}}}"#,
                            row.leaf_index,
                            proof.join(","),
                            row.text
                        )
                        .as_bytes(),
                    );
                    out.push(b'\n');
                    self.count += 1;
                }
            }
        }
        Ok(Some(out))
    }
}

fn streamed(export: Export, content_type: &'static str) -> Response {
    let stream = futures_util::stream::unfold(export, |mut export| async move {
        match export.next_chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), export)),
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%error, "an export failed halfway; the response is cut off");
                export.stage = Stage::Done;
                Some((Err(std::io::Error::other(error.to_string())), export))
            }
        }
    });
    ([(CONTENT_TYPE, content_type)], Body::from_stream(stream)).into_response()
}

/// Every record that passes `filter`, in `format`, streamed.
pub fn export_response(
    store: Store,
    filter: RecordFilter,
    format: ExportFormat,
    page_records: u32,
) -> Response {
    let export = Export {
        store,
        filter,
        kind: Kind::Export(format),
        stage: Stage::Start,
        after: 0,
        count: 0,
        snapshot: 0,
        page_records: page_records.max(1),
    };
    streamed(export, content_type(format))
}

/// The records that pass `filter` with their inclusion proofs against `head`, streamed.
pub fn bundle_response(
    store: Store,
    filter: RecordFilter,
    head: TreeHead,
    page_records: u32,
) -> Result<Response, SinkError> {
    let export = Export {
        store,
        filter,
        kind: Kind::Bundle(Box::new(head)),
        stage: Stage::Start,
        after: 0,
        count: 0,
        snapshot: 0,
        page_records: page_records.max(1),
    };
    Ok(streamed(export, "application/x-ndjson"))
}
