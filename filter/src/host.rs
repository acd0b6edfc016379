//! The only module that talks to Envoy: it adapts the proxy-wasm callbacks to
//! [`Exchange`] and delivers signed records to the evidence sink.
//!
//! Host rules this module lives by (see `shared/design.md`):
//! - Request headers can be read and edited only in the headers callback, so everything the
//!   exchange needs from them is read there, and credentials are swapped there too. The
//!   request is held (`Pause`, which Envoy honours as StopIteration only when the plugin
//!   sets `allow_on_headers_stop_iteration: true`) until the body is decided, so a denied
//!   request never reaches the provider, not even its headers.
//! - Only `hostcalls` that answer with a `Result` for the statuses that can occur in the
//!   phase at hand are used; none of the trait helpers that unwrap.
//! - A streamed answer is never paused: each response body callback returns `Continue`
//!   after replacing the chunk in Envoy's buffer with what the exchange says the client
//!   gets (`content-length` is removed at the headers, since the body changes). Trailers
//!   end such a stream where the body can no longer change.
//! - Records are delivered by the root context on a timer, not by the request: the
//!   client's answer never waits for the sink, and a request context that ends does not
//!   cancel its record's delivery. What the queue keeps, drops and sends next is decided
//!   in [`crate::delivery`]; this module carries it out and publishes the counters as
//!   Envoy stats (`wasmcustom.mercator_evidence_dropped`, `…_refused`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use time::OffsetDateTime;

use crate::config::{Gateway, PluginConfig, WhenFull};
use crate::delivery::{Admission, Backoff, EvidenceQueue, Pending, Queued};
use crate::exchange::{ChunkStep, Exchange, RequestHead, RequestStep, ResponseStep};
use crate::identity::PeerCertificate;
use crate::reply::LocalReply;

/// Delivery calls in flight at once, per worker.
const MAX_IN_FLIGHT: usize = 4;
/// Envoy stat (prefixed `wasmcustom.`): records dropped because the buffer was full.
const DROPPED_METRIC: &str = "mercator_evidence_dropped";
/// Envoy stat: requests refused with 503 because the buffer was full.
const REFUSED_METRIC: &str = "mercator_evidence_refused";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(GatewayRoot::default()) });
}}

fn log(level: LogLevel, message: &str) {
    // Logging is best effort: a host that cannot log must not stop a request.
    let _ = hostcalls::log(level, message);
}

/// A connection or request attribute as text (Envoy's attribute names); `None` when the
/// host does not have it.
fn property(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

fn now() -> OffsetDateTime {
    let time = hostcalls::get_current_time().unwrap_or(SystemTime::UNIX_EPOCH);
    OffsetDateTime::from(time)
}

/// Counters published as Envoy stats; `None` when the host refused to define one, in
/// which case counting is skipped (the log lines still tell).
#[derive(Clone, Copy, Default)]
struct Metrics {
    dropped: Option<u32>,
    refused: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let define = |name: &str| match hostcalls::define_metric(MetricType::Counter, name) {
            Ok(id) => Some(id),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!("cannot define the {name} stat: {status:?}"),
                );
                None
            }
        };
        Self {
            dropped: define(DROPPED_METRIC),
            refused: define(REFUSED_METRIC),
        }
    }

    fn count(metric: Option<u32>) {
        if let Some(id) = metric {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

/// The request context of `benchmark_passthrough`: the SDK's default callbacks, each of
/// which lets the request or answer go on at once.
struct BenchmarkPassthrough;

impl Context for BenchmarkPassthrough {}

impl HttpContext for BenchmarkPassthrough {}

#[derive(Default)]
struct GatewayRoot {
    gateway: Option<Rc<Gateway>>,
    /// Set with the configuration, which sizes it.
    delivery: Option<Delivery>,
    calls: HashMap<u32, Vec<Pending>>,
    retry_at: Option<SystemTime>,
}

struct Delivery {
    queue: Rc<RefCell<EvidenceQueue>>,
    backoff: Backoff,
    metrics: Metrics,
}

impl RootContext for GatewayRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            _ => {
                log(
                    LogLevel::Critical,
                    "no plugin configuration; refusing to start",
                );
                return false;
            }
        };
        let gateway = PluginConfig::from_json(&bytes)
            .and_then(|config| Gateway::new(config, |name| std::env::var(name).ok()));
        let gateway = match gateway {
            Ok(gateway) => gateway,
            Err(error) => {
                log(LogLevel::Critical, &format!("{error}; refusing to start"));
                return false;
            }
        };

        let interval = Duration::from_millis(gateway.config.evidence.flush_interval_ms.max(10));
        if hostcalls::set_tick_period(interval).is_err() {
            log(
                LogLevel::Critical,
                "cannot set the evidence timer; refusing to start",
            );
            return false;
        }
        log(
            LogLevel::Info,
            &format!(
                "configured gateway.id={} api_keys={} policy.bundle={} signing.key_id={}",
                gateway.config.gateway_id,
                gateway.config.api_keys.len(),
                gateway.policy.digest(),
                gateway.signing_key.key_id(),
            ),
        );
        if gateway.config.benchmark_passthrough {
            log(
                LogLevel::Critical,
                "benchmark_passthrough is on: requests pass ungoverned, with no evidence",
            );
        }
        let evidence = &gateway.config.evidence;
        self.delivery = Some(Delivery {
            queue: Rc::new(RefCell::new(EvidenceQueue::new(
                evidence.max_buffered_records,
                evidence.when_full,
            ))),
            backoff: Backoff::new(Duration::from_millis(evidence.max_backoff_ms)),
            metrics: Metrics::define(),
        });
        self.gateway = Some(Rc::new(gateway));
        true
    }

    fn on_tick(&mut self) {
        let Some(gateway) = self.gateway.clone() else {
            return;
        };
        self.report_full_buffer();
        if let Some(retry_at) = self.retry_at {
            if hostcalls::get_current_time().is_ok_and(|now| now < retry_at) {
                return;
            }
        }
        while self.calls.len() < MAX_IN_FLIGHT {
            let batch = self.next_batch(gateway.config.evidence.batch_size);
            if batch.is_empty() {
                break;
            }
            if !self.deliver(&gateway, batch) {
                break;
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let gateway = self.gateway.clone()?;
        if gateway.config.benchmark_passthrough {
            return Some(Box::new(BenchmarkPassthrough));
        }
        let delivery = self.delivery.as_ref()?;
        Some(Box::new(GatewayHttp {
            exchange: Exchange::new(gateway.clone()),
            gateway,
            queue: delivery.queue.clone(),
            metrics: delivery.metrics,
            response_held: false,
            streaming: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl GatewayRoot {
    fn next_batch(&mut self, batch_size: usize) -> Vec<Pending> {
        match &self.delivery {
            Some(delivery) => delivery.queue.borrow_mut().next_batch(batch_size),
            None => Vec::new(),
        }
    }

    fn settle(&mut self, batch_len: usize) {
        if let Some(delivery) = &self.delivery {
            delivery.queue.borrow_mut().settle(batch_len);
        }
    }

    /// One rate-limited line for the records dropped, or requests refused, since the last
    /// one; never any content.
    fn report_full_buffer(&mut self) {
        let (Some(delivery), Some(gateway)) = (&self.delivery, &self.gateway) else {
            return;
        };
        let now = hostcalls::get_current_time()
            .ok()
            .and_then(|now| now.duration_since(SystemTime::UNIX_EPOCH).ok())
            .unwrap_or_default();
        let Some(count) = delivery.queue.borrow_mut().full_report(now) else {
            return;
        };
        let message = match gateway.config.evidence.when_full {
            WhenFull::Drop => format!(
                "evidence buffer full (evidence.when_full=drop): {count} records dropped \
                 since the last report; served without evidence"
            ),
            WhenFull::Refuse => format!(
                "evidence buffer full (evidence.when_full=refuse): {count} requests refused \
                 with 503 since the last report"
            ),
        };
        log(LogLevel::Warn, &message);
    }

    /// Sends one batch; on failure to dispatch, puts it back and backs off.
    fn deliver(&mut self, gateway: &Gateway, batch: Vec<Pending>) -> bool {
        let evidence = &gateway.config.evidence;
        let body = format!(
            "[{}]",
            batch
                .iter()
                .map(|p| p.record.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let headers = vec![
            (":method", "POST"),
            (":path", evidence.sink_path.as_str()),
            (":authority", evidence.sink_authority.as_str()),
            ("content-type", "application/json"),
        ];
        let timeout = Duration::from_millis(evidence.timeout_ms);

        match hostcalls::dispatch_http_call(
            &evidence.sink_cluster,
            headers,
            Some(body.as_bytes()),
            vec![],
            timeout,
        ) {
            Ok(token) => {
                self.calls.insert(token, batch);
                true
            }
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!(
                        "cannot call evidence sink cluster {}: {status:?}; {} records kept",
                        evidence.sink_cluster,
                        batch.len()
                    ),
                );
                self.requeue(batch, false);
                self.back_off();
                false
            }
        }
    }

    fn requeue(&mut self, batch: Vec<Pending>, alone: bool) {
        if let Some(delivery) = &self.delivery {
            delivery.queue.borrow_mut().requeue(batch, alone);
        }
    }

    fn back_off(&mut self) {
        let Some(delivery) = &mut self.delivery else {
            return;
        };
        let wait = delivery.backoff.fail();
        self.retry_at = hostcalls::get_current_time().ok().map(|now| now + wait);
    }
}

impl Context for GatewayRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(batch) = self.calls.remove(&token_id) else {
            return;
        };
        let status = if num_headers == 0 {
            None
        } else {
            hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
                .ok()
                .and_then(|headers| {
                    headers
                        .into_iter()
                        .find(|(name, _)| name == ":status")
                        .map(|(_, v)| v)
                })
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u16>().ok())
        };

        match status {
            Some(200..=299) => {
                self.settle(batch.len());
                if let Some(delivery) = &mut self.delivery {
                    delivery.backoff.reset();
                }
                self.retry_at = None;
            }
            // The sink refused the content: retrying the same bytes cannot help. Find the
            // record at fault by sending each alone; a record refused alone is dropped.
            Some(status @ 400..=499) if status != 408 && status != 429 => {
                let reason =
                    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(2048))
                        .ok()
                        .flatten()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                if batch.len() > 1 || batch.iter().any(|p| !p.alone) {
                    let message = format!(
                        "evidence sink refused a batch ({status}): {reason}; \
                         retrying records one by one"
                    );
                    log(LogLevel::Warn, &message);
                    self.requeue(batch, true);
                } else {
                    self.settle(batch.len());
                    for pending in batch {
                        let id = record_id(&pending.record);
                        let message = format!(
                            "evidence record {id} refused by the sink ({status}): {reason}; \
                             dropped"
                        );
                        log(LogLevel::Critical, &message);
                    }
                }
            }
            other => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "evidence sink unavailable (status {other:?}); {} records kept for retry",
                        batch.len()
                    ),
                );
                self.requeue(batch, false);
                self.back_off();
            }
        }
    }
}

fn record_id(record: &str) -> String {
    serde_json::from_str::<serde_json::Value>(record)
        .ok()
        .and_then(|value| {
            value
                .get("id")
                .and_then(|id| id.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "<unreadable>".to_owned())
}

/// Carries out an allowed request's obligations: the rewritten body (whose length no longer
/// matches the client's `content-length`, so that header goes and Envoy frames the body
/// anew) and added headers. The request's headers are still editable here because the
/// filter held them (`StopIteration`) until the body was decided. False when the host
/// refused an edit.
fn apply_rewrite(rewrite: &crate::exchange::Rewrite, body_size: usize) -> bool {
    let mut done = true;
    if let Some(body) = &rewrite.body {
        done &= hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, body).is_ok();
        done &=
            hostcalls::set_map_value(MapType::HttpRequestHeaders, "content-length", None).is_ok();
    }
    for (name, value) in &rewrite.headers {
        done &= hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)).is_ok();
    }
    done
}

struct GatewayHttp {
    gateway: Rc<Gateway>,
    exchange: Exchange,
    queue: Rc<RefCell<EvidenceQueue>>,
    metrics: Metrics,
    response_held: bool,
    /// A streamed answer: each body chunk goes on as the exchange says, none is held.
    streaming: bool,
}

impl GatewayHttp {
    /// Queues the exchange's record, if it has one, and logs the decision.
    fn ship_evidence(&mut self) {
        if let Some(record) = self.exchange.take_evidence() {
            let queued = self.queue.borrow_mut().push(record);
            match queued {
                Queued::Kept => log(LogLevel::Info, &self.exchange.log_line()),
                Queued::Dropped => {
                    Metrics::count(self.metrics.dropped);
                    let line = format!("{} evidence=dropped", self.exchange.log_line());
                    log(LogLevel::Info, &line);
                }
            }
        }
    }

    fn send(&mut self, reply: &LocalReply) -> Action {
        self.ship_evidence();
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        headers.extend(reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        if hostcalls::send_http_response(u32::from(reply.status), headers, Some(&reply.body))
            .is_err()
        {
            log(LogLevel::Error, "could not send a local reply");
        }
        Action::Pause
    }
}

impl Context for GatewayHttp {}

impl HttpContext for GatewayHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let head = RequestHead {
            headers: hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default(),
            end_of_stream,
            peer: PeerCertificate::from_parts(
                property(&["connection", "uri_san_peer_certificate"]),
                property(&["connection", "subject_peer_certificate"]),
            ),
            source_address: property(&["source", "address"]),
        };
        let backlog_full = self.queue.borrow_mut().admit() == Admission::Refuse;
        if backlog_full {
            Metrics::count(self.metrics.refused);
        }

        let (edits, step) = self.exchange.on_request_headers(&head, backlog_full, now());

        for name in &edits.remove {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
        }
        for (name, value) in &edits.set {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
        }

        match step {
            RequestStep::WaitForBody => Action::Pause,
            RequestStep::Forward(rewrite) => {
                apply_rewrite(&rewrite, 0);
                self.ship_evidence();
                Action::Continue
            }
            RequestStep::Reply(reply) => self.send(&reply),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let step = if body_size > self.gateway.config.limits.max_request_body_bytes {
            self.exchange.on_request_body_too_large(now())
        } else if !end_of_stream {
            return Action::Pause;
        } else {
            let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            self.exchange.on_request_body(&body, now())
        };

        match step {
            RequestStep::WaitForBody => Action::Pause,
            RequestStep::Forward(rewrite) => {
                if !apply_rewrite(&rewrite, body_size) {
                    // The policies' obligations could not be carried out: fail closed.
                    if let RequestStep::Reply(reply) = self.exchange.on_rewrite_failed(now()) {
                        return self.send(&reply);
                    }
                }
                Action::Continue
            }
            RequestStep::Reply(reply) => self.send(&reply),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let status = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u16>().ok())
            .unwrap_or(0);

        let header = |name: &str| {
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
                .ok()
                .flatten()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let encoding = header("content-encoding");
        let content_type = header("content-type");

        match self.exchange.on_response_headers(
            status,
            encoding.as_deref(),
            content_type.as_deref(),
            now(),
        ) {
            ResponseStep::Continue => Action::Continue,
            ResponseStep::Reply(reply) => self.send(&reply),
            ResponseStep::WaitForBody(added) => {
                for (name, value) in &added {
                    let _ =
                        hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
                }
                if end_of_stream {
                    return self.finish_response(&[]);
                }
                self.response_held = true;
                Action::Pause
            }
            ResponseStep::Stream(added) => {
                for (name, value) in &added {
                    let _ =
                        hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
                }
                // The gateway may drop or add events, so the provider's length cannot hold.
                let _ =
                    hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", None);
                self.streaming = true;
                if end_of_stream {
                    // Headers alone: the stream ended before its first byte.
                    self.streaming = false;
                    self.exchange.on_response_chunk(&[], true, now());
                    self.ship_evidence();
                }
                Action::Continue
            }
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.streaming {
            return self.forward_chunk(body_size, end_of_stream);
        }
        if !self.response_held {
            return Action::Continue;
        }
        if body_size > self.gateway.config.limits.max_response_body_bytes {
            return match self.exchange.on_response_body_too_large(now()) {
                ResponseStep::Reply(reply) => self.send(&reply),
                _ => Action::Continue,
            };
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.finish_response(&body)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.exchange.on_request_trailers(now()) {
            RequestStep::Reply(reply) => self.send(&reply),
            RequestStep::WaitForBody => Action::Pause,
            RequestStep::Forward(_) => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.streaming {
            self.streaming = false;
            self.exchange.on_response_trailers(now());
            self.ship_evidence();
            return Action::Continue;
        }
        if !self.response_held {
            return Action::Continue;
        }
        self.response_held = false;
        match self.exchange.on_response_trailers(now()) {
            ResponseStep::Reply(reply) => self.send(&reply),
            ResponseStep::Continue | ResponseStep::WaitForBody(_) | ResponseStep::Stream(_) => {
                Action::Continue
            }
        }
    }

    fn on_log(&mut self) {
        self.exchange.on_done(now());
        self.ship_evidence();
    }
}

impl GatewayHttp {
    /// One chunk of a streamed answer. With `Continue`, Envoy hands the filter each chunk
    /// as it arrives and sends on whatever the body buffer holds when the callback returns,
    /// so replacing the buffer (`set_buffer` from 0 over the whole chunk: Envoy drains the
    /// chunk and puts the new bytes in its place) changes what the client gets without
    /// holding the stream. Nothing is paused: an event the chunk leaves unfinished stays
    /// in the exchange until the chunk that ends it.
    fn forward_chunk(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let step = self
            .exchange
            .on_response_chunk(&chunk, end_of_stream, now());
        if let ChunkStep::Replace(bytes) = step {
            if hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &bytes).is_err() {
                // The chunk cannot be changed as the exchange says: nothing unchecked may
                // pass, so the answer is cut off here.
                log(
                    LogLevel::Error,
                    "could not rewrite a stream chunk; resetting the answer",
                );
                let _ = hostcalls::reset_http_response();
            }
        }
        if end_of_stream {
            self.streaming = false;
        }
        self.ship_evidence();
        Action::Continue
    }

    fn finish_response(&mut self, body: &[u8]) -> Action {
        self.response_held = false;
        match self.exchange.on_response_body(body, now()) {
            ResponseStep::Reply(reply) => self.send(&reply),
            ResponseStep::Continue | ResponseStep::WaitForBody(_) | ResponseStep::Stream(_) => {
                self.ship_evidence();
                Action::Continue
            }
        }
    }
}
