//! The demand-response actor: a queue of deferrable loads (the rice mill, the welding shop, a
//! water pump) that start only when the grid's spare generation covers them, and stop by a
//! durable timer when their run is over.
//!
//! It is not compiled into the node: an operator deploys it through the log
//! (`ghatta actor deploy --name demand-response ...`); until then its inputs are refused.
//!
//! # Rules
//!
//! - **Spare generation** is what the plants' ballast (dump) loads absorb: on a grid whose
//!   electronic load controllers hold frequency, every watt in the ballast is a watt a
//!   customer load could use instead. It is the sum of every node's latest ballast power,
//!   counting only reports younger than [`NODE_STALE_MS`] of log time, less the loads this
//!   actor started within the last [`SETTLE_MS`] (the reports may not show them yet).
//! - **A load starts** (its feeder contactor closes, relay reason `DemandResponse`, and a
//!   timer is set for the end of its run) when it is at the head of the queue and the spare
//!   covers its power plus [`MARGIN_W`]. Strict first come, first served: a big load waiting
//!   for water is not overtaken by small ones, or it would never start.
//! - **A load stops** when its timer fires (contactor opens), or early when a report shows
//!   the frequency under [`UNDER_MHZ`] with no ballast left: then the most recently started
//!   load stops and goes back to the head of the queue with the rest of its run, before the
//!   boards' under-frequency protection has to shed a feeder of households.
//! - The queue holds at most [`QUEUE_MAX`] requests; a load already queued or running is
//!   refused (`Stale`), as is a request out of range (`Invalid`).
//!
//! The load's contactor is a feeder relay of its own (`RelayId::Feeder`), which the
//! balancing actor's priority list must not name: two actors driving one relay would fight.
#![forbid(unsafe_code)]
#![no_std]

extern crate alloc;
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

use alloc::vec::Vec;

use bincode::{Decode, Encode};
use ghatta_actor_sdk::{
    Actor, Delivery, Host, Input, LoadRequest, NodeId, Outcome, Output, RejectReason, RelayCommand,
    RelayId, RelayReason, Telemetry, Tick,
};

/// A node's report counts for this long, ms (as the balancing actor's `NODE_STALE_MS`:
/// fifteen missed 1 Hz reports).
pub const NODE_STALE_MS: u64 = 15_000;
/// A started load is taken off the spare for this long, ms: a commit, the owning node's
/// relay and the next two 1 Hz reports.
pub const SETTLE_MS: u64 = 5_000;
/// Headroom kept above a load's power before it starts, W: a motor's start draws more than
/// its running power, and the ballast controller needs room to regulate.
pub const MARGIN_W: u32 = 500;
/// Under this frequency with no ballast left the newest load stops, mHz (above the boards'
/// first under-frequency stage, 49.2 Hz in the defaults, so this acts first).
pub const UNDER_MHZ: u32 = 49_500;
/// Requests queued at most: a village has a handful of deferrable loads.
pub const QUEUE_MAX: usize = 32;
/// Nodes remembered at most (a grid has 3 to 5 boards).
pub const NODES_MAX: usize = 16;
/// Longest run one request may ask for, ms: 12 hours.
pub const RUN_MS_MAX: u64 = 12 * 3_600_000;

const QUEUE_KEY: &[u8] = b"queue";
const RUNNING_KEY: &[u8] = b"running";
const NODES_KEY: &[u8] = b"nodes";
const NEXT_RUN_KEY: &[u8] = b"next-run";

/// A request waiting for spare generation.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Queued {
    /// The request.
    pub req: LoadRequest,
    /// Run time left, ms.
    pub left_ms: u64,
}

/// A load running now.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Running {
    /// The request.
    pub req: LoadRequest,
    /// Started, log time ms.
    pub started_ms: u64,
    /// Its run ends, log time ms.
    pub until_ms: u64,
    /// The tag of its stop timer (a fresh one per start, so a stale timer stops nothing).
    pub run: u32,
}

/// A node's latest report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct NodeSeen {
    /// The node.
    pub node: NodeId,
    /// Its ballast power, W.
    pub ballast_w: u32,
    /// Report time, log time ms.
    pub at_ms: u64,
}

/// The demand-response actor.
pub struct DemandResponse;

impl Actor for DemandResponse {
    fn handle(host: &mut dyn Host, d: &Delivery) -> Outcome {
        let now = d.ctx.log_time_ms;
        match &d.input {
            Input::DeferrableLoad(req) => request(host, now, req),
            Input::Telemetry(t) => telemetry(host, now, t),
            Input::Tick(t) => tick(host, t),
            _ => Outcome::Rejected(RejectReason::NotForMe),
        }
    }
}

ghatta_actor_sdk::export_actor!(DemandResponse);

fn load<T: Decode<()> + Default>(host: &dyn Host, key: &[u8]) -> T {
    host.get_value(key).unwrap_or_default()
}

fn request(host: &mut dyn Host, now: u64, req: &LoadRequest) -> Outcome {
    if req.load_w == 0 || req.run_ms == 0 || req.run_ms > RUN_MS_MAX {
        return Outcome::Rejected(RejectReason::Invalid);
    }
    let mut queue: Vec<Queued> = load(host, QUEUE_KEY);
    let running: Vec<Running> = load(host, RUNNING_KEY);
    if queue.iter().any(|q| q.req.load == req.load)
        || running.iter().any(|r| r.req.load == req.load)
    {
        return Outcome::Rejected(RejectReason::Stale);
    }
    if queue.len() >= QUEUE_MAX {
        return Outcome::Rejected(RejectReason::Invalid);
    }
    queue.push(Queued {
        req: req.clone(),
        left_ms: req.run_ms,
    });
    host.set_value(QUEUE_KEY, &queue);
    dispatch(host, now);
    Outcome::Handled
}

fn telemetry(host: &mut dyn Host, now: u64, t: &Telemetry) -> Outcome {
    let mut nodes: Vec<NodeSeen> = load(host, NODES_KEY);
    let seen = NodeSeen {
        node: t.node,
        ballast_w: t.ballast_w,
        at_ms: now,
    };
    if let Some(n) = nodes.iter_mut().find(|n| n.node == t.node) {
        *n = seen;
    } else if nodes.len() < NODES_MAX {
        nodes.push(seen);
    } else if let Some(oldest) = nodes.iter_mut().min_by_key(|n| (n.at_ms, n.node.0)) {
        // Full: the stalest entry makes room.
        *oldest = seen;
    }
    host.set_value(NODES_KEY, &nodes);
    if t.frequency_mhz != 0 && t.frequency_mhz < UNDER_MHZ && spare_ballast_w(&nodes, now) == 0 {
        stop_newest(host, now);
    } else {
        dispatch(host, now);
    }
    Outcome::Handled
}

fn tick(host: &mut dyn Host, t: &Tick) -> Outcome {
    let mut running: Vec<Running> = load(host, RUNNING_KEY);
    if let Some(pos) = running.iter().position(|r| r.run == t.tag) {
        let r = running.remove(pos);
        relay(host, &r.req, false);
        host.set_value(RUNNING_KEY, &running);
    }
    // A tick for a run stopped early is stale: nothing to do.
    Outcome::Handled
}

/// Ballast power of the nodes reporting recently, W.
fn spare_ballast_w(nodes: &[NodeSeen], now: u64) -> u64 {
    nodes
        .iter()
        .filter(|n| now.saturating_sub(n.at_ms) <= NODE_STALE_MS)
        .map(|n| u64::from(n.ballast_w))
        .sum()
}

/// Starts queued loads, in order, while the spare covers the head.
fn dispatch(host: &mut dyn Host, now: u64) {
    let nodes: Vec<NodeSeen> = load(host, NODES_KEY);
    let mut queue: Vec<Queued> = load(host, QUEUE_KEY);
    let mut running: Vec<Running> = load(host, RUNNING_KEY);
    let settling: u64 = running
        .iter()
        .filter(|r| now.saturating_sub(r.started_ms) < SETTLE_MS)
        .map(|r| u64::from(r.req.load_w))
        .sum();
    let mut spare = spare_ballast_w(&nodes, now).saturating_sub(settling);
    let mut started = false;
    while let Some(head) = queue.first() {
        let need = u64::from(head.req.load_w) + u64::from(MARGIN_W);
        if need > spare {
            break;
        }
        spare -= u64::from(head.req.load_w);
        let q = queue.remove(0);
        let run: u32 = load(host, NEXT_RUN_KEY);
        host.set_value(NEXT_RUN_KEY, &run.wrapping_add(1));
        let until_ms = now.saturating_add(q.left_ms);
        relay(host, &q.req, true);
        host.emit(Output::Timer {
            at_ms: until_ms,
            tag: run,
        });
        running.push(Running {
            req: q.req,
            started_ms: now,
            until_ms,
            run,
        });
        started = true;
    }
    if started {
        host.set_value(QUEUE_KEY, &queue);
        host.set_value(RUNNING_KEY, &running);
    }
}

/// Stops the most recently started load and queues the rest of its run first.
fn stop_newest(host: &mut dyn Host, now: u64) {
    let mut running: Vec<Running> = load(host, RUNNING_KEY);
    let Some(pos) = running
        .iter()
        .enumerate()
        .max_by_key(|(_, r)| (r.started_ms, r.run))
        .map(|(i, _)| i)
    else {
        return;
    };
    let r = running.remove(pos);
    relay(host, &r.req, false);
    let mut queue: Vec<Queued> = load(host, QUEUE_KEY);
    queue.insert(
        0,
        Queued {
            left_ms: r.until_ms.saturating_sub(now).max(1),
            req: r.req,
        },
    );
    queue.truncate(QUEUE_MAX);
    host.set_value(QUEUE_KEY, &queue);
    host.set_value(RUNNING_KEY, &running);
}

fn relay(host: &mut dyn Host, req: &LoadRequest, closed: bool) {
    host.emit(Output::Relay(RelayCommand {
        node: req.node,
        relay: RelayId::Feeder(req.feeder),
        closed,
        reason: RelayReason::DemandResponse,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghatta_actor_sdk::{Context, MemHost};

    fn deliver(h: &mut MemHost, at_ms: u64, input: Input) -> Outcome {
        let d = Delivery {
            ctx: Context {
                log_index: at_ms,
                log_time_ms: at_ms,
                origin: NodeId(1),
            },
            input,
        };
        DemandResponse::handle(h, &d)
    }

    fn report(node: u64, ballast_w: u32, frequency_mhz: u32) -> Input {
        Input::Telemetry(Telemetry {
            node: NodeId(node),
            frequency_mhz,
            voltage_dv: 2_300,
            generation_w: 30_000,
            ballast_w,
            ballast_capacity_w: 30_000,
            feeders: Vec::new(),
        })
    }

    fn mill(load: u16, load_w: u32, run_ms: u64) -> Input {
        Input::DeferrableLoad(LoadRequest {
            load,
            node: NodeId(2),
            feeder: 7 + load,
            load_w,
            run_ms,
        })
    }

    fn relays(h: &mut MemHost) -> Vec<(u16, bool)> {
        h.take_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Relay(RelayCommand {
                    relay: RelayId::Feeder(f),
                    closed,
                    ..
                }) => Some((f, closed)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_load_waits_for_spare_generation_then_runs_its_time() {
        let mut h = MemHost::default();
        deliver(&mut h, 1_000, report(1, 3_000, 50_000));
        assert_eq!(
            deliver(&mut h, 2_000, mill(1, 5_000, 60_000)),
            Outcome::Handled
        );
        assert!(
            relays(&mut h).is_empty(),
            "3 kW of ballast does not cover 5 kW"
        );
        deliver(&mut h, 3_000, report(2, 3_000, 50_000));
        assert_eq!(relays(&mut h), [(8, true)], "6 kW covers 5 kW + margin");
        let running: Vec<Running> = load(&h as &dyn Host, RUNNING_KEY);
        assert_eq!(running[0].until_ms, 63_000);
        deliver(
            &mut h,
            63_000,
            Input::Tick(Tick {
                due_ms: 63_000,
                tag: running[0].run,
            }),
        );
        assert_eq!(relays(&mut h), [(8, false)]);
    }

    #[test]
    fn first_come_first_served_and_stale_reports_do_not_count() {
        let mut h = MemHost::default();
        deliver(&mut h, 0, report(1, 4_000, 50_000));
        deliver(&mut h, 1_000, mill(1, 8_000, 60_000));
        deliver(&mut h, 1_000, mill(2, 1_000, 60_000));
        assert!(
            relays(&mut h).is_empty(),
            "the small load does not overtake"
        );
        // Node 1's report is stale by now: node 2's 8 kW alone does not cover 8 kW + margin.
        deliver(&mut h, 20_000, report(2, 8_000, 50_000));
        assert!(relays(&mut h).is_empty());
        deliver(&mut h, 21_000, report(1, 2_000, 50_000));
        assert_eq!(relays(&mut h), [(8, true), (9, true)]);
        assert_eq!(
            deliver(&mut h, 22_000, mill(1, 8_000, 60_000)),
            Outcome::Rejected(RejectReason::Stale)
        );
    }

    #[test]
    fn under_frequency_without_ballast_stops_the_newest_load_and_requeues_it() {
        let mut h = MemHost::default();
        deliver(&mut h, 0, report(1, 20_000, 50_000));
        deliver(&mut h, 0, mill(1, 5_000, 60_000));
        deliver(&mut h, 10_000, mill(2, 5_000, 60_000));
        assert_eq!(relays(&mut h), [(8, true), (9, true)]);
        deliver(&mut h, 20_000, report(1, 0, 49_300));
        assert_eq!(relays(&mut h), [(9, false)]);
        let queue: Vec<Queued> = load(&h as &dyn Host, QUEUE_KEY);
        assert_eq!((queue[0].req.load, queue[0].left_ms), (2, 50_000));
        // Its old timer stops nothing.
        let running: Vec<Running> = load(&h as &dyn Host, RUNNING_KEY);
        let stale = running[0].run + 1;
        deliver(
            &mut h,
            70_000,
            Input::Tick(Tick {
                due_ms: 70_000,
                tag: stale,
            }),
        );
        assert!(relays(&mut h).is_empty());
    }

    #[test]
    fn requests_out_of_range_are_refused() {
        let mut h = MemHost::default();
        for bad in [
            mill(1, 0, 1_000),
            mill(1, 1_000, 0),
            mill(1, 1_000, RUN_MS_MAX + 1),
        ] {
            assert_eq!(
                deliver(&mut h, 0, bad),
                Outcome::Rejected(RejectReason::Invalid)
            );
        }
        for load in 0..QUEUE_MAX as u16 {
            deliver(&mut h, 0, mill(load, 1_000, 1_000));
        }
        assert_eq!(
            deliver(&mut h, 0, mill(99, 1_000, 1_000)),
            Outcome::Rejected(RejectReason::Invalid)
        );
    }
}
