//! Server-Sent Events, read incrementally as the provider's answer arrives.
//!
//! Envoy hands the filter a streamed answer in chunks that fall wherever the network put
//! them: in the middle of a line, between the `\r` and `\n` of one line ending, in the
//! middle of a UTF-8 character. [`SseParser`] keeps the bytes of the one event that is not
//! complete yet and gives back each complete event with its fields and its exact bytes, so
//! that the filter can pass events on unchanged, drop one, or stop the stream after one.
//!
//! It follows the WHATWG rules for `text/event-stream`: lines end with CRLF, LF or CR; a
//! blank line ends an event; lines starting with `:` are comments; `data` lines are joined
//! with `\n`; one space after the colon is dropped; a byte-order mark before the first line
//! is ignored. Unlike a browser it also gives back blocks with no `data` line (a named
//! `ping`, a keep-alive comment), because their bytes must still reach the client. The
//! result does not depend on where the chunks were split (the tests split real-shaped
//! streams at every byte offset, and the property tests at random ones).

/// One complete event: a block of lines ended by a blank line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The value of the last `event:` line, if any.
    pub name: Option<String>,
    /// The `data:` lines joined by `\n`, as bytes (the caller checks UTF-8 when it parses
    /// them); `None` when the block had no `data` line.
    pub data: Option<Vec<u8>>,
    /// The exact bytes of the event, from its first line through its blank line.
    pub raw: Vec<u8>,
}

impl SseEvent {
    /// Whether the event carries nothing for a client: no `data` line (a comment, a
    /// keep-alive, a blank line, a named event without data).
    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }
}

/// Why the stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event grew past the limit without ending: the filter would have to hold it all.
    #[error("an event of the stream is longer than {limit} bytes")]
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// The byte-order mark that may open a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads a `text/event-stream` body chunk by chunk.
#[derive(Debug, Clone)]
pub struct SseParser {
    /// Bytes received and not yet given back as events; `start` marks where the current
    /// event begins, `scanned` how far its lines have been read.
    pending: Vec<u8>,
    start: usize,
    scanned: usize,
    name: Option<String>,
    data: Option<Vec<u8>>,
    /// No line of the stream has been read yet (a byte-order mark may come first).
    at_stream_start: bool,
    max_event_bytes: usize,
}

impl SseParser {
    /// A parser that refuses to hold an incomplete event longer than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            pending: Vec::new(),
            start: 0,
            scanned: 0,
            name: None,
            data: None,
            at_stream_start: true,
            max_event_bytes,
        }
    }

    /// Takes the next chunk and gives back the events it completes, in order. `last` says
    /// that no byte follows, so a `\r` at its end ends a line.
    pub fn feed(&mut self, chunk: &[u8], last: bool) -> Result<Vec<SseEvent>, SseError> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();

        while let Some((line_end, terminator)) = self.next_line_end(last) {
            let line_start = self.scanned;
            self.scanned = line_end + terminator;
            if line_end == line_start {
                events.push(self.dispatch());
            } else {
                let line = self.pending.get(line_start..line_end).unwrap_or_default();
                let line = line.to_vec();
                self.read_line(&line);
            }
        }

        // Forget the bytes of the events given back.
        self.pending.drain(..self.start);
        self.scanned -= self.start;
        self.start = 0;
        if self.pending.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(events)
    }

    /// The bytes of an event that the stream never finished, if any: what is left when the
    /// body ends. The parser is empty afterwards.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest: Vec<u8> = self.pending.drain(self.start..).collect();
        self.pending.clear();
        self.start = 0;
        self.scanned = 0;
        self.name = None;
        self.data = None;
        (!rest.is_empty()).then_some(rest)
    }

    /// Bytes held for an event that has not ended yet.
    pub fn held_bytes(&self) -> usize {
        self.pending.len() - self.start
    }

    /// Where the next complete line ends and how long its terminator is. A `\r` at the end
    /// of what has arrived may be the first half of `\r\n`, so that line waits for the next
    /// byte, unless this is the `last` chunk.
    fn next_line_end(&self, last: bool) -> Option<(usize, usize)> {
        let unread = self.pending.get(self.scanned..)?;
        let offset = unread.iter().position(|b| *b == b'\n' || *b == b'\r')?;
        let at = self.scanned + offset;
        match (self.pending.get(at), self.pending.get(at + 1)) {
            (Some(b'\n'), _) => Some((at, 1)),
            (Some(b'\r'), Some(b'\n')) => Some((at, 2)),
            (Some(b'\r'), Some(_)) => Some((at, 1)),
            (Some(b'\r'), None) if last => Some((at, 1)),
            _ => None,
        }
    }

    fn read_line(&mut self, line: &[u8]) {
        let mut line = line;
        if std::mem::take(&mut self.at_stream_start) {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let (field, rest) = line.split_at(colon);
                let value = rest.get(1..).unwrap_or_default();
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"event" => self.name = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push(b'\n');
                    data.extend_from_slice(value);
                }
                None => self.data = Some(value.to_vec()),
            },
            // `id`, `retry` and unknown fields mean nothing to the gateway; their bytes
            // still go to the client in the event's `raw`.
            _ => {}
        }
    }

    fn dispatch(&mut self) -> SseEvent {
        self.at_stream_start = false;
        let raw = self
            .pending
            .get(self.start..self.scanned)
            .unwrap_or_default()
            .to_vec();
        self.start = self.scanned;
        SseEvent {
            name: self.name.take(),
            data: self.data.take(),
            raw,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What an event means, without its bytes.
    pub(crate) fn fields(events: &[SseEvent]) -> Vec<(Option<String>, Option<String>)> {
        events
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.data
                        .as_ref()
                        .map(|d| String::from_utf8_lossy(d).into_owned()),
                )
            })
            .collect()
    }

    /// Feeds `stream` in the given pieces; the events, and what was left at the end.
    pub(crate) fn parse_in_pieces(stream: &[u8], cuts: &[usize]) -> (Vec<SseEvent>, Vec<u8>) {
        let mut parser = SseParser::new(usize::MAX);
        let mut events = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter() {
            events.extend(parser.feed(&stream[from..cut], false).unwrap());
            from = cut;
        }
        events.extend(parser.feed(&stream[from..], true).unwrap());
        (events, parser.finish().unwrap_or_default())
    }

    pub(crate) const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4\",",
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},",
        "\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4\",",
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé \\u00e9llo\"},\"finish_reason\":null}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4\",",
        "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4\",",
        "\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n",
        "data: [DONE]\n\n",
    );

    pub(crate) const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\r\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",",
        "\"role\":\"assistant\",\"model\":\"claude-3-sonnet\",\"content\":[],\"stop_reason\":null,",
        "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n",
        "event: content_block_start\r\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n",
        "event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n",
        "event: content_block_delta\r\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello ✓\"}}\r\n\r\n",
        "event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n",
        "event: message_delta\r\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},",
        "\"usage\":{\"output_tokens\":15}}\r\n\r\n",
        "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
    );

    #[test]
    fn an_openai_stream_split_at_every_byte_offset_parses_the_same() {
        let stream = OPENAI_STREAM.as_bytes();
        let (whole, rest) = parse_in_pieces(stream, &[]);
        assert!(rest.is_empty());
        assert_eq!(whole.len(), 6);
        let second: serde_json::Value =
            serde_json::from_slice(whole[1].data.as_ref().unwrap()).unwrap();
        assert_eq!(second["choices"][0]["delta"]["content"], "Hé éllo");
        assert_eq!(whole[2].data, None, "a comment is an event without data");
        assert_eq!(whole[5].data.as_deref(), Some(&b"[DONE]"[..]));

        for cut in 0..=stream.len() {
            let (events, rest) = parse_in_pieces(stream, &[cut]);
            assert_eq!(events, whole, "split at {cut}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn an_anthropic_stream_with_crlf_split_at_every_pair_of_offsets_parses_the_same() {
        let stream = ANTHROPIC_STREAM.as_bytes();
        let (whole, _) = parse_in_pieces(stream, &[]);
        let names: Vec<&str> = whole.iter().filter_map(|e| e.name.as_deref()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let raw: Vec<u8> = whole.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(raw, stream, "the events' bytes are the stream's bytes");

        // Every single split, and pairs of splits a few bytes apart (through every CRLF).
        for first in 0..stream.len() {
            for gap in [1, 2, 3, 17] {
                let second = (first + gap).min(stream.len());
                let (events, rest) = parse_in_pieces(stream, &[first, second]);
                assert_eq!(events, whole, "split at {first} and {second}");
                assert!(rest.is_empty());
            }
        }
    }

    #[test]
    fn every_line_ending_ends_lines_and_a_lone_cr_waits_for_the_next_byte() {
        for stream in [
            &b"event: a\ndata: 1\n\n"[..],
            b"event: a\r\ndata: 1\r\n\r\n",
            b"event: a\rdata: 1\r\r",
            b"event: a\r\ndata: 1\n\r\n",
        ] {
            let (events, _) = parse_in_pieces(stream, &[]);
            assert_eq!(
                fields(&events),
                [(Some("a".to_owned()), Some("1".to_owned()))],
                "{stream:?}"
            );
        }

        let mut parser = SseParser::new(1024);
        assert!(parser.feed(b"data: x\r\r", false).unwrap().is_empty());
        let events = parser.feed(b"\n", false).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].raw, b"data: x\r\r\n");
    }

    #[test]
    fn data_lines_join_comments_vanish_and_fields_follow_the_rules() {
        let stream = b"\xEF\xBB\xBFdata: one\ndata:two\n: note\ndata\nid: 7\nretry: 10\nevent:x\nbogus: y\n\n";

        let (events, _) = parse_in_pieces(stream, &[1, 2]);

        assert_eq!(
            fields(&events),
            [(Some("x".to_owned()), Some("one\ntwo\n".to_owned()))]
        );
    }

    #[test]
    fn an_event_with_no_data_line_is_given_back_with_its_bytes() {
        let (events, _) = parse_in_pieces(b"event: ping\n\n\ndata: x\n\n", &[]);

        assert_eq!(
            fields(&events),
            [
                (Some("ping".to_owned()), None),
                (None, None),
                (None, Some("x".to_owned()))
            ]
        );
        assert_eq!(events[1].raw, b"\n");
    }

    #[test]
    fn a_stream_cut_mid_event_leaves_the_partial_event_for_the_record() {
        let mut parser = SseParser::new(1024);

        let events = parser
            .feed(b"data: {\"a\":1}\n\ndata: {\"b\"", true)
            .unwrap();

        assert_eq!(events.len(), 1);
        assert_eq!(parser.held_bytes(), 10);
        assert_eq!(parser.finish(), Some(b"data: {\"b\"".to_vec()));
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn an_event_that_never_ends_is_refused_past_the_limit() {
        let mut parser = SseParser::new(16);

        assert!(parser.feed(b"data: 0123456", false).is_ok());
        assert_eq!(
            parser.feed(b"789abcdef", false),
            Err(SseError::EventTooLarge { limit: 16 })
        );
    }
}
