//! The grid's WAN uplink in a run (`[wan]`): the sim crate's link model (`ghatta_sim::wan`)
//! with a central at its far end, the real uploader on every node (`world.rs` starts one per
//! incarnation, as `ghatta run` does), and the checks at the end: `wan_exactly_once` (every
//! committed outbox record a stream carries stored at the central once, unchanged, by the end
//! of the run) and `wan_prune` (a node never drops a record before every stream's cursor at
//! the central passed it, and drops what the retention rule says it may by the end).
//!
//! *A reference central, not `ghatta-central`'s store*: the real store's ingest runs on
//! tokio's blocking pool (its fsync must not stall the runtime), and a blocking task finishes
//! after a wall-clock time, so the order in which the simulator's one thread sees its ack
//! among other ready tasks would change from run to run and break "same seed, same trace".
//! This one keeps its records in memory and answers inline, over the same protocol and
//! channel (`ghatta_proto::wan`: Noise IK handshake, sealed frames, batches and acks) and by
//! the same ingest rule: records below the stream's cursor are skipped, a batch past it is
//! answered with a gap ack, the cursor moves to the batch's end. The real central's store is
//! tested against that rule by its own suite (`central/src/store_suite.rs`) and against the
//! uploader in simulated time by `tests/it/wan_sim.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ghatta::node::Node;
use ghatta::wan::UploaderConfig;
use ghatta::wan::connector::{BoxRead, BoxWrite, ConnectFuture, Connector};
use ghatta_proto::keys::SecretKey;
use ghatta_proto::outbox::{OutboxRecord, Stream};
use ghatta_proto::wan::{self as proto, AckBody, BatchBody, Msg, channel};
use ghatta_sim::check::Violation;
use ghatta_sim::report::WanSummary;
use ghatta_sim::rng::SimRng;
use ghatta_sim::scenario::WanSpec;
use ghatta_sim::wan::{WanLink, WanListener};
use tokio::time::Duration;

use crate::lock;

/// The grid's id at the central.
pub const GRID_ID: u64 = 1;
/// The central's wait for a connection's handshake: the real central's
/// (`ghatta_central::HANDSHAKE_TIMEOUT`, 30 s), far above a satellite round trip.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The central closes a connection that sent no batch for this long: the real central's
/// (`ghatta_central::IDLE_TIMEOUT`, 15 minutes), which the uploader's own idle hang-up
/// (`SESSION_IDLE_CLOSE`, 10 minutes) comes before.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often the world reads newly committed outbox records from a running node (and checks
/// what each node pruned): records are pruned a day of log time after their ack at the
/// earliest, so a read a second misses none.
pub const WATCH_EVERY_MS: u64 = 1_000;
/// Outbox records read at a time.
const PAGE_RECORDS: usize = 4_096;
/// Slack on the retention rule's day for the end-of-run `wan_prune` check: pruning runs when
/// an ack is applied or an hour of energy closes, so a record may outlive its day by an hour,
/// and the newest record's log time stands in for the nodes' log time.
const PRUNE_SLACK_MS: u64 = 2 * 3_600_000;

/// A key pair from the world seed (the grid's, or the central's): runs replay.
fn secret(seed: u64, what: &str) -> SecretKey {
    let mut rng = SimRng::derive(seed, what, 0);
    let mut b = [0u8; 32];
    for chunk in b.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    SecretKey::from_bytes(b)
}

/// The uploader's way to the central over the simulated link.
#[derive(Debug)]
pub struct SimWanConnector(pub WanLink);

impl Connector for SimWanConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let (rd, wr) = self.0.connect().await?;
            Ok((Box::new(rd) as BoxRead, Box::new(wr) as BoxWrite))
        })
    }

    fn describe(&self) -> String {
        "central over the simulated satellite link".into()
    }
}

/// What the central stored of one stream.
#[derive(Default)]
struct StreamStore {
    /// Every record below it is stored.
    cursor: u64,
    records: BTreeMap<u64, OutboxRecord>,
    /// Sequences a batch tried to store a second time (never, by the rule: checked anyway).
    twice: Vec<u64>,
}

#[derive(Default)]
struct CentralState {
    streams: BTreeMap<u32, StreamStore>,
    summary: WanSummary,
    /// `Mutation::CentralAcksUnstored`: every second batch with new records is acknowledged,
    /// not stored.
    acks_unstored: bool,
    /// Batches that brought records past the cursor.
    batches_new: u64,
}

/// Under `Mutation::CentralAcksUnstored`, one batch in this many is acknowledged unstored.
const UNSTORED_EVERY: u64 = 2;

impl CentralState {
    /// The real central's ingest rule (`RedbStore::ingest`), in memory.
    fn ingest(&mut self, b: &BatchBody) -> Result<AckBody, String> {
        let s = &mut self.summary;
        s.batches += 1;
        let st = self.streams.entry(b.stream).or_default();
        let have = st.cursor;
        let ack = |next_seq, gap| AckBody {
            stream: b.stream,
            next_seq,
            gap,
            batch_first_seq: b.first_seq,
        };
        if b.first_seq > have {
            s.gap_acks += 1;
            return Ok(ack(have, true));
        }
        if b.end_seq > have && b.records.iter().any(|(seq, _)| *seq >= have) {
            self.batches_new += 1;
            if self.acks_unstored && self.batches_new.is_multiple_of(UNSTORED_EVERY) {
                st.cursor = b.end_seq;
                return Ok(ack(st.cursor, false));
            }
        }
        let mut prev = None;
        for (seq, rec) in &b.records {
            let seq = *seq;
            if seq < have {
                s.records_resent += 1;
                continue;
            }
            if seq < b.first_seq || seq >= b.end_seq || prev.is_some_and(|p| seq <= p) {
                return Err(format!(
                    "stream {}: record {seq} out of order in batch [{}, {})",
                    b.stream, b.first_seq, b.end_seq
                ));
            }
            prev = Some(seq);
            if st.records.insert(seq, rec.clone()).is_some() {
                st.twice.push(seq);
            }
            s.records_stored += 1;
        }
        st.cursor = st.cursor.max(b.end_seq);
        Ok(ack(st.cursor, false))
    }
}

/// The central at the far end of the scenario's WAN link, and the link.
pub struct SimCentral {
    link: WanLink,
    state: Arc<Mutex<CentralState>>,
    uploader: UploaderConfig,
    /// Every committed outbox record, read from the nodes as they apply (`watch`).
    committed: BTreeMap<u64, OutboxRecord>,
    next_watch_ms: u64,
    violations: Vec<Violation>,
}

impl SimCentral {
    /// Makes the link (its time zero is now: the run's start) and serves it (with
    /// `acks_unstored`, the mutation `CentralAcksUnstored`). Call on the world's runtime.
    ///
    /// # Errors
    /// When the link's settings do not validate (the scenario validated them already).
    pub fn start(spec: &WanSpec, seed: u64, acks_unstored: bool) -> anyhow::Result<SimCentral> {
        let (link, listener) = WanLink::new(spec.link_config(), seed)?;
        let grid_key = secret(seed, "wan-grid-key");
        let central_key = secret(seed, "wan-central-key");
        let state = Arc::new(Mutex::new(CentralState {
            acks_unstored,
            ..CentralState::default()
        }));
        let grids = BTreeMap::from([(GRID_ID, vec![grid_key.public()])]);
        drop(tokio::spawn(serve(
            listener,
            central_key.clone(),
            grids,
            state.clone(),
        )));
        let mut uploader = UploaderConfig::new(GRID_ID, grid_key, central_key.public(), "sim");
        uploader.rate_bytes_per_s = spec.upload_bytes_per_s;
        Ok(SimCentral {
            link,
            state,
            uploader,
            committed: BTreeMap::new(),
            next_watch_ms: 0,
            violations: Vec::new(),
        })
    }

    /// What a node's uploader is started with.
    pub fn uploader(&self) -> (UploaderConfig, Arc<dyn Connector>) {
        (
            self.uploader.clone(),
            Arc::new(SimWanConnector(self.link.clone())),
        )
    }

    /// The central's cursor of each stream, in [`Stream::ALL`] order.
    fn cursors(&self) -> Vec<u64> {
        let st = lock(&self.state);
        Stream::ALL
            .iter()
            .map(|s| st.streams.get(&s.id()).map_or(0, |x| x.cursor))
            .collect()
    }

    /// Whether the central holds every record the reference node has committed (every
    /// stream's cursor at its outbox's end): the world waits for this before it ends a run.
    pub fn caught_up(&self, node: &Node) -> bool {
        let end = node.state_machine().status().borrow().next_out_seq;
        self.cursors().iter().all(|&c| c >= end)
    }

    /// Every [`WATCH_EVERY_MS`]: reads the records the nodes committed since the last read,
    /// and checks that no node dropped a record the central's cursors had not all passed.
    pub fn watch(&mut self, t_ms: u64, nodes: &[&Node]) {
        if t_ms < self.next_watch_ms {
            return;
        }
        self.next_watch_ms = t_ms + WATCH_EVERY_MS;
        self.read_committed(nodes);
        let horizon = self.cursors().into_iter().min().unwrap_or(0);
        for node in nodes {
            let first = match node.state_machine().outbox_from(0, 1) {
                Ok(page) => page.first().map(|(s, _)| *s),
                Err(_) => continue,
            };
            // Only a prefix is checked here (the first record kept); holes pinned records
            // leave are checked at the end.
            if let Some(first) = first
                && first > horizon
                && self.committed.range(horizon..first).next().is_some()
            {
                self.violations.push(Violation {
                    checker: "wan_prune".into(),
                    t_ms,
                    message: format!(
                        "node {} pruned its outbox up to {first} while the central's cursors \
                         stood at {:?} (every stream's must pass a record first)",
                        node.id(),
                        self.cursors()
                    ),
                });
            }
        }
    }

    /// Reads committed records past those already read, from the first node that has them.
    fn read_committed(&mut self, nodes: &[&Node]) {
        for node in nodes {
            loop {
                let from = self.committed.last_key_value().map_or(0, |(s, _)| s + 1);
                let Ok(page) = node.state_machine().outbox_from(from, PAGE_RECORDS) else {
                    break;
                };
                // A node that pruned past `from` (or a snapshot that did) cannot say what was
                // there: another node may.
                if page.first().is_none_or(|(s, _)| *s != from) {
                    break;
                }
                let full = page.len() == PAGE_RECORDS;
                self.committed.extend(page);
                if !full {
                    break;
                }
            }
        }
    }

    /// The end of the run: the checks, against the reference node's outbox (`node`), and the
    /// report's summary. Every record committed is also the run's committed log
    /// ([`SimCentral::committed`]).
    pub fn finish(&mut self, t_ms: u64, node: Option<&Node>) -> (WanSummary, Vec<Violation>) {
        if let Some(n) = node {
            self.read_committed(&[n]);
        }
        let mut v = std::mem::take(&mut self.violations);
        let st = lock(&self.state);
        let mut summary = st.summary.clone();
        let link = self.link.stats();
        summary.bytes_up = link.bytes_up;
        summary.bytes_down = link.bytes_down;
        summary.connects = link.connects;
        summary.connects_refused = link.refused;
        summary.connections_broken = link.broken;
        summary.outages = self.link.outages_started();
        summary.records_committed = self.committed.len() as u64;
        for stream in Stream::ALL {
            let empty = StreamStore::default();
            let stored = st.streams.get(&stream.id()).unwrap_or(&empty);
            let expected: Vec<u64> = self
                .committed
                .iter()
                .filter(|(_, r)| stream.carries(r))
                .map(|(s, _)| *s)
                .collect();
            let missing: Vec<u64> = expected
                .iter()
                .copied()
                .filter(|s| !stored.records.contains_key(s))
                .collect();
            let foreign: Vec<u64> = stored
                .records
                .iter()
                .filter(|(s, r)| self.committed.get(s) != Some(r) || !stream.carries(r))
                .map(|(s, _)| *s)
                .collect();
            let mut say = |what: String, seqs: &[u64]| {
                if let Some(first) = seqs.first() {
                    v.push(Violation {
                        checker: "wan_exactly_once".into(),
                        t_ms,
                        message: format!(
                            "stream {stream:?}: {} {what} (first: outbox seq {first})",
                            seqs.len()
                        ),
                    });
                }
            };
            say(
                format!(
                    "committed records never reached the central by the end (its cursor {})",
                    stored.cursor
                ),
                &missing,
            );
            say(
                "records stored at the central that the grid never committed or that are not \
                 this stream's"
                    .into(),
                &foreign,
            );
            say("records stored twice".into(), &stored.twice);
        }
        drop(st);
        if let Some(n) = node {
            v.extend(self.check_pruned(t_ms, n, &mut summary));
        }
        (summary, v)
    }

    /// At the end, on the reference node: what it pruned was past every stream's cursor at
    /// the central, and it kept no record the rule says goes (one a day of log time older
    /// than the newest, acknowledged on every stream, and of a kind never pinned: energy
    /// hours and alarms; relay commands, set-points and ledger lines may be the newest of
    /// their key, which only the node tracks).
    fn check_pruned(&self, t_ms: u64, node: &Node, summary: &mut WanSummary) -> Vec<Violation> {
        let mut v = Vec::new();
        let sm = node.state_machine();
        let mut kept = BTreeMap::new();
        let mut from = 0;
        while let Ok(page) = sm.outbox_from(from, PAGE_RECORDS) {
            let Some((last, _)) = page.last() else {
                break;
            };
            from = last + 1;
            kept.extend(page);
        }
        summary.outbox_end = kept.len() as u64;
        let horizon = self.cursors().into_iter().min().unwrap_or(0);
        let pruned: Vec<u64> = self
            .committed
            .keys()
            .copied()
            .filter(|s| !kept.contains_key(s))
            .collect();
        summary.pruned = pruned.len() as u64;
        if let Some(s) = pruned.iter().find(|&&s| s >= horizon) {
            v.push(Violation {
                checker: "wan_prune".into(),
                t_ms,
                message: format!(
                    "node {} pruned outbox seq {s}, which the central's cursors {:?} had not \
                     all passed",
                    node.id(),
                    self.cursors()
                ),
            });
        }
        let acked = Stream::ALL
            .iter()
            .map(|s| sm.outbox_ack(s.id()))
            .min()
            .unwrap_or(0);
        let newest = self
            .committed
            .values()
            .map(|r| r.time_ms)
            .max()
            .unwrap_or(0);
        let cutoff =
            newest.saturating_sub(ghatta::state::prune::OUTBOX_RETENTION_MS + PRUNE_SLACK_MS);
        let overdue: Vec<u64> = kept
            .iter()
            .filter(|(s, r)| **s < acked && r.time_ms < cutoff && never_pinned(r))
            .map(|(s, _)| *s)
            .collect();
        if let Some(first) = overdue.first() {
            v.push(Violation {
                checker: "wan_prune".into(),
                t_ms,
                message: format!(
                    "node {} still keeps {} acknowledged energy and alarm records more than a \
                     day of log time old (first: outbox seq {first}; acknowledged below {acked})",
                    node.id(),
                    overdue.len()
                ),
            });
        }
        v
    }

    /// Every record the run committed, by outbox sequence (read as the nodes applied them).
    pub fn committed(&self) -> &BTreeMap<u64, OutboxRecord> {
        &self.committed
    }
}

/// Energy hours and alarms: outputs no pin keeps past the retention.
fn never_pinned(r: &OutboxRecord) -> bool {
    use ghatta_actor_sdk as sdk;
    matches!(
        sdk::codec::decode::<sdk::Output>(&r.output),
        Some(sdk::Output::EnergyHour(_) | sdk::Output::EnergyLocal { .. } | sdk::Output::Alarm(_))
    )
}

/// Serves every connection the link delivers.
async fn serve(
    mut listener: WanListener,
    secret: SecretKey,
    grids: channel::AllowedGrids,
    state: Arc<Mutex<CentralState>>,
) {
    let shared = Arc::new((secret, grids, channel::ReplayCache::default()));
    while let Some((rd, wr)) = listener.accept().await {
        let (shared, state) = (shared.clone(), state.clone());
        drop(tokio::spawn(async move {
            let (secret, grids, replays) = &*shared;
            let r = connection(rd, wr, secret, grids, replays, &state).await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "simulated central: grid connection ended");
                lock(&state).summary.sessions_ended_in_error += 1;
            }
        }));
    }
}

/// One grid connection: the handshake, then batches in and acks out.
async fn connection(
    mut rd: ghatta_sim::wan::WanRead,
    mut wr: ghatta_sim::wan::WanWrite,
    secret: &SecretKey,
    grids: &channel::AllowedGrids,
    replays: &channel::ReplayCache,
    state: &Mutex<CentralState>,
) -> Result<(), proto::ProtoError> {
    let timed_out = |what: &str| {
        proto::ProtoError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            what.to_string(),
        ))
    };
    let accepted = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        channel::accept(&mut rd, &mut wr, secret, grids, replays),
    )
    .await
    .map_err(|_| timed_out("no handshake"))??;
    let channel::Accepted {
        grid,
        mut sealer,
        mut opener,
        ..
    } = accepted;
    loop {
        let Ok(frame) = tokio::time::timeout(IDLE_TIMEOUT, opener.read_frame(&mut rd)).await else {
            return Ok(());
        };
        let Msg::Batch { grid, body } = proto::decode(&frame?, grid)? else {
            return Err(proto::ProtoError::Body("a grid sent an ack".into()));
        };
        let ack = lock(state).ingest(&body).map_err(proto::ProtoError::Body)?;
        sealer
            .write_frame(&mut wr, &proto::encode_ack(grid, &ack)?)
            .await?;
    }
}
