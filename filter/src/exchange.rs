//! One request's life in the gateway, as a state machine that never touches the host.
//!
//! The host adapter (`host.rs`) feeds it headers and bodies as Envoy delivers them and does
//! what each step says: edit headers, wait for the body, answer locally, or let the
//! exchange go on. Every request that reaches the filter ends in exactly one signed
//! evidence record, which the adapter takes with [`Exchange::take_evidence`] and queues
//! for the sink.

use std::rc::Rc;

use mercator_evidence::{
    AppliedObligations, AuthEvidence, AuthMethod, AuthResult, CertificateEvidence, Decision,
    EvidenceRecord, ExchangeEvidence, GatewayError, TokenUsage, RECORD_SCHEMA,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::anthropic::{parse_messages_request, parse_messages_response};
use crate::auth::Identity;
use crate::config::{ContentMode, Gateway};
use crate::identity::PeerCertificate;
use crate::openai::{
    parse_chat_request, parse_chat_response, ChatRequest, ChatResponse, RequestError, ResponseError,
};
use crate::policy::{Obligations, PolicyOutcome};
use crate::reply::{ErrorShape, LocalReply, Refusal};
use crate::stream::{StreamEnd, StreamFault, StreamFollower, StreamFormat};

/// The APIs the gateway governs, each with its path, provider and wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions`.
    OpenAiChat,
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
}

impl Api {
    /// The API served at `path`, if the gateway governs one there.
    pub fn from_path(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::OpenAiChat),
            "/v1/messages" => Some(Self::AnthropicMessages),
            _ => None,
        }
    }

    /// The provider's name in the configuration, policy input and evidence.
    pub fn provider(self) -> &'static str {
        match self {
            Self::OpenAiChat => "openai",
            Self::AnthropicMessages => "anthropic",
        }
    }

    /// The API's name in the policy input.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAiChat => "openai.chat_completions",
            Self::AnthropicMessages => "anthropic.messages",
        }
    }

    fn stream_format(self) -> StreamFormat {
        match self {
            Self::OpenAiChat => StreamFormat::OpenAi,
            Self::AnthropicMessages => StreamFormat::Anthropic,
        }
    }

    fn error_shape(self) -> ErrorShape {
        match self {
            Self::OpenAiChat => ErrorShape::OpenAi,
            Self::AnthropicMessages => ErrorShape::Anthropic,
        }
    }

    fn parse_request(self, body: &[u8]) -> Result<ChatRequest, RequestError> {
        match self {
            Self::OpenAiChat => parse_chat_request(body),
            Self::AnthropicMessages => parse_messages_request(body),
        }
    }

    fn parse_response(self, body: &[u8]) -> Result<ChatResponse, ResponseError> {
        match self {
            Self::OpenAiChat => parse_chat_response(body),
            Self::AnthropicMessages => parse_messages_response(body),
        }
    }

    /// The header that carries the provider's key, in place of the caller's.
    fn provider_key_header(self, key: &str) -> (String, String) {
        match self {
            Self::OpenAiChat => ("authorization".to_owned(), format!("Bearer {key}")),
            Self::AnthropicMessages => ("x-api-key".to_owned(), key.to_owned()),
        }
    }
}

/// The Messages API refuses requests without this header; so does the gateway.
const ANTHROPIC_VERSION_HEADER: &str = "anthropic-version";

/// Request headers the gateway removes before anything else reads them: the caller's
/// credentials (replaced by the provider's), and the provider account headers, since the
/// gateway's key decides which organisation and project are billed, not the caller.
const REMOVED_HEADERS: [&str; 4] = [
    "authorization",
    "x-api-key",
    "openai-organization",
    "openai-project",
];

/// And any identity header a caller might forge.
const STRIPPED_PREFIX: &str = "x-mercator-";

/// Headers through which the gateway, and only the gateway, tells the provider and Envoy's
/// later filters who called. Callers' own `x-mercator-*` headers are removed first.
pub const USER_ID_HEADER: &str = "x-mercator-user-id";
/// See [`USER_ID_HEADER`].
pub const AUTH_METHOD_HEADER: &str = "x-mercator-auth-method";

/// What the host knows when a request's headers arrive.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    /// The headers, lowercase names and raw values, pseudo-headers included.
    pub headers: Vec<(String, Vec<u8>)>,
    /// No body follows.
    pub end_of_stream: bool,
    /// The client certificate Envoy verified on the connection.
    pub peer: Option<PeerCertificate>,
    /// The downstream address, `ip:port`.
    pub source_address: Option<String>,
}

/// Header edits for the host to apply to the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Headers to remove, by lowercase name.
    pub remove: Vec<String>,
    /// Headers to set (replacing any value).
    pub set: Vec<(String, String)>,
}

/// What the host changes in an allowed request before it goes on, as the policies'
/// obligations require.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// The body to send instead of the client's; its `content-length` no longer holds.
    pub body: Option<Vec<u8>>,
    /// Headers to set on the forwarded request.
    pub headers: Vec<(String, String)>,
}

/// What the host does after a request callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestStep {
    /// Hold the request until its body is complete.
    WaitForBody,
    /// Let the request go on to the provider, changed as the rewrite says.
    Forward(Rewrite),
    /// Answer locally; nothing goes upstream.
    Reply(LocalReply),
}

/// What the host does after a response callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseStep {
    /// Pass the response on as it is.
    Continue,
    /// Hold the response until its body is complete (headers edited as given).
    WaitForBody(Vec<(String, String)>),
    /// A streamed answer: set these headers, drop `content-length` (the body will change),
    /// let the headers go, and hand each body chunk to [`Exchange::on_response_chunk`].
    Stream(Vec<(String, String)>),
    /// Replace the provider's answer with this one.
    Reply(LocalReply),
}

/// What the host sends on in place of one chunk of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkStep {
    /// The chunk, unchanged.
    Pass,
    /// These bytes instead (possibly none).
    Replace(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet.
    Start,
    /// Authenticated, waiting for the request body.
    AwaitingBody,
    /// Allowed and sent to the provider; waiting for its answer.
    Forwarded,
    /// Evidence has been built; nothing more to do.
    Finished,
}

/// A request's state from its headers to its evidence.
pub struct Exchange {
    gateway: Rc<Gateway>,
    phase: Phase,
    event_id: String,
    request_id: String,
    path: String,
    api: Option<Api>,
    shape: ErrorShape,
    auth: AuthEvidence,
    identity: Option<Identity>,
    provider: Option<String>,
    model: Option<String>,
    request: Option<ExchangeEvidence>,
    response_status: Option<u16>,
    /// The answer's content coding when it is not `identity`: such an answer cannot be read.
    response_encoding: Option<String>,
    policy: Option<PolicyOutcome>,
    /// The client asked for a stream.
    stream_requested: bool,
    /// The gateway asked OpenAI for stream usage the client did not ask for: hide it.
    hide_usage_chunk: bool,
    /// Follows a streamed answer, from its headers to its end.
    follower: Option<StreamFollower>,
    /// The request-phase policy input, kept for the response phase.
    policy_input: Option<Value>,
    obligations: Option<AppliedObligations>,
    token_usage: Option<TokenUsage>,
    cost: Option<f64>,
    decision: Decision,
    evidence: Option<String>,
    log_line: String,
}

impl Exchange {
    /// A new exchange under `gateway`'s configuration.
    pub fn new(gateway: Rc<Gateway>) -> Self {
        Self {
            gateway,
            phase: Phase::Start,
            event_id: String::new(),
            request_id: String::new(),
            path: String::new(),
            api: None,
            shape: ErrorShape::OpenAi,
            auth: AuthEvidence {
                method: AuthMethod::None,
                result: AuthResult::Missing,
                key_name: None,
                key_fingerprint: None,
                certificate: None,
                source_address: None,
            },
            identity: None,
            provider: None,
            model: None,
            request: None,
            response_status: None,
            response_encoding: None,
            policy: None,
            stream_requested: false,
            hide_usage_chunk: false,
            follower: None,
            policy_input: None,
            obligations: None,
            token_usage: None,
            cost: None,
            decision: Decision::Error,
            evidence: None,
            log_line: String::new(),
        }
    }

    /// The request's headers have arrived; `backlog_full` says the evidence queue cannot
    /// take another record.
    pub fn on_request_headers(
        &mut self,
        head: &RequestHead,
        backlog_full: bool,
        now: OffsetDateTime,
    ) -> (HeaderEdits, RequestStep) {
        let headers = head.headers.as_slice();
        let mut edits = HeaderEdits::default();
        edits
            .remove
            .extend(REMOVED_HEADERS.iter().map(|name| (*name).to_owned()));
        for (name, _) in headers {
            if name.starts_with(STRIPPED_PREFIX) && !edits.remove.contains(name) {
                edits.remove.push(name.clone());
            }
        }

        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let method = header(":method").unwrap_or_default();
        let full_path = header(":path").unwrap_or_default();
        self.path = full_path.split('?').next().unwrap_or_default().to_owned();
        self.api = Api::from_path(&self.path);
        self.shape = self.api.map(Api::error_shape).unwrap_or_default();

        if backlog_full {
            self.phase = Phase::Finished;
            self.log_line = "evidence backlog full: request refused with 503".to_owned();
            let reply = Refusal::EvidenceUnavailable.reply(None, self.shape);
            return (edits, RequestStep::Reply(reply));
        }
        let Some(event_id) = new_event_id() else {
            self.phase = Phase::Finished;
            self.log_line = "no entropy for an evidence id: request refused with 500".to_owned();
            return (
                edits,
                RequestStep::Reply(Refusal::Internal.reply(None, self.shape)),
            );
        };
        self.event_id = event_id;
        self.request_id = header("x-request-id").unwrap_or_else(|| self.event_id.clone());

        let outcome = self
            .gateway
            .auth
            .authenticate(headers, head.peer.as_ref(), now);
        self.auth = AuthEvidence {
            method: outcome.method,
            result: outcome.result,
            key_name: outcome.key_name.clone(),
            key_fingerprint: outcome.fingerprint.clone(),
            certificate: head.peer.as_ref().map(|peer| CertificateEvidence {
                uri_san: peer.uri_san.clone(),
                subject: peer.subject.clone(),
            }),
            source_address: head.source_address.clone(),
        };
        let certificate_name = head
            .peer
            .as_ref()
            .and_then(|peer| peer.uri_san.as_deref().or(peer.subject.as_deref()));
        self.log_line = format!(
            "source.address={} auth.method={} auth.result={} auth.key={} auth.key_name={} \
             auth.certificate={}",
            head.source_address.as_deref().unwrap_or("-"),
            method_name(outcome.method),
            outcome.result.as_str(),
            outcome.redacted.as_deref().unwrap_or("-"),
            outcome.key_name.as_deref().unwrap_or("-"),
            certificate_name.unwrap_or("-"),
        );
        let Some(identity) = outcome.identity.clone() else {
            let refusal = Refusal::Unauthenticated {
                result: outcome.result,
                message: outcome.message(),
            };
            return (
                edits,
                self.refuse(Decision::Unauthenticated, &refusal, None, now),
            );
        };
        self.identity = Some(identity);

        // An API whose provider the configuration does not name is not served here.
        let provider_key = self
            .api
            .and_then(|api| Some((api, self.gateway.provider_keys.get(api.provider())?)));
        let Some((api, provider_key)) = provider_key else {
            let refusal = Refusal::UnknownEndpoint {
                path: self.path.clone(),
            };
            return (edits, self.refuse(Decision::Invalid, &refusal, None, now));
        };
        if method != "POST" {
            let refusal = Refusal::MethodNotAllowed { method };
            return (edits, self.refuse(Decision::Invalid, &refusal, None, now));
        }
        self.provider = Some(api.provider().to_owned());
        if api == Api::AnthropicMessages && header(ANTHROPIC_VERSION_HEADER).is_none() {
            let refusal = Refusal::InvalidRequest(RequestError::Field {
                field: ANTHROPIC_VERSION_HEADER.to_owned(),
                message: "the header is required".to_owned(),
            });
            return (edits, self.refuse(Decision::Invalid, &refusal, None, now));
        }

        let limit = self.gateway.config.limits.max_request_body_bytes;
        let declared = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return (
                edits,
                self.refuse(Decision::Invalid, &Refusal::TooLarge { limit }, None, now),
            );
        }
        if head.end_of_stream {
            return (edits, self.on_request_body(b"", now));
        }

        edits.set.push(api.provider_key_header(provider_key));
        // A compressed answer could not be checked: ask for it plain. Envoy may compress it
        // again towards the caller, after the filter.
        edits
            .set
            .push(("accept-encoding".to_owned(), "identity".to_owned()));
        if let Some(identity) = &self.identity {
            edits
                .set
                .push((USER_ID_HEADER.to_owned(), identity.user_id.clone()));
            let method = method_name(outcome.method).to_owned();
            edits.set.push((AUTH_METHOD_HEADER.to_owned(), method));
        }
        self.phase = Phase::AwaitingBody;
        (edits, RequestStep::WaitForBody)
    }

    /// Trailers ended the request while its body was held. The governed APIs have no
    /// request trailers, and a body ended by trailers never reaches the body callback with
    /// its end: refuse it rather than let Envoy send on a request nobody checked.
    pub fn on_request_trailers(&mut self, now: OffsetDateTime) -> RequestStep {
        if self.phase != Phase::AwaitingBody {
            return RequestStep::Forward(Rewrite::default());
        }
        let refusal = Refusal::InvalidRequest(RequestError::Unsupported {
            field: "trailers".to_owned(),
            message: "requests with trailers are not accepted".to_owned(),
        });
        self.refuse(Decision::Invalid, &refusal, None, now)
    }

    /// Trailers ended the provider's answer while it was held: for the same reason, the
    /// answer is refused rather than passed on unchecked.
    pub fn on_response_trailers(&mut self, now: OffsetDateTime) -> ResponseStep {
        if self.phase != Phase::Forwarded {
            return ResponseStep::Continue;
        }
        if let Some(follower) = self.follower.as_mut() {
            // A stream's chunks have gone on already; its end comes with the trailers,
            // where the body can no longer change, so a held closing event is lost.
            let end = follower.finish();
            self.log_line.push_str(" stream.trailers=true");
            self.end_stream(end, now);
            return ResponseStep::Continue;
        }
        let refusal = Refusal::BadProviderResponse {
            detail: "it ends with trailers, which the gateway does not accept".to_owned(),
        };
        response_step(self.refuse(Decision::Error, &refusal, None, now))
    }

    /// The request body grew past the limit before it was complete.
    pub fn on_request_body_too_large(&mut self, now: OffsetDateTime) -> RequestStep {
        let limit = self.gateway.config.limits.max_request_body_bytes;
        self.refuse(Decision::Invalid, &Refusal::TooLarge { limit }, None, now)
    }

    /// The whole request body has arrived: validate it and ask the policies.
    pub fn on_request_body(&mut self, body: &[u8], now: OffsetDateTime) -> RequestStep {
        let mode = self.gateway.config.evidence.content;
        self.request = Some(describe(body, mode, Some(self.path.clone()), None));

        let limit = self.gateway.config.limits.max_request_body_bytes;
        if body.len() > limit {
            return self.refuse(Decision::Invalid, &Refusal::TooLarge { limit }, None, now);
        }
        let chat = match (body, self.api) {
            (b"", _) => Err(RequestError::NotJson("the body is empty".to_owned())),
            (_, Some(api)) => api.parse_request(body),
            (_, None) => Err(RequestError::NotObject),
        };
        let chat = match chat {
            Ok(chat) => chat,
            Err(error) => {
                self.model = partial_model(body);
                return self.refuse(
                    Decision::Invalid,
                    &Refusal::InvalidRequest(error),
                    None,
                    now,
                );
            }
        };
        self.model = Some(chat.model.clone());
        self.stream_requested = chat.stream;

        let provider = self.provider.clone().unwrap_or_default();
        if let Err(violation) =
            crate::limits::check_request(&chat, &provider, &self.gateway.config.limits)
        {
            return self.refuse(Decision::Invalid, &Refusal::OverLimit(violation), None, now);
        }

        let input = self.policy_input(&chat, now);
        let outcome = self.gateway.policy.evaluate(&input);
        let allowed = outcome.allowed;
        let reasons = outcome.deny_reasons();
        let obligations = outcome.obligations.clone();
        self.policy = Some(outcome);
        if !allowed {
            return self.refuse(
                Decision::Deny,
                &Refusal::PolicyDenied { reasons },
                None,
                now,
            );
        }
        if self.gateway.policy.has_response_rules() {
            self.policy_input = Some(input);
        }

        let ask_for_usage =
            chat.stream && !chat.stream_include_usage && self.api == Some(Api::OpenAiChat);
        let mut rewrite = self.apply_obligations(chat, &obligations, body, mode);
        if ask_for_usage {
            // Token usage of an OpenAI stream comes only when asked for; the client did
            // not ask, so the gateway does and hides the answer from the client. The
            // record's `request` stays the body before this addition.
            match with_stream_usage(rewrite.body.as_deref().unwrap_or(body)) {
                Some(forwarded) => {
                    rewrite.body = Some(forwarded);
                    self.hide_usage_chunk = true;
                }
                None => return self.on_rewrite_failed(now),
            }
        }
        self.decision = Decision::Allow;
        self.phase = Phase::Forwarded;
        RequestStep::Forward(rewrite)
    }

    /// The host could not change the request as the obligations say: it must not go on.
    pub fn on_rewrite_failed(&mut self, now: OffsetDateTime) -> RequestStep {
        self.log_line.push_str(" obligations=failed");
        self.refuse(Decision::Error, &Refusal::Internal, None, now)
    }

    /// Changes the request as the obligations say, and records what changed. The record's
    /// `request` then describes the body that was forwarded, and `obligations` carries the
    /// digest of the body the client sent.
    fn apply_obligations(
        &mut self,
        chat: ChatRequest,
        obligations: &Obligations,
        original: &[u8],
        mode: ContentMode,
    ) -> Rewrite {
        if obligations.is_empty() {
            return Rewrite::default();
        }
        let mut body = chat.body;
        let mut capped = None;
        if let Some(cap) = obligations.max_tokens {
            // Either field may be the one the provider reads: cap each that is there, and
            // `max_tokens` when the client gave neither.
            let mut fields: Vec<&str> = ["max_tokens", "max_completion_tokens"]
                .into_iter()
                .filter(|field| body.get(*field).is_some_and(|v| !v.is_null()))
                .collect();
            if fields.is_empty() {
                fields.push("max_tokens");
            }
            for field in fields {
                let asked = body.get(field).and_then(Value::as_u64);
                if asked.is_none_or(|asked| asked > cap) {
                    body.insert(field.to_owned(), Value::from(cap));
                    capped = Some(cap);
                }
            }
        }
        let mut redacted = Vec::new();
        for field in &obligations.redact {
            if body.remove(field).is_some() {
                redacted.push(field.clone());
            }
        }

        let rewritten = match capped.is_some() || !redacted.is_empty() {
            true => Some(Value::Object(body).to_string().into_bytes()),
            false => None,
        };
        let original_body_sha256 = rewritten.as_ref().map(|forwarded| {
            self.request = Some(describe(forwarded, mode, Some(self.path.clone()), None));
            sha256_label(original)
        });
        self.obligations = Some(AppliedObligations {
            max_tokens: capped,
            headers: obligations.headers.clone(),
            redacted,
            original_body_sha256,
        });
        Rewrite {
            body: rewritten,
            headers: obligations
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        }
    }

    /// The provider's response headers have arrived, with its `content-encoding` and
    /// `content-type`, if any.
    pub fn on_response_headers(
        &mut self,
        status: u16,
        encoding: Option<&str>,
        content_type: Option<&str>,
        now: OffsetDateTime,
    ) -> ResponseStep {
        if self.phase != Phase::Forwarded {
            return ResponseStep::Continue;
        }
        self.response_status = Some(status);
        self.response_encoding = encoding
            .map(str::trim)
            .filter(|encoding| !encoding.is_empty() && !encoding.eq_ignore_ascii_case("identity"))
            .map(str::to_owned);
        let id = (crate::EVIDENCE_ID_HEADER.to_owned(), self.event_id.clone());

        let event_stream = content_type.is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/event-stream"))
        });
        let streamed = self.stream_requested && (200..300).contains(&status) && event_stream;
        if let (true, Some(api)) = (streamed, self.api) {
            if let Some(encoding) = self.response_encoding.clone() {
                // A compressed stream cannot be read as it passes: refused before any of it.
                let refusal = Refusal::BadProviderResponse {
                    detail: ResponseError::Encoded(encoding).to_string(),
                };
                return response_step(self.refuse(Decision::Error, &refusal, None, now));
            }
            let limit = self.gateway.config.limits.max_response_body_bytes;
            self.follower = Some(StreamFollower::new(
                api.stream_format(),
                self.hide_usage_chunk,
                limit,
            ));
            return ResponseStep::Stream(vec![id]);
        }
        ResponseStep::WaitForBody(vec![id])
    }

    /// One chunk of a streamed answer (after [`ResponseStep::Stream`]); `end_of_stream` on
    /// the last. Says what the client gets in its place; once the stream has ended or
    /// been stopped, the record is ready for [`Exchange::take_evidence`].
    pub fn on_response_chunk(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        now: OffsetDateTime,
    ) -> ChunkStep {
        if self.follower.is_none() {
            return ChunkStep::Pass;
        }
        if self.phase != Phase::Forwarded {
            // Stopped earlier: nothing more reaches the client.
            return ChunkStep::Replace(Vec::new());
        }
        let forbidden = &self.gateway.forbidden;
        let Some(follower) = self.follower.as_mut() else {
            return ChunkStep::Pass;
        };
        let fed = follower.feed(chunk, end_of_stream, forbidden);
        let mut out = fed.forward;
        if let Some(fault) = fed.fault {
            out.extend(self.stop_stream(fault, now));
            return ChunkStep::Replace(out);
        }
        if end_of_stream {
            let end = follower.finish();
            out.extend(self.end_stream(end, now));
        }
        if out == chunk {
            ChunkStep::Pass
        } else {
            ChunkStep::Replace(out)
        }
    }

    /// Stops a stream at a fault: the error event that ends what the client gets, and the
    /// record with the answer so far.
    fn stop_stream(&mut self, fault: StreamFault, now: OffsetDateTime) -> Vec<u8> {
        let (decision, refusal) = match fault {
            StreamFault::Malformed(error) => (
                Decision::Error,
                Refusal::BadProviderResponse {
                    detail: error.to_string(),
                },
            ),
            StreamFault::TooLarge(limit) => (
                Decision::Error,
                Refusal::BadProviderResponse {
                    detail: format!("it is larger than {limit} bytes"),
                },
            ),
            StreamFault::Forbidden(name) => {
                self.record_forbidden(&name);
                (Decision::Deny, Refusal::ForbiddenContent { name })
            }
        };
        self.log_line
            .push_str(&format!(" stream.stopped={}", refusal.evidence().code));
        self.seal_stream(decision, Some(refusal.evidence()), now);
        refusal.stream_event(self.shape)
    }

    /// The stream's body has ended: response policies decide on the whole answer, and the
    /// held closing event goes on, or an error event in its place.
    fn end_stream(&mut self, end: StreamEnd, now: OffsetDateTime) -> Vec<u8> {
        if let Some(fault) = end.fault {
            return self.stop_stream(fault, now);
        }
        let provider_error = self
            .follower
            .as_ref()
            .and_then(|follower| follower.provider_error().map(str::to_owned));
        if let Some(kind) = provider_error {
            // The provider ended its own stream with an error event, which the client has.
            let error = GatewayError {
                status: self.response_status.unwrap_or(0),
                code: "provider_stream_error".to_owned(),
                message: format!("the provider ended the stream with an error event ({kind})"),
            };
            self.seal_stream(Decision::Allow, Some(error), now);
            return end.closing;
        }
        if !end.complete {
            let detail = match end.unfinished_bytes {
                0 => "its body ended without the closing event".to_owned(),
                bytes => format!(
                    "its body ended in the middle of an event ({bytes} bytes of it were dropped)"
                ),
            };
            let refusal = Refusal::IncompleteStream { detail };
            self.log_line.push_str(" stream.incomplete=true");
            self.seal_stream(Decision::Allow, Some(refusal.evidence()), now);
            return refusal.stream_event(self.shape);
        }

        if let (Some(mut input), Some(follower)) = (self.policy_input.take(), &self.follower) {
            let answer = follower.answer();
            let status = self.response_status.unwrap_or(0);
            if let Value::Object(document) = &mut input {
                document.insert("phase".to_owned(), json!("response"));
                document.insert("response".to_owned(), response_input(status, &answer));
            }
            let outcome = self.gateway.policy.evaluate_response(&input);
            let allowed = outcome.allowed;
            let reasons = outcome.deny_reasons();
            if let Some(policy) = &mut self.policy {
                policy.decisions.extend(outcome.decisions);
            }
            if !allowed {
                // The text has reached the client already; the stream ends with an error
                // in place of its closing event, so the client's SDK raises it.
                let refusal = Refusal::ResponseDenied { reasons };
                self.seal_stream(Decision::Deny, Some(refusal.evidence()), now);
                return refusal.stream_event(self.shape);
            }
        }
        self.seal_stream(Decision::Allow, None, now);
        end.closing
    }

    /// Records a stream's outcome with the answer assembled so far, its usage and cost.
    /// A record that cannot be signed is logged: the answer is on its way already.
    fn seal_stream(
        &mut self,
        decision: Decision,
        error: Option<GatewayError>,
        now: OffsetDateTime,
    ) {
        let Some(follower) = &self.follower else {
            return;
        };
        let answer = follower.answer();
        let body = follower.assembled_body().to_string();
        let received = follower.bytes_received();
        self.token_usage = answer.usage;
        self.cost = self.cost(&answer.model, answer.usage);
        let mode = self.gateway.config.evidence.content;
        let response = describe(body.as_bytes(), mode, None, self.response_status);
        self.log_line.push_str(&format!(" stream.bytes={received}"));
        if self.seal(decision, response, error, now).is_err() {
            self.log_line.push_str(" evidence=unsigned");
        }
    }

    /// A forbidden-content match, as a decision of its own in the record.
    fn record_forbidden(&mut self, name: &str) {
        if let Some(policy) = &mut self.policy {
            policy.decisions.push(mercator_evidence::PolicyDecision {
                policy: "forbidden_content".to_owned(),
                phase: mercator_evidence::PolicyPhase::Response,
                decision: mercator_evidence::PolicyVerdict::Deny,
                code: Some("forbidden_content".to_owned()),
                reason: Some(format!("the answer matched the pattern `{name}`")),
            });
        }
    }

    /// The provider's answer grew past the limit: it cannot be checked, so it is refused.
    pub fn on_response_body_too_large(&mut self, now: OffsetDateTime) -> ResponseStep {
        if self.phase != Phase::Forwarded {
            return ResponseStep::Continue;
        }
        let limit = self.gateway.config.limits.max_response_body_bytes;
        let refusal = Refusal::BadProviderResponse {
            detail: format!("it is larger than {limit} bytes"),
        };
        response_step(self.refuse(Decision::Error, &refusal, None, now))
    }

    /// The provider's whole answer has arrived: check it, count tokens and cost, sign.
    pub fn on_response_body(&mut self, body: &[u8], now: OffsetDateTime) -> ResponseStep {
        if self.phase != Phase::Forwarded {
            return ResponseStep::Continue;
        }
        let mode = self.gateway.config.evidence.content;
        let status = self.response_status.unwrap_or(0);
        let provider_answer = describe(body, mode, None, Some(status));

        if !(200..300).contains(&status) {
            // The provider refused or failed; its answer goes to the caller as it is.
            return self.finish_forwarded(provider_answer, now);
        }
        let parsed = match (self.api, &self.response_encoding) {
            (_, Some(encoding)) => Err(ResponseError::Encoded(encoding.clone())),
            (Some(api), None) => api.parse_response(body),
            (None, None) => Err(ResponseError::NotJson),
        };
        let answer = match parsed {
            Ok(answer) => answer,
            Err(error) => {
                let refusal = Refusal::BadProviderResponse {
                    detail: error.to_string(),
                };
                return response_step(self.refuse(
                    Decision::Error,
                    &refusal,
                    Some(provider_answer),
                    now,
                ));
            }
        };
        // The provider has done the work: usage and cost stand whatever policies say next.
        self.token_usage = answer.usage;
        self.cost = self.cost(&answer.model, answer.usage);

        let texts = answer.choices.iter().flat_map(|choice| {
            std::iter::once(choice.text.as_str())
                .chain(choice.tool_calls.iter().map(|call| call.arguments.as_str()))
        });
        if let Some(name) = self.gateway.forbidden.first_match(texts).map(str::to_owned) {
            self.record_forbidden(&name);
            let refusal = Refusal::ForbiddenContent { name };
            return response_step(self.refuse(
                Decision::Deny,
                &refusal,
                Some(provider_answer),
                now,
            ));
        }

        if let Some(mut input) = self.policy_input.take() {
            if let Value::Object(document) = &mut input {
                document.insert("phase".to_owned(), json!("response"));
                document.insert("response".to_owned(), response_input(status, &answer));
            }
            let outcome = self.gateway.policy.evaluate_response(&input);
            let allowed = outcome.allowed;
            let reasons = outcome.deny_reasons();
            if let Some(policy) = &mut self.policy {
                policy.decisions.extend(outcome.decisions);
            }
            if !allowed {
                let refusal = Refusal::ResponseDenied { reasons };
                return response_step(self.refuse(
                    Decision::Deny,
                    &refusal,
                    Some(provider_answer),
                    now,
                ));
            }
        }
        self.finish_forwarded(provider_answer, now)
    }

    /// The stream is over. If no evidence was built yet (the client went away, the
    /// upstream reset), build it now from what is known.
    pub fn on_done(&mut self, now: OffsetDateTime) {
        if matches!(self.phase, Phase::Finished | Phase::Start) {
            return;
        }
        let error = GatewayError {
            status: self.response_status.unwrap_or(0),
            code: "incomplete_exchange".to_owned(),
            message: "the exchange ended before the gateway saw the whole answer".to_owned(),
        };
        if self.phase == Phase::Forwarded && self.follower.is_some() {
            // The stream broke off (a reset, the client left): the answer so far.
            let error = GatewayError {
                status: self.response_status.unwrap_or(0),
                code: "incomplete_stream".to_owned(),
                message: "the stream ended before its end reached the gateway".to_owned(),
            };
            self.seal_stream(self.decision, Some(error), now);
            return;
        }
        let decision = if self.phase == Phase::Forwarded {
            self.decision
        } else {
            Decision::Error
        };
        let response = not_read(None, self.response_status);
        if self.seal(decision, response, Some(error), now).is_err() {
            self.log_line.push_str(" evidence=unsigned");
        }
    }

    /// The signed record, once, for the adapter to queue.
    pub fn take_evidence(&mut self) -> Option<String> {
        self.evidence.take()
    }

    /// A line for the log: ids, user, decision, redacted credential. Never a key or a prompt.
    pub fn log_line(&self) -> String {
        format!(
            "request.id={} evidence.id={} user.id={} policy.decision={} {}",
            self.request_id,
            self.event_id,
            self.identity
                .as_ref()
                .map_or("-", |identity| identity.user_id.as_str()),
            self.decision.as_str(),
            self.log_line
        )
    }

    fn finish_forwarded(
        &mut self,
        response: ExchangeEvidence,
        now: OffsetDateTime,
    ) -> ResponseStep {
        match self.seal(Decision::Allow, response, None, now) {
            Ok(()) => ResponseStep::Continue,
            Err(reply) => ResponseStep::Reply(reply),
        }
    }

    /// Answers locally and records why.
    fn refuse(
        &mut self,
        decision: Decision,
        refusal: &Refusal,
        provider_answer: Option<ExchangeEvidence>,
        now: OffsetDateTime,
    ) -> RequestStep {
        let reply = refusal.reply(Some(&self.event_id), self.shape);
        let mode = self.gateway.config.evidence.content;
        // The caller sees the gateway's reply; a refused provider answer is kept too,
        // digest-only, in the error message's place of record.
        let response = describe(&reply.body, mode, None, Some(reply.status));
        let mut error = refusal.evidence();
        if let Some(answer) = provider_answer {
            if let Some(digest) = answer.body_sha256 {
                error.message = format!("{} (provider answer {digest})", error.message);
            }
        }
        match self.seal(decision, response, Some(error), now) {
            Ok(()) => RequestStep::Reply(reply),
            Err(internal) => RequestStep::Reply(internal),
        }
    }

    /// Builds and signs the record. A record that cannot be signed fails the request.
    fn seal(
        &mut self,
        decision: Decision,
        response: ExchangeEvidence,
        error: Option<GatewayError>,
        now: OffsetDateTime,
    ) -> Result<(), LocalReply> {
        self.decision = decision;
        self.phase = Phase::Finished;

        let record = EvidenceRecord {
            schema: RECORD_SCHEMA.to_owned(),
            id: self.event_id.clone(),
            timestamp: rfc3339_millis(now),
            request_id: self.request_id.clone(),
            user_id: self
                .identity
                .as_ref()
                .map(|identity| identity.user_id.clone()),
            provider: self.provider.clone(),
            model: self.model.clone(),
            decision,
            auth: self.auth.clone(),
            request: self
                .request
                .clone()
                .unwrap_or_else(|| not_read(Some(self.path.clone()), None)),
            response,
            error,
            policy_bundle: self
                .policy
                .as_ref()
                .map(|_| self.gateway.policy.digest().to_owned()),
            policy_decisions: self
                .policy
                .as_ref()
                .map(|p| p.decisions.clone())
                .unwrap_or_default(),
            obligations: self.obligations.clone(),
            token_usage: self.token_usage,
            cost: self.cost,
            key_id: String::new(),
        };

        match record.sign(&self.gateway.signing_key) {
            Ok(signed) => {
                self.evidence = Some(signed);
                Ok(())
            }
            Err(error) => {
                self.log_line
                    .push_str(&format!(" evidence.error=\"{error}\""));
                Err(Refusal::Internal.reply(None, self.shape))
            }
        }
    }

    /// The policy input, version 2 (documented in `docs/policy-input.md`), for the request
    /// phase; the response phase adds `response`.
    fn policy_input(&self, chat: &ChatRequest, now: OffsetDateTime) -> Value {
        let mut user = serde_json::Map::new();
        let mut groups = Vec::new();
        if let Some(identity) = &self.identity {
            for (name, value) in &identity.attributes {
                user.insert(name.clone(), Value::String(value.clone()));
            }
            if let Some(listed) = identity.attributes.get("groups") {
                groups = listed
                    .split(',')
                    .map(str::trim)
                    .filter(|group| !group.is_empty())
                    .map(|group| Value::String(group.to_owned()))
                    .collect();
            }
            user.insert("id".to_owned(), Value::String(identity.user_id.clone()));
            user.insert(
                "key_name".to_owned(),
                Value::String(identity.key_name.clone()),
            );
        }
        user.insert("groups".to_owned(), Value::Array(groups));
        let certificate = self.auth.certificate.as_ref().map(
            |certificate| json!({"uri_san": certificate.uri_san, "subject": certificate.subject}),
        );
        let prompt_chars: usize = chat.messages.iter().map(|m| m.chars).sum();

        json!({
            "version": POLICY_INPUT_VERSION,
            "phase": "request",
            "time": rfc3339_millis(now),
            "request": {
                "id": self.request_id,
                "api": self.api.map(Api::name),
                "provider": self.provider,
                "path": self.path,
                "model": chat.model,
                "user": user,
                "auth": {
                    "method": method_name(self.auth.method),
                    "key_name": self.auth.key_name,
                    "certificate": certificate,
                },
                "source_address": self.auth.source_address,
                "messages": chat.messages,
                "message_count": chat.messages.len(),
                "prompt_chars": prompt_chars,
                "estimated_prompt_tokens": chat.estimated_prompt_tokens(),
                "parameters": {
                    "max_tokens": chat.max_tokens,
                    "temperature": chat.temperature,
                    "stream": chat.stream,
                    "n": chat.n,
                    "response_format": chat.response_format,
                    "tools": chat.tools,
                },
            },
            "response": null,
        })
    }

    /// Dollars for the usage, priced by the model asked for, else the model that answered.
    fn cost(&self, answered_model: &str, usage: Option<TokenUsage>) -> Option<f64> {
        let usage = usage?;
        let pricing = &self.gateway.config.pricing;
        let price = self
            .model
            .as_deref()
            .and_then(|model| pricing.get(model))
            .or_else(|| pricing.get(answered_model))?;
        let dollars = (usage.prompt_tokens as f64 * price.input_per_million
            + usage.completion_tokens as f64 * price.output_per_million)
            / 1_000_000.0;
        // Ten decimal places: below a millionth of a cent, and free of float noise.
        Some((dollars * 1e10).round() / 1e10)
    }
}

/// The version of the policy input document; it changes when a field changes meaning or
/// goes away, not when one is added.
pub const POLICY_INPUT_VERSION: u32 = 2;

/// The `response` member of the policy input: what the provider answered.
fn response_input(status: u16, answer: &ChatResponse) -> Value {
    let text: Vec<&str> = answer.choices.iter().map(|c| c.text.as_str()).collect();
    let finish_reasons: Vec<&str> = answer
        .choices
        .iter()
        .filter_map(|c| c.finish_reason.as_deref())
        .collect();
    json!({
        "status": status,
        "model": answer.model,
        "text": text.join("\n"),
        "choices": answer.choices,
        "finish_reasons": finish_reasons,
        "usage": answer.usage,
    })
}

/// The name of an authentication method in logs, headers and policy input.
fn method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::ApiKey => "api_key",
        AuthMethod::Certificate => "certificate",
        AuthMethod::ApiKeyAndCertificate => "api_key_and_certificate",
        AuthMethod::None => "none",
    }
}

fn response_step(step: RequestStep) -> ResponseStep {
    match step {
        RequestStep::Reply(reply) => ResponseStep::Reply(reply),
        RequestStep::WaitForBody | RequestStep::Forward(_) => ResponseStep::Continue,
    }
}

/// The forwarded body with `stream_options.include_usage: true`, other stream options kept.
fn with_stream_usage(body: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let options = object.entry("stream_options").or_insert_with(|| json!({}));
    if options.is_null() {
        *options = json!({});
    }
    options
        .as_object_mut()?
        .insert("include_usage".to_owned(), Value::Bool(true));
    serde_json::to_vec(&Value::Object(object)).ok()
}

/// The model named by a body that failed validation, if it names one, for the evidence.
fn partial_model(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("model")?.as_str().map(str::to_owned)
}

fn describe(
    body: &[u8],
    mode: ContentMode,
    path: Option<String>,
    status: Option<u16>,
) -> ExchangeEvidence {
    let text = match mode {
        ContentMode::Full => std::str::from_utf8(body).ok().map(str::to_owned),
        ContentMode::Digest => None,
    };
    ExchangeEvidence {
        path,
        status,
        body_bytes: Some(body.len() as u64),
        body_sha256: Some(sha256_label(body)),
        body: text,
    }
}

/// `sha256:` and the hex SHA-256 of `bytes`, as records name bodies.
fn sha256_label(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn not_read(path: Option<String>, status: Option<u16>) -> ExchangeEvidence {
    ExchangeEvidence {
        path,
        status,
        body_bytes: None,
        body_sha256: None,
        body: None,
    }
}

/// `evt_` and 26 lowercase base32 characters of 128 random bits.
fn new_event_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(format!("evt_{}", base32_lower(&bytes)?))
}

fn base32_lower(bytes: &[u8]) -> Option<String> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(*ALPHABET.get(((buffer >> bits) & 31) as usize)?));
        }
    }
    if bits > 0 {
        out.push(char::from(
            *ALPHABET.get(((buffer << (5 - bits)) & 31) as usize)?,
        ));
    }
    Some(out)
}

/// RFC 3339 in UTC with milliseconds, as records carry it.
pub fn rfc3339_millis(now: OffsetDateTime) -> String {
    let utc = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.millisecond()
    )
}

#[cfg(test)]
mod tests;
