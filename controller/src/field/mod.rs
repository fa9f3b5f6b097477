//! The field loop: samples the board, proposes telemetry and meter reads in batches, and
//! executes committed relay commands addressed to this node.
//!
//! Consensus is never in the fast path: this loop only *reports* and *obeys*; it never waits
//! for a proposal before acting on the hardware.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ghatta_actor_sdk as sdk;
use ghatta_hal::{Board, RelayLine};

use crate::config::FieldConfig;
use crate::node::Node;

/// Inputs per proposal at most: one telemetry report plus a board's meter reads (a board
/// reads at most a few hundred meters), keeping an entry well under 64 KiB.
pub const MAX_INPUTS_PER_PROPOSAL: usize = 512;
/// Proposals in flight at most; further samples wait (the loop never blocks on them).
pub const MAX_PROPOSALS_IN_FLIGHT: u64 = 8;
/// Outbox records examined per pass.
pub const OUTBOX_BATCH: usize = 256;

/// Maps customer ids between the board (its own numbering) and the grid.
#[derive(Debug, Clone, Copy)]
pub struct CustomerMap {
    /// Grid id of the board's customer 1.
    pub first_customer: u32,
}

impl CustomerMap {
    fn to_grid(self, board_id: u32) -> u32 {
        board_id
            .saturating_add(self.first_customer)
            .saturating_sub(1)
    }
    fn to_board(self, grid_id: u32) -> Option<u32> {
        (grid_id >= self.first_customer).then(|| grid_id - self.first_customer + 1)
    }
}

/// Counters of the field loop.
#[derive(Debug, Default)]
pub struct FieldStats {
    /// Samples taken.
    pub samples: AtomicU64,
    /// Board read errors.
    pub read_errors: AtomicU64,
    /// Proposals committed.
    pub proposals_committed: AtomicU64,
    /// Proposals that failed (retried with the same sequence number).
    pub proposals_failed: AtomicU64,
    /// Relay commands executed.
    pub relay_actions: AtomicU64,
    /// Latest frequency read, mHz.
    pub frequency_mhz: AtomicU64,
}

/// Run the field loop until the task is dropped.
pub async fn run<B: Board>(
    node: Node,
    mut board: B,
    cfg: FieldConfig,
    map: CustomerMap,
    stats: Arc<FieldStats>,
) {
    let me = node.id();
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.telemetry_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since_meters_ms = u64::MAX;
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut outbox_cursor = node.state_machine().status().borrow().next_out_seq;
    let mut last_read: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        tick.tick().await;
        // 1. Obey: committed relay commands for this node.
        outbox_cursor = execute_outbox(&node, &mut board, map, outbox_cursor, &stats);

        // 2. Report: telemetry every tick, meters every meter interval.
        let mut inputs = Vec::new();
        match board.read_grid().await {
            Ok(g) => {
                stats.samples.fetch_add(1, Ordering::Relaxed);
                stats
                    .frequency_mhz
                    .store(u64::from(g.frequency_mhz), Ordering::Relaxed);
                inputs.push(sdk::Input::Telemetry(sdk::Telemetry {
                    node: sdk::NodeId(me),
                    frequency_mhz: g.frequency_mhz,
                    voltage_dv: g.voltage_dv,
                    generation_w: g.generation_w,
                    ballast_w: g.ballast_w,
                    ballast_capacity_w: g.ballast_capacity_w,
                    feeders: g
                        .feeders
                        .iter()
                        .map(|f| sdk::FeederLoad {
                            feeder: f.feeder,
                            load_w: f.load_w,
                            closed: f.closed,
                        })
                        .collect(),
                }));
            }
            Err(e) => {
                stats.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "grid sample failed");
            }
        }
        since_meters_ms = since_meters_ms.saturating_add(cfg.telemetry_interval_ms);
        if since_meters_ms >= cfg.meter_interval_ms {
            since_meters_ms = 0;
            for c in board.customers() {
                match board.read_energy(c).await {
                    Ok(r) => {
                        // Unchanged registers are not worth a proposal.
                        if last_read.get(&c) == Some(&r.total_wh) {
                            continue;
                        }
                        last_read.insert(c, r.total_wh);
                        inputs.push(sdk::Input::MeterRead(sdk::MeterRead {
                            customer: sdk::CustomerId(map.to_grid(c)),
                            total_wh: r.total_wh,
                            read_at_ms: node.clock().now_ms(),
                        }));
                    }
                    Err(e) => {
                        stats.read_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(customer = c, error = %e, "meter read failed");
                    }
                }
            }
        }
        if inputs.is_empty() || in_flight.load(Ordering::Relaxed) >= MAX_PROPOSALS_IN_FLIGHT {
            continue;
        }
        for chunk in inputs.chunks(MAX_INPUTS_PER_PROPOSAL) {
            let encoded: Vec<Vec<u8>> = chunk.iter().map(sdk::codec::encode).collect();
            let (node, stats, in_flight) = (node.clone(), stats.clone(), in_flight.clone());
            in_flight.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                // The same sequence number on every retry: at most one of them is applied.
                let result = match node.next_seq() {
                    Ok(seq) => {
                        let mut r = node
                            .propose_with_seq(seq, crate::raft::Body::Inputs(encoded.clone()))
                            .await;
                        for _ in 0..3 {
                            if r.is_ok() {
                                break;
                            }
                            r = node
                                .propose_with_seq(seq, crate::raft::Body::Inputs(encoded.clone()))
                                .await;
                        }
                        r.map(|_| ())
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => stats.proposals_committed.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(error = %e, "field proposal not committed");
                        stats.proposals_failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

/// Execute relay commands committed since `cursor` that are addressed to this node.
fn execute_outbox<B: Board>(
    node: &Node,
    board: &mut B,
    map: CustomerMap,
    mut cursor: u64,
    stats: &FieldStats,
) -> u64 {
    let me = node.id();
    loop {
        let records = match node.state_machine().outbox_from(cursor, OUTBOX_BATCH) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                return cursor;
            }
        };
        if records.is_empty() {
            return cursor;
        }
        for (seq, rec) in records {
            cursor = seq + 1;
            let Some(sdk::Output::Relay(cmd)) = sdk::codec::decode::<sdk::Output>(&rec.output)
            else {
                continue;
            };
            if cmd.node.0 != me {
                continue;
            }
            let line = match cmd.relay {
                sdk::RelayId::Feeder(f) => RelayLine::Feeder(f),
                sdk::RelayId::Ballast(b) => RelayLine::Ballast(b),
                sdk::RelayId::Customer(c) => match map.to_board(c.0) {
                    Some(b) => RelayLine::Customer(b),
                    None => continue,
                },
            };
            match board.set_relay(line, cmd.closed) {
                Ok(()) => {
                    stats.relay_actions.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%line, closed = cmd.closed, reason = ?cmd.reason, index = rec.index, "relay");
                }
                Err(e) => tracing::warn!(%line, error = %e, "relay command failed"),
            }
        }
    }
}
