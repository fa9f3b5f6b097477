//! The shipper: the field loop's only writer to the journal and its only proposer. It runs as
//! its own task so that neither an fsync nor a proposal waiting 30 s for a leader ever delays
//! a grid sample or a protection decision.
//!
//! # Proposals
//!
//! - **One proposal in flight**, always. Meter reads must commit in register order (billing
//!   rejects a register below the last one it accepted), and one in flight makes that
//!   trivially true; throughput comes from size instead (up to
//!   [`READS_PER_PROPOSAL_MAX`] reads and `proposal_bytes_max` bytes per proposal: 16 KiB by
//!   default, 512 bytes on radio links, where a bigger AppendEntries never arrives whole).
//!   A batch's size is fixed when its sequence number is taken: a retry must carry exactly
//!   the same reads (if an earlier attempt committed unseen, a smaller retry would leave
//!   reads to be applied twice, a bigger one would lose some).
//! - **Sequence numbers are taken when a batch is first proposed**, written durably with the
//!   batch's read range before it is sent, and kept for every retry until it commits. A read
//!   waiting in the journal has no sequence number yet, so a week of island does not spend a
//!   week of numbers that would later fall outside the state machine's dedupe window.
//! - **Oldest reads first**, at most one proposal per `drain_interval_ms` while there is a
//!   backlog (a bounded drain rate that leaves the links to Raft's own traffic).
//! - **Telemetry only when fresh**: every proposal carries the newest telemetry if it is at
//!   most [`TELEMETRY_FRESH_MS`] old and `telemetry_interval_ms` has passed since telemetry was
//!   last proposed (so about one report a second, whatever the drain rate). A report from the
//!   island replayed after the rejoin would make the balancing actor act on a grid that no
//!   longer exists (`Telemetry` carries no sample time), so old telemetry stays in the
//!   journal's history and is never proposed. A retry replaces a stale report with the
//!   freshest one: the `(node, seq)` key, not the content, makes the retry idempotent.
//!
//! # The state it shares
//!
//! [`ShipperShared`] tells the field loop how long proposals have been stalled (an island),
//! which reads committed at which log index (for island credit), and when the journal
//! drained after a backlog.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghatta_actor_sdk as sdk;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::FieldStats;
use super::consensus::{Committed, Consensus};
use crate::journal::{Inflight, Journal, ReadEntry, RelayEvent, TelemetryEntry};
use crate::node::ProposeError;

/// Inputs per proposal at most: one telemetry report plus reads. 512 inputs of ~30 bytes keep
/// an entry near 16 KiB: a few radio frames' worth per follower, well inside the 16 MiB codec
/// limit and openraft's 64-entry appends.
pub const INPUTS_PER_PROPOSAL_MAX: usize = 512;
/// Reads per proposal at most (room for one telemetry report).
pub const READS_PER_PROPOSAL_MAX: usize = INPUTS_PER_PROPOSAL_MAX - 1;
/// Default proposal size, bytes of encoded inputs: 16 KiB carries a full 511-read batch (about
/// 12 KiB) on Wi-Fi, a LAN or a satellite hop, where an AppendEntries of that size is one
/// round trip.
pub const PROPOSAL_BYTES_MAX_DEFAULT: u64 = 16 * 1024;
/// Proposal size on radio links: 512 bytes, a telemetry report and about 20 reads. A radio
/// modem carries ~100-byte frames (XBee 802.15.4: 100 bytes; SiK: 252) with a buffer of a
/// few frames and ~20 % loss on a bad day; an AppendEntries must fit in a handful of
/// fragments or it never arrives whole. At one proposal a second that is still ~20 reads/s,
/// four times a 300-household board's rate at one read a minute per customer.
pub const PROPOSAL_BYTES_MAX_RADIO: u64 = 512;
/// Smallest configurable proposal size: one telemetry report with a few feeders plus a read.
pub const PROPOSAL_BYTES_MIN: u64 = 256;
/// Per-input overhead in a proposal's body (the length prefix of each encoded input).
const INPUT_OVERHEAD_BYTES: u64 = 2;
/// Telemetry older than this is not proposed, ms: five batch periods. The balancing actor
/// forgets a node's report after 15 s; a report older than a few seconds describes a grid
/// that has moved on.
pub const TELEMETRY_FRESH_MS: u64 = 5_000;
/// Telemetry is due again after this share of the batch period: periods arrive one interval
/// apart but the proposal of one can start a little after its arrival, so a strict full
/// interval would skip every so often; three quarters keeps "about one a second" without
/// ever letting two reports go in one period.
pub const TELEMETRY_DUE_PCT: u64 = 75;
/// Wait after a failed proposal before trying again, ms. The node's proposer already waits up
/// to its 30 s deadline for a leader; this only stops a hot loop when it fails fast (no
/// storage, or a scripted cluster).
pub const PROPOSE_RETRY_MS: u64 = 1_000;
/// Messages queued from the field loop to the shipper: 256 periods is four minutes of
/// batches, so a slow fsync or a stalled card never makes the field loop wait; when full,
/// the field loop keeps its data and sends it later.
pub const SHIPPER_QUEUE: usize = 256;
/// Commit notices kept for the field loop (one a proposal; it collects them every second).
/// When full the oldest go, which only makes island credit estimates more conservative.
pub const COMMIT_NOTICES_MAX: usize = 64;
/// Periods kept in memory when the journal cannot be written (disk full, card failing): ten
/// minutes at one a second. Past that, reads are merged per customer (the newest cumulative
/// register carries all the energy of the ones before) and telemetry of the oldest periods is
/// dropped.
pub const UNWRITTEN_PERIODS_MAX: usize = 600;
/// A backlog counts as drained when the oldest read still waiting is younger than this, ms:
/// reads keep arriving while the backlog drains, so "empty" is never quite reached.
pub const DRAINED_READ_AGE_MS: u64 = 10_000;
/// How often the shipper maintains the journal (downsampling, retention) and refreshes its
/// counters, ms.
pub const MAINTAIN_INTERVAL_MS: u64 = 1_000;

/// The proposal in flight: resolves to its sequence number and outcome.
type InflightFuture =
    std::pin::Pin<Box<dyn Future<Output = (u64, Result<Committed, ProposeError>)> + Send>>;

/// One batch period from the field loop.
#[derive(Debug, Clone, Default)]
pub struct Period {
    /// The telemetry summary and its encoded `Input::Telemetry`.
    pub telemetry: Option<(TelemetryEntry, Vec<u8>)>,
    /// Meter reads to journal.
    pub reads: Vec<ReadEntry>,
}

/// What the field loop sends the shipper.
#[derive(Debug)]
pub enum ToShipper {
    /// A batch period's data.
    Period(Period),
    /// Relay events to record.
    Events(Vec<RelayEvent>),
    /// The field loop's state to save.
    FieldState(Vec<u8>),
}

/// Reads that committed at a log index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitNotice {
    /// Log index of the answering entry.
    pub index: u64,
    /// (grid customer, register Wh).
    pub reads: Vec<(u32, u64)>,
}

/// State the shipper shares with the field loop.
#[derive(Debug, Default)]
pub struct ShipperShared {
    /// The current batch has been tried without success since.
    pub stalled_since: Option<Instant>,
    /// Log index of the latest commit.
    pub last_commit_index: u64,
    /// Commits not yet collected by the field loop.
    pub commits: VecDeque<CommitNotice>,
    /// Log index of the commit that left the journal drained after a backlog (or after
    /// start); `None` while a backlog is waiting.
    pub drained_at_index: Option<u64>,
    /// The journal is over its limits (reads alone fill it).
    pub over_limit: bool,
}

/// Lock the shared state; a panic while it was held leaves plain data that is still usable.
pub fn lock(shared: &Mutex<ShipperShared>) -> std::sync::MutexGuard<'_, ShipperShared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shipper settings.
#[derive(Debug, Clone, Copy)]
pub struct ShipperConfig {
    /// Telemetry at most this often, ms.
    pub telemetry_interval_ms: u64,
    /// Proposals at most this often while a backlog drains, ms.
    pub drain_interval_ms: u64,
    /// Encoded inputs per proposal at most, bytes (at least one read always goes).
    pub proposal_bytes_max: u64,
}

/// The encoded `Input::MeterRead` of a journaled read.
fn meter_read_input(r: &ReadEntry) -> Vec<u8> {
    sdk::codec::encode(&sdk::Input::MeterRead(sdk::MeterRead {
        customer: sdk::CustomerId(r.customer),
        total_wh: r.total_wh,
        read_at_ms: r.read_at_ms,
    }))
}

/// Run the shipper until the field loop drops its sender.
pub async fn run<C: Consensus>(
    consensus: C,
    journal: Journal,
    cfg: ShipperConfig,
    mut rx: mpsc::Receiver<ToShipper>,
    shared: Arc<Mutex<ShipperShared>>,
    stats: Arc<FieldStats>,
) {
    let mut s = Shipper {
        consensus,
        journal,
        cfg,
        shared,
        stats,
        fresh: None,
        telemetry_proposed_at: None,
        unwritten: VecDeque::new(),
        next_start: Instant::now(),
        attempt_had_reads: false,
        last_start: None,
        wanted: true,
    };
    s.refresh_stats();
    // The journal may hold a backlog from before a restart; until it drains, island cuts stay.
    if s.journal.stats().map(|j| j.reads == 0).unwrap_or(false) {
        lock(&s.shared).drained_at_index = Some(0);
    }
    let mut inflight: Option<InflightFuture> = None;
    let mut maintain_at = Instant::now();
    loop {
        if inflight.is_none() && s.wanted && Instant::now() >= s.next_start {
            inflight = s.start();
        }
        // Idle (nothing to propose) the shipper sleeps until new data, or the next
        // maintenance; it does not poll the journal.
        let wake = if inflight.is_none() && s.wanted {
            s.next_start.min(maintain_at)
        } else {
            maintain_at
        };
        // `biased`: branches are polled in order, not at random, so the simulator replays
        // the same schedule from the same seed.
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(m) => s.handle(m),
                None => return,
            },
            (seq, result) = async { inflight.as_mut().expect("guarded by the select precondition").await }, if inflight.is_some() => {
                inflight = None;
                s.finish(seq, result);
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= maintain_at {
            s.maintain();
            maintain_at = Instant::now() + Duration::from_millis(MAINTAIN_INTERVAL_MS);
        }
    }
}

struct Shipper<C: Consensus> {
    consensus: C,
    journal: Journal,
    cfg: ShipperConfig,
    shared: Arc<Mutex<ShipperShared>>,
    stats: Arc<FieldStats>,
    /// The newest telemetry input and when it arrived.
    fresh: Option<(Instant, Vec<u8>)>,
    telemetry_proposed_at: Option<Instant>,
    /// Periods the journal refused, oldest first.
    unwritten: VecDeque<Period>,
    next_start: Instant,
    attempt_had_reads: bool,
    /// When the current (or last) attempt started.
    last_start: Option<Instant>,
    /// There may be something to propose (new data, a backlog, a retry due); cleared when a
    /// look at the journal finds nothing.
    wanted: bool,
}

impl<C: Consensus> Shipper<C> {
    fn handle(&mut self, msg: ToShipper) {
        match msg {
            ToShipper::Period(p) => {
                self.wanted = true;
                if let Some((_, input)) = &p.telemetry {
                    self.fresh = Some((Instant::now(), input.clone()));
                }
                self.unwritten.push_back(p);
                self.write_periods();
            }
            ToShipper::Events(ev) => {
                if let Err(e) = self.journal.record_events(&ev) {
                    self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, events = ev.len(), "relay events not recorded");
                }
            }
            ToShipper::FieldState(bytes) => {
                if let Err(e) = self.journal.save_field_state(&bytes) {
                    self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "field state not saved");
                }
            }
        }
    }

    /// Append the periods waiting, oldest first; keep what fails for later.
    fn write_periods(&mut self) {
        while let Some(p) = self.unwritten.front() {
            match self
                .journal
                .append(p.telemetry.as_ref().map(|(t, _)| t), &p.reads)
            {
                Ok(()) => {
                    self.stats
                        .reads_journaled
                        .fetch_add(p.reads.len() as u64, Ordering::Relaxed);
                    self.unwritten.pop_front();
                }
                Err(e) => {
                    self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, waiting = self.unwritten.len(), "journal append failed");
                    break;
                }
            }
        }
        while self.unwritten.len() > UNWRITTEN_PERIODS_MAX {
            // Merge the two oldest: telemetry of the older goes, reads are kept, newest
            // register per customer (a cumulative register carries the energy before it).
            let (Some(a), Some(mut b)) = (self.unwritten.pop_front(), self.unwritten.pop_front())
            else {
                break;
            };
            let mut reads = a.reads;
            reads.append(&mut b.reads);
            let mut newest: std::collections::BTreeMap<u32, ReadEntry> = Default::default();
            for r in reads {
                newest.insert(r.customer, r);
            }
            b.reads = newest.into_values().collect();
            self.unwritten.push_front(b);
        }
    }

    /// Start the next proposal, if there is something to propose.
    fn start(&mut self) -> Option<InflightFuture> {
        let now = Instant::now();
        let telemetry = self.fresh.as_ref().and_then(|(at, input)| {
            let fresh = now.duration_since(*at) <= Duration::from_millis(TELEMETRY_FRESH_MS);
            let due = self.telemetry_proposed_at.is_none_or(|t| {
                now.duration_since(t).as_millis() as u64 * 100
                    >= self.cfg.telemetry_interval_ms * TELEMETRY_DUE_PCT
            });
            (fresh && due).then(|| input.clone())
        });
        let batch = match self.journal.inflight() {
            Ok(b) => b,
            Err(e) => return self.fail_fast(&e.to_string()),
        };
        let (batch, reads) = match batch {
            Some(b) => match self.journal.batch_reads(&b) {
                Ok(r) => (b, r),
                Err(e) => return self.fail_fast(&e.to_string()),
            },
            None => {
                let mut oldest = match self.journal.oldest_reads(READS_PER_PROPOSAL_MAX) {
                    Ok(r) => r,
                    Err(e) => return self.fail_fast(&e.to_string()),
                };
                // Within the byte budget, keeping room for a report (retries carry the
                // freshest one), and always at least one read so the journal drains.
                let mut budget = self.cfg.proposal_bytes_max.saturating_sub(
                    self.fresh
                        .as_ref()
                        .map_or(0, |(_, t)| t.len() as u64 + INPUT_OVERHEAD_BYTES),
                );
                let mut keep = 0;
                for (_, r) in &oldest {
                    let size = meter_read_input(r).len() as u64 + INPUT_OVERHEAD_BYTES;
                    if keep > 0 && size > budget {
                        break;
                    }
                    budget = budget.saturating_sub(size);
                    keep += 1;
                }
                oldest.truncate(keep);
                if oldest.is_empty() && telemetry.is_none() {
                    self.wanted = false;
                    return None;
                }
                let seq = match self.consensus.next_seq() {
                    Ok(s) => s,
                    // A new or replaced board catching up (`node::proposer::SeqFloor`): not a
                    // fault; the reads wait in the journal.
                    Err(e @ ProposeError::CatchingUp { .. }) => {
                        tracing::debug!(error = %e, "field proposals wait for the node to catch up");
                        self.next_start = now + Duration::from_millis(PROPOSE_RETRY_MS);
                        return None;
                    }
                    Err(e) => return self.fail_fast(&e.to_string()),
                };
                let (first, reads) = match (oldest.first(), oldest.last()) {
                    (Some((f, _)), Some((l, _))) => (*f, l - f + 1),
                    _ => (0, 0),
                };
                let b = Inflight {
                    seq,
                    first_read_id: first,
                    reads,
                };
                if let Err(e) = self.journal.begin_batch(&b) {
                    return self.fail_fast(&e.to_string());
                }
                (b, oldest.into_iter().map(|(_, r)| r).collect())
            }
        };
        let mut inputs: Vec<Vec<u8>> = reads.iter().map(meter_read_input).collect();
        if let Some(t) = telemetry {
            inputs.push(t);
            self.telemetry_proposed_at = Some(now);
        }
        if inputs.is_empty() {
            // A telemetry-only batch whose report went stale (a restart): wait for a fresh one
            // and send it under the same sequence number.
            self.next_start = now + Duration::from_millis(100);
            return None;
        }
        self.attempt_had_reads = !reads.is_empty();
        self.last_start = Some(now);
        {
            let mut sh = lock(&self.shared);
            sh.stalled_since.get_or_insert(now);
        }
        let seq = batch.seq;
        let c = self.consensus.clone();
        Some(Box::pin(async move { (seq, c.propose(seq, inputs).await) }))
    }

    fn fail_fast(&mut self, why: &str) -> Option<InflightFuture> {
        self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = why, "cannot prepare a field proposal; retrying");
        self.next_start = Instant::now() + Duration::from_millis(PROPOSE_RETRY_MS);
        None
    }

    fn finish(&mut self, seq: u64, result: Result<Committed, ProposeError>) {
        let now = Instant::now();
        // A backlog or a retry may be waiting either way.
        self.wanted = true;
        match result {
            Ok(c) => {
                self.stats
                    .proposals_committed
                    .fetch_add(1, Ordering::Relaxed);
                if c.duplicate {
                    self.stats
                        .proposals_duplicate
                        .fetch_add(1, Ordering::Relaxed);
                }
                let reads = match self.journal.commit_batch(seq) {
                    Ok(r) => r,
                    Err(e) => {
                        // The batch stays in the journal and goes again under the same seq: a
                        // duplicate, harmless.
                        self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, seq, "cannot remove a committed batch");
                        Vec::new()
                    }
                };
                self.stats
                    .reads_committed
                    .fetch_add(reads.len() as u64, Ordering::Relaxed);
                let backlog_age_ms = self
                    .journal
                    .oldest_reads(1)
                    .ok()
                    .and_then(|r| r.first().map(|(_, e)| e.read_at_ms))
                    .map(|at| self.consensus.wall_ms().saturating_sub(at));
                let drained = backlog_age_ms.is_none_or(|age| age < DRAINED_READ_AGE_MS);
                let mut sh = lock(&self.shared);
                sh.stalled_since = None;
                sh.last_commit_index = sh.last_commit_index.max(c.index);
                if !reads.is_empty() {
                    if sh.commits.len() >= COMMIT_NOTICES_MAX {
                        sh.commits.pop_front();
                    }
                    sh.commits.push_back(CommitNotice {
                        index: c.index,
                        reads: reads.iter().map(|r| (r.customer, r.total_wh)).collect(),
                    });
                }
                if drained {
                    if sh.drained_at_index.is_none() {
                        sh.drained_at_index = Some(c.index);
                    }
                } else {
                    sh.drained_at_index = None;
                }
                drop(sh);
                // Backlog: the next batch one drain interval after this one started (so a
                // slow commit does not slow the rate further); otherwise when the next
                // period's data arrives (the loop wakes on it).
                self.next_start = self
                    .last_start
                    .map_or(now, |t| {
                        t + Duration::from_millis(self.cfg.drain_interval_ms)
                    })
                    .max(now);
            }
            Err(e) => {
                self.stats.proposals_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(seq, error = %e, reads = self.attempt_had_reads, "field proposal not committed; retrying with the same sequence number");
                self.next_start = now + Duration::from_millis(PROPOSE_RETRY_MS);
            }
        }
    }

    fn maintain(&mut self) {
        if !self.unwritten.is_empty() {
            self.write_periods();
        }
        let wall = self.consensus.wall_ms();
        // Bounded: a few steps a second, each bounded by DOWNSAMPLE_GROUPS_PER_STEP.
        for _ in 0..4 {
            match self.journal.maintain(wall) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "journal maintenance failed");
                    break;
                }
            }
        }
        self.refresh_stats();
    }

    fn refresh_stats(&self) {
        let Ok(j) = self.journal.stats() else {
            return;
        };
        let st = &self.stats;
        st.journal_reads.store(j.reads, Ordering::Relaxed);
        st.journal_reads_bytes
            .store(j.reads_bytes, Ordering::Relaxed);
        st.journal_telemetry.store(j.telemetry, Ordering::Relaxed);
        st.journal_telemetry_bytes
            .store(j.telemetry_bytes, Ordering::Relaxed);
        st.journal_downsampled
            .store(j.telemetry_downsampled, Ordering::Relaxed);
        st.journal_over_limit
            .store(u64::from(j.over_limit), Ordering::Relaxed);
        lock(&self.shared).over_limit = j.over_limit;
    }
}
