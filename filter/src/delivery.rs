//! The queue of signed records on their way to the evidence sink, and its decisions: which
//! request may be served, which record is kept or dropped, what the next batch is, how long
//! to wait after a failure. No host calls here, so every decision is tested natively; `host`
//! only carries them out (timer, HTTP callouts, stats, logs).
//!
//! One queue lives in each Envoy worker's VM, in memory: a record waits here until the sink
//! has answered 2xx for it, so an Envoy restart or a VM crash loses every record not yet
//! delivered. A record is never sent to two calls at once, and the sink stores a resent
//! record only once, so a retry after a lost answer cannot duplicate it.
//!
//! When the buffer holds `max_buffered_records`:
//! - [`WhenFull::Refuse`] refuses new requests (503) until delivery makes room. Records of
//!   requests already admitted are always kept, so the buffer may pass its size by the
//!   number of requests in flight at that moment; no record is ever dropped for room.
//! - [`WhenFull::Drop`] serves new requests and drops *their* records, never a waiting one.
//!   An auditor then finds one gap per outage that starts when the buffer filled and ends
//!   when the sink took records again, and each dropped record was dropped at the time of
//!   its own request, so the request's log line (marked `evidence=dropped`) and the rising
//!   `mercator_evidence_dropped` stat date the gap exactly. Dropping the oldest instead
//!   would lose the beginning of the outage, often what an audit most wants, and would
//!   have to withdraw records that callers were told about long before.

use std::collections::VecDeque;
use std::time::Duration;

pub use crate::config::WhenFull;

/// Shortest wait after a failed delivery.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Shortest interval between two log lines about a full buffer (records dropped or
/// requests refused).
pub const FULL_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// A signed record waiting for delivery. `alone` records are sent one per call: their
/// batch was refused, and sending them singly finds the one at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub record: String,
    pub alone: bool,
}

/// Whether a new request may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Serve,
    /// The buffer is full and the configuration fails closed.
    Refuse,
}

/// What became of a record handed to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Kept,
    /// The buffer was full in drop mode; the record is gone.
    Dropped,
}

/// Signed records of one VM, waiting or in flight.
#[derive(Debug)]
pub struct EvidenceQueue {
    waiting: VecDeque<Pending>,
    in_flight: usize,
    max_buffered: usize,
    when_full: WhenFull,
    /// Records dropped (drop mode) or requests refused (refuse mode) since the last report.
    unreported: u64,
    last_report: Option<Duration>,
}

impl EvidenceQueue {
    pub fn new(max_buffered: usize, when_full: WhenFull) -> Self {
        Self {
            waiting: VecDeque::new(),
            in_flight: 0,
            max_buffered,
            when_full,
            unreported: 0,
            last_report: None,
        }
    }

    /// Records held, waiting or in flight.
    pub fn backlog(&self) -> usize {
        self.waiting.len() + self.in_flight
    }

    fn full(&self) -> bool {
        self.backlog() >= self.max_buffered
    }

    /// Decides, at a request's headers, whether it may be served.
    pub fn admit(&mut self) -> Admission {
        match self.when_full {
            WhenFull::Refuse if self.full() => {
                self.unreported += 1;
                Admission::Refuse
            }
            _ => Admission::Serve,
        }
    }

    /// Takes a request's signed record.
    pub fn push(&mut self, record: String) -> Queued {
        if self.when_full == WhenFull::Drop && self.full() {
            self.unreported += 1;
            return Queued::Dropped;
        }
        self.waiting.push_back(Pending {
            record,
            alone: false,
        });
        Queued::Kept
    }

    /// How many records were dropped (drop mode) or requests refused (refuse mode) since
    /// the last report, when a report is due: the first is reported at once, later ones at
    /// most every [`FULL_REPORT_INTERVAL`]. `now` is any monotonic-enough clock (time since
    /// the epoch).
    pub fn full_report(&mut self, now: Duration) -> Option<u64> {
        if self.unreported == 0 {
            return None;
        }
        let due = self
            .last_report
            .is_none_or(|last| now.saturating_sub(last) >= FULL_REPORT_INTERVAL);
        if !due {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }

    /// The next call's records, now in flight: one `alone` record, or up to `batch_size`
    /// others in arrival order.
    pub fn next_batch(&mut self, batch_size: usize) -> Vec<Pending> {
        let mut batch = Vec::new();
        if self.waiting.front().is_some_and(|p| p.alone) {
            batch.extend(self.waiting.pop_front());
        } else {
            while batch.len() < batch_size && self.waiting.front().is_some_and(|p| !p.alone) {
                batch.extend(self.waiting.pop_front());
            }
        }
        self.in_flight += batch.len();
        batch
    }

    /// The sink took the batch (or refused a lone record for good): it leaves the buffer.
    pub fn settle(&mut self, batch_len: usize) {
        self.in_flight = self.in_flight.saturating_sub(batch_len);
    }

    /// The batch was not delivered: it goes back to the front, in order, `alone` if the
    /// sink refused its content.
    pub fn requeue(&mut self, batch: Vec<Pending>, alone: bool) {
        self.settle(batch.len());
        for pending in batch.into_iter().rev() {
            self.waiting.push_front(Pending {
                record: pending.record,
                alone: alone || pending.alone,
            });
        }
    }
}

/// Exponential backoff between failed deliveries, from [`MIN_BACKOFF`] (or the cap, if
/// smaller) doubling up to a configured cap. The cap is also the longest a record waits
/// after the sink comes back, so it is short by default (5 s).
#[derive(Debug)]
pub struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self {
            current: Duration::ZERO,
            max,
        }
    }

    /// A delivery failed: the wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        let doubled = self.current.saturating_mul(2);
        self.current = doubled.max(MIN_BACKOFF).min(self.max);
        self.current
    }

    /// A delivery succeeded: the next failure starts again from the shortest wait.
    pub fn reset(&mut self) {
        self.current = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(max: usize, when_full: WhenFull) -> EvidenceQueue {
        EvidenceQueue::new(max, when_full)
    }

    fn records(batch: &[Pending]) -> Vec<&str> {
        batch.iter().map(|p| p.record.as_str()).collect()
    }

    #[test]
    fn refuse_mode_refuses_requests_when_full_but_keeps_every_admitted_record() {
        let mut queue = queue(2, WhenFull::Refuse);
        assert_eq!(queue.admit(), Admission::Serve);
        assert_eq!(queue.push("a".into()), Queued::Kept);
        assert_eq!(queue.admit(), Admission::Serve);
        assert_eq!(queue.push("b".into()), Queued::Kept);

        assert_eq!(queue.admit(), Admission::Refuse);
        // A request admitted before the buffer filled still has its record kept.
        assert_eq!(queue.push("c".into()), Queued::Kept);
        assert_eq!(queue.backlog(), 3);
        assert_eq!(queue.full_report(Duration::ZERO), Some(1), "one refusal");
        assert_eq!(queue.admit(), Admission::Refuse);
        assert_eq!(queue.full_report(FULL_REPORT_INTERVAL), Some(1));
    }

    #[test]
    fn records_in_flight_count_against_the_buffer() {
        let mut queue = queue(2, WhenFull::Refuse);
        queue.push("a".into());
        queue.push("b".into());
        let batch = queue.next_batch(10);
        assert_eq!(records(&batch), ["a", "b"]);
        assert_eq!(queue.admit(), Admission::Refuse);

        queue.settle(batch.len());
        assert_eq!(queue.backlog(), 0);
        assert_eq!(queue.admit(), Admission::Serve);
    }

    #[test]
    fn drop_mode_serves_every_request_and_drops_the_new_record_not_a_waiting_one() {
        let mut queue = queue(2, WhenFull::Drop);
        queue.push("a".into());
        queue.push("b".into());

        assert_eq!(queue.admit(), Admission::Serve);
        assert_eq!(queue.push("c".into()), Queued::Dropped);
        assert_eq!(queue.push("d".into()), Queued::Dropped);
        assert_eq!(records(&queue.next_batch(10)), ["a", "b"]);
    }

    #[test]
    fn drops_are_reported_at_once_then_at_most_every_interval_with_the_count() {
        let mut queue = queue(1, WhenFull::Drop);
        queue.push("a".into());
        let start = Duration::from_secs(1_000);

        queue.push("b".into());
        assert_eq!(queue.full_report(start), Some(1));

        queue.push("c".into());
        queue.push("d".into());
        assert_eq!(queue.full_report(start + Duration::from_secs(1)), None);
        assert_eq!(queue.full_report(start + FULL_REPORT_INTERVAL), Some(2));
        assert_eq!(
            queue.full_report(start + FULL_REPORT_INTERVAL * 3),
            None,
            "nothing new to report"
        );
    }

    #[test]
    fn a_failed_batch_goes_back_to_the_front_in_order() {
        let mut queue = queue(10, WhenFull::Refuse);
        for record in ["a", "b", "c"] {
            queue.push(record.into());
        }
        let batch = queue.next_batch(2);
        queue.push("d".into());

        queue.requeue(batch, false);

        assert_eq!(queue.backlog(), 4);
        assert_eq!(records(&queue.next_batch(10)), ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_refused_batch_is_resent_one_record_per_call() {
        let mut queue = queue(10, WhenFull::Refuse);
        for record in ["a", "b", "c"] {
            queue.push(record.into());
        }
        let batch = queue.next_batch(2);
        queue.requeue(batch, true);

        assert_eq!(records(&queue.next_batch(10)), ["a"]);
        assert_eq!(records(&queue.next_batch(10)), ["b"]);
        assert_eq!(records(&queue.next_batch(10)), ["c"]);
        assert!(queue.next_batch(10).is_empty());
    }

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let waits: Vec<_> = (0..5).map(|_| backoff.fail().as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 1000, 1000]);

        backoff.reset();
        assert_eq!(backoff.fail(), MIN_BACKOFF);
    }

    #[test]
    fn a_cap_below_the_minimum_wins() {
        let mut backoff = Backoff::new(Duration::from_millis(50));
        assert_eq!(backoff.fail(), Duration::from_millis(50));
    }
}
