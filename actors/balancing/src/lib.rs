//! The balancing actor: supervisory balancing of an island grid at ~1 Hz over committed
//! telemetry: ballast set-points, feeder shedding and restoring, frequency-band alarms.
//!
//! The per-cycle electronic load controller and local protection run on the boards; this actor
//! sets their targets. It runs on every replica over the same committed reports, so it is
//! integer-only and reads time only from the delivery's `log_time_ms`. State layout: see
//! [`state`].
//!
//! # On each telemetry report
//!
//! 1. The report replaces the node's previous one. A node whose last report is older than
//!    [`NODE_STALE_MS`] no longer counts: no generation, no load, no set-point, no shedding
//!    candidates. Stale data is not evidence.
//! 2. Totals: generation, load on closed feeders (feeders balancing has shed count as open, even
//!    when the report predates the relay moving), ballast capacity.
//! 3. **Shed** when the report's frequency is below `shed_below_mhz`, or when the load exceeds
//!    generation: the lowest-priority feeder that is closed and carries load is opened (relay
//!    reason `Balancing`, alarm `FeederShed`). At most one per delivery, and none within
//!    [`SHED_SETTLE_MS`] of the last shed or restore, so a reading that lags the previous step
//!    cannot shed the whole grid. With nothing left to shed, `CannotBalance` is raised once.
//! 4. Otherwise **restore** the highest-priority shed feeder (one no longer in the priority list
//!    first) when the frequency is at least `restore_above_mhz`, the surplus covers the feeder's
//!    load when shed plus `restore_margin_w`, `restore_interval_ms` of log time has passed
//!    since the last shed or restore, and the feeder's node is reporting (a silent node's load
//!    is unknown, and it may not hear the command). Restores go strictly in priority order: a
//!    big feeder waiting for room is not overtaken by a smaller one.
//! 5. **Ballast**: the surplus (generation less load, after this delivery's shed or restore) is
//!    split across the nodes with ballast capacity in proportion to capacity, clamped, exact to
//!    the watt. A set-point is emitted when it changed, and always to the reporting node, so a
//!    lost output is corrected by that node's next report without every report re-sending all.
//!
//! Alarms with a state (`FrequencyOutOfBand` per node, `CannotBalance` for the grid) are sent
//! only when the state changes: `subject` 1 when raised, 0 when cleared. A frequency of 0 means
//! "not measured" (feeder-only boards): it neither sheds, restores nor changes the band state.
#![forbid(unsafe_code)]
#![no_std]

extern crate alloc;
// Natively the cdylib half of this crate needs a panic handler and a global allocator: linking
// std provides both (on wasm32 the SDK's `export_actor!` does). The code uses only core and alloc.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

pub mod grid;
pub mod state;

use alloc::string::String;
use alloc::vec::Vec;

use ghatta_actor_sdk::{
    Actor, Alarm, AlarmCode, BalancingConfig, Delivery, FeederRef, Host, Input, NodeId, Outcome,
    Output, RejectReason, RelayCommand, RelayId, RelayReason, Telemetry,
};

use crate::grid::Totals;
use crate::state::{Balance, FEEDERS_PER_NODE_MAX, NODES_MAX, NodeReport, Shed, Store};

/// Minimum log time between a shed or restore and the next shed, ms. A shed takes a commit, the
/// owning node's field loop and a few cycles of the plant to show in frequency; two 1 Hz reports
/// is the least that can reflect it. Fast protection stays with the boards' under-frequency
/// relays, whose stages wait 10-20 s.
pub const SHED_SETTLE_MS: u64 = 2_000;
/// A node's report counts for this long, ms: fifteen missed 1 Hz reports rides out an election
/// or a burst of radio loss, and is about one under-frequency stage delay (10-20 s), after which
/// a plant that stopped reporting must not be counted as generating.
pub const NODE_STALE_MS: u64 = 15_000;

/// The balancing actor.
pub struct Balancing;

impl Actor for Balancing {
    fn handle(host: &mut dyn Host, d: &Delivery) -> Outcome {
        let mut st = Store::new(host);
        match &d.input {
            Input::Telemetry(t) => telemetry(&mut st, d.ctx.log_time_ms, t),
            Input::SetBalancingConfig(cfg) => set_config(&mut st, cfg),
            _ => Outcome::Rejected(RejectReason::NotForMe),
        }
    }
}

// A full path: the macro expands inside a module of its own, where a bare `Balancing` is not in
// scope.
ghatta_actor_sdk::export_actor!(crate::Balancing);

fn set_config(st: &mut Store<'_>, cfg: &BalancingConfig) -> Outcome {
    if !state::config_is_valid(cfg) {
        return Outcome::Rejected(RejectReason::Invalid);
    }
    st.set_config(cfg);
    Outcome::Handled
}

fn alarm(
    st: &mut Store<'_>,
    code: AlarmCode,
    node: Option<NodeId>,
    subject: u32,
    value: i64,
    text: &str,
) {
    st.host().emit(Output::Alarm(Alarm {
        code,
        node,
        subject,
        value,
        text: String::from(text),
    }));
}

fn feeder_relay(st: &mut Store<'_>, f: FeederRef, closed: bool) {
    st.host().emit(Output::Relay(RelayCommand {
        node: f.node,
        relay: RelayId::Feeder(f.feeder),
        closed,
        reason: RelayReason::Balancing,
    }));
}

/// Raise or clear `CannotBalance`, alarming only on a change.
fn set_cannot_balance(st: &mut Store<'_>, bal: &mut Balance, raised: bool, deficit_w: u64) {
    if bal.cannot_balance == raised {
        return;
    }
    bal.cannot_balance = raised;
    let text = if raised {
        "generation short and no feeder left to shed"
    } else {
        "balancing possible again"
    };
    let value = i64::try_from(deficit_w).unwrap_or(i64::MAX);
    alarm(
        st,
        AlarmCode::CannotBalance,
        None,
        u32::from(raised),
        value,
        text,
    );
}

fn telemetry(st: &mut Store<'_>, now_ms: u64, t: &Telemetry) -> Outcome {
    if t.feeders.len() > FEEDERS_PER_NODE_MAX {
        return Outcome::Rejected(RejectReason::Invalid);
    }
    let mut nodes = st.nodes();
    if let Err(at) = nodes.binary_search(&t.node) {
        if nodes.len() >= NODES_MAX {
            return Outcome::Rejected(RejectReason::Invalid);
        }
        nodes.insert(at, t.node);
        st.set_nodes(&nodes);
    }
    let cfg = st.config();
    let before = st.balance();
    let mut bal = before.clone();
    let measured = grid::is_measured(t.frequency_mhz);

    let was_out = st.report(t.node).is_some_and(|r| r.out_of_band);
    let is_out = if measured {
        grid::out_of_band(t.frequency_mhz)
    } else {
        was_out
    };
    if is_out != was_out {
        let text = if is_out {
            "frequency outside the statutory 48.75-51.25 Hz band"
        } else {
            "frequency back inside the statutory band"
        };
        let value = i64::from(t.frequency_mhz);
        alarm(
            st,
            AlarmCode::FrequencyOutOfBand,
            Some(t.node),
            u32::from(is_out),
            value,
            text,
        );
    }
    let report = NodeReport {
        at_ms: now_ms,
        frequency_mhz: t.frequency_mhz,
        generation_w: t.generation_w,
        ballast_capacity_w: t.ballast_capacity_w,
        out_of_band: is_out,
        feeders: t.feeders.clone(),
    };
    st.set_report(t.node, &report);

    let fresh: Vec<(NodeId, NodeReport)> = nodes
        .iter()
        .filter_map(|&n| {
            if n == t.node {
                Some(report.clone())
            } else {
                st.report(n)
            }
            .map(|r| (n, r))
        })
        .filter(|(_, r)| now_ms.saturating_sub(r.at_ms) <= NODE_STALE_MS)
        .collect();
    let shed_refs: Vec<FeederRef> = bal.shed.iter().map(|s| s.feeder).collect();
    let mut totals = grid::totals(&fresh, &shed_refs);

    let under_frequency = measured && t.frequency_mhz < cfg.shed_below_mhz;
    if under_frequency || totals.short() {
        let settled = bal
            .last_action_ms
            .is_none_or(|a| now_ms >= a.saturating_add(SHED_SETTLE_MS));
        if settled {
            shed_one(st, &cfg, &fresh, &mut bal, &mut totals, now_ms);
        }
    } else {
        set_cannot_balance(st, &mut bal, false, 0);
        if measured && t.frequency_mhz >= cfg.restore_above_mhz {
            restore_one(st, &cfg, &fresh, &mut bal, &mut totals, now_ms);
        }
    }

    let capacities: Vec<(NodeId, u32)> = fresh
        .iter()
        .filter(|(_, r)| r.ballast_capacity_w > 0)
        .map(|(n, r)| (*n, r.ballast_capacity_w))
        .collect();
    let setpoints = grid::ballast_setpoints(totals.surplus_w(), &capacities);
    for &(node, setpoint_w) in &setpoints {
        let last = bal
            .setpoints
            .iter()
            .find(|(n, _)| *n == node)
            .map(|&(_, s)| s);
        if last != Some(setpoint_w) || node == t.node {
            st.host().emit(Output::BallastSetpoint { node, setpoint_w });
        }
    }
    bal.setpoints = setpoints;
    if bal != before {
        st.set_balance(&bal);
    }
    Outcome::Handled
}

/// Open the lowest-priority feeder that is closed and carries load, or raise `CannotBalance`.
fn shed_one(
    st: &mut Store<'_>,
    cfg: &BalancingConfig,
    fresh: &[(NodeId, NodeReport)],
    bal: &mut Balance,
    totals: &mut Totals,
    now_ms: u64,
) {
    let candidate = cfg.priorities.iter().rev().find_map(|f| {
        if bal.shed.iter().any(|s| s.feeder == *f) {
            return None;
        }
        let (_, report) = fresh.iter().find(|(n, _)| *n == f.node)?;
        let load = report
            .feeders
            .iter()
            .find(|l| l.feeder == f.feeder && l.closed && l.load_w > 0)?;
        Some((*f, load.load_w))
    });
    let Some((feeder, load_w)) = candidate else {
        set_cannot_balance(
            st,
            bal,
            true,
            totals.load_w.saturating_sub(totals.generation_w),
        );
        return;
    };
    feeder_relay(st, feeder, false);
    let text = "feeder shed to balance the grid";
    alarm(
        st,
        AlarmCode::FeederShed,
        Some(feeder.node),
        u32::from(feeder.feeder),
        i64::from(load_w),
        text,
    );
    bal.shed.push(Shed {
        feeder,
        load_w,
        at_ms: now_ms,
    });
    bal.last_action_ms = Some(now_ms);
    totals.load_w = totals.load_w.saturating_sub(u64::from(load_w));
    set_cannot_balance(st, bal, false, 0);
}

/// Close the highest-priority shed feeder if the grid has room for it, has been quiet long
/// enough, and the feeder's node is reporting.
fn restore_one(
    st: &mut Store<'_>,
    cfg: &BalancingConfig,
    fresh: &[(NodeId, NodeReport)],
    bal: &mut Balance,
    totals: &mut Totals,
    now_ms: u64,
) {
    if bal
        .last_action_ms
        .is_some_and(|a| now_ms < a.saturating_add(cfg.restore_interval_ms))
    {
        return;
    }
    // Rank 0 for feeders no longer listed (they should not be shed at all), then list order.
    let rank = |s: &Shed| {
        cfg.priorities
            .iter()
            .position(|p| *p == s.feeder)
            .map_or(0, |i| i + 1)
    };
    let Some(index) = bal
        .shed
        .iter()
        .enumerate()
        .min_by_key(|(_, s)| rank(s))
        .map(|(i, _)| i)
    else {
        return;
    };
    let Some(&shed) = bal.shed.get(index) else {
        return;
    };
    let needed_w = u64::from(shed.load_w) + u64::from(cfg.restore_margin_w);
    let node_reporting = fresh.iter().any(|(n, _)| *n == shed.feeder.node);
    if !node_reporting || totals.surplus_w() < needed_w {
        return;
    }
    feeder_relay(st, shed.feeder, true);
    bal.shed.remove(index);
    bal.last_action_ms = Some(now_ms);
    totals.load_w = totals.load_w.saturating_add(u64::from(shed.load_w));
}
