//! The fault driver: turns a scenario's schedule and random fault rates into
//! timed actions, applies the network ones to `SimNet` itself, and hands the
//! node ones (crash, power cut, restart, clock, disk, plant) to the controller.
//!
//! Symbolic targets (`"leader"`, `"follower"`, `"random"`) are resolved when
//! the fault fires, with the driver's own seeded RNG and the leader the
//! controller reports; the end of a fault undoes exactly what its start did,
//! on the nodes resolved at the start.
//!
//! Link faults compose: each directed link keeps the model it had before its
//! first open fault (its base) and the changes of its open faults, and its
//! model is always the base with those changes applied in start order,
//! recomputed whenever one starts or ends. So overlapping faults may end in any
//! order, and the last to end leaves the base.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::link::{BurstLoss, Direction, Flap, LinkModel};
use crate::net::{NodeId, SimNet};
use crate::observe::Observation;
use crate::rng::SimRng;
use crate::scenario::{
    DEPLOY_PATIENCE_S_DEFAULT, DOWN_S_DEFAULT, DiskFile, Fault, FaultKind, LinkSpec,
    MEMBER_PATIENCE_S_DEFAULT, Scenario, Symbol, Target, Trigger,
};
use crate::time::DriftClock;

/// Largest number of faults a run may schedule (scheduled plus random), so a
/// typo in a rate cannot fill memory: a week at the maximum rate of every
/// kind stays below it.
pub const FAULTS_MAX: usize = 200_000;

/// Longest wait for the fsync an `in_sync` power cut lands in. A node in a working
/// cluster fsyncs its Raft log several times a second (every append, every vote); one that
/// has not in 10 s is idle or cut off, and waiting longer would move the cut far from where
/// the scenario put it, so it is cut plainly then.
pub const SYNC_CUT_WAIT_MS: u64 = 10_000;

/// What the controller must do to a node.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeAction {
    /// Kill the node's process: abort its tasks, drop its redb `Database`,
    /// call `SimDisk::crash` (the driver has already marked it down in `SimNet`).
    Crash {
        /// The node.
        node: NodeId,
    },
    /// Cut the node's power: as `Crash`, but call `SimDisk::power_cut`.
    PowerCut {
        /// The node.
        node: NodeId,
    },
    /// Arm a power cut in the node's next fsync of its Raft log
    /// (`SimDisk::fail_next_sync(SyncFault::PowerCut)`). The node keeps running until that
    /// fsync; when it fails, the controller cuts the node as for `PowerCut` and calls
    /// [`FaultDriver::sync_cut_landed`]. If it has not by [`SYNC_CUT_WAIT_MS`], the driver
    /// sends a `PowerCut` (the controller disarms the disk when it kills the node).
    ArmSyncCut {
        /// The node.
        node: NodeId,
    },
    /// Stop the node gracefully: run its shutdown, then drop it; nothing written is lost
    /// (the driver has already marked it down in `SimNet`).
    Stop {
        /// The node.
        node: NodeId,
    },
    /// Stop the node gracefully and never start it again (`FaultKind::Decommission`; the
    /// driver has marked it down in `SimNet` for good).
    Decommission {
        /// The node.
        node: NodeId,
    },
    /// Start the node again: a fresh `SimNet::endpoint`, redb reopened over
    /// `disk.clone()` (the driver has already marked it up in `SimNet`).
    Restart {
        /// The node.
        node: NodeId,
    },
    /// Replace the node's board (`FaultKind::ReplaceNode`): cut its power if it runs, give it
    /// blank disks and a new key pair under the same id, and teach its peers the key by
    /// restarting them one at a time (the driver has already marked it down in `SimNet`; a
    /// `Restart` at the fault's end starts the new board).
    Replace {
        /// The node.
        node: NodeId,
    },
    /// An operator's membership change of `node`, asked of a running member
    /// (`Node::member`) and retried until it holds or `patience` runs out.
    Member {
        /// The node added, promoted or removed.
        node: NodeId,
        /// What is asked.
        change: MemberChange,
        /// How long the operator keeps at it.
        patience: Duration,
    },
    /// An operator's deploy of `actor` at `version`, asked of `node` (`Node::deploy_actor`)
    /// and retried, through another running node if need be, until it commits or `patience`
    /// runs out.
    Deploy {
        /// The node asked first.
        node: NodeId,
        /// The actor's name.
        actor: String,
        /// The version deployed.
        version: u32,
        /// How long the operator keeps at it.
        patience: Duration,
    },
    /// Fail the next fsync of the node's Raft log with an I/O error
    /// (`SimDisk::fail_next_sync_io`); the node lives on and must handle it.
    FailSyncIo {
        /// The node.
        node: NodeId,
    },
    /// Set the node's local clock model.
    SetClock {
        /// The node.
        node: NodeId,
        /// Its clock from now on.
        clock: DriftClock,
    },
    /// Start (`on`) or stop the node's forgeries (`FaultKind::Rogue`).
    SetRogue {
        /// The node.
        node: NodeId,
        /// Forging from now on, or not.
        on: bool,
    },
    /// Fill the node's card (`full`), or free space on it (`SimDisk::set_full` on each of its
    /// disks).
    SetDiskFull {
        /// The node.
        node: NodeId,
        /// Full from now on, or not.
        full: bool,
    },
    /// Cut the node's power (as `PowerCut`, the driver has marked it down), then flip one bit
    /// of a page of its `file` (`SimDisk::flip_bit_in_newest(pick)`); a `Restart` at the fault's
    /// end.
    Corrupt {
        /// The node.
        node: NodeId,
        /// Which database.
        file: DiskFile,
        /// The page and bit, from the driver's seeded RNG.
        pick: u64,
    },
    /// Set the node's disk sync delay (`SimDisk::set_sync_delay`).
    SetSyncDelay {
        /// The node.
        node: NodeId,
        /// Delay per sync; zero for a healthy disk.
        delay: Duration,
    },
    /// Multiply the load of the node's plant (`Plant::set_load_scale`).
    SetLoadScale {
        /// The node.
        node: NodeId,
        /// Multiplier.
        scale: f64,
        /// Reached linearly over this long (zero: at once).
        ramp: Duration,
    },
    /// Set the water flow of the node's plant (`Plant::set_water_factor`).
    SetWaterFactor {
        /// The node.
        node: NodeId,
        /// Fraction of rated flow.
        factor: f64,
        /// Reached linearly over this long (zero: at once).
        ramp: Duration,
    },
    /// Open or close the tie line between two nodes' plants (`Grid::set_tie`); nothing if
    /// either node has no plant or the scenario's plants are not interconnected.
    SetTie {
        /// One node.
        a: NodeId,
        /// The other.
        b: NodeId,
        /// Closed (power flows) or open.
        closed: bool,
    },
}

/// A membership change an operator asks for (`ghatta member add|promote|remove`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add as a learner.
    Add,
    /// Promote a learner to voter.
    Promote,
    /// Remove, voter or learner.
    Remove,
}

impl std::fmt::Display for MemberChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberChange::Add => "member add",
            MemberChange::Promote => "member promote",
            MemberChange::Remove => "member remove",
        })
    }
}

/// What one `poll` produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tick {
    /// Node actions for the controller to carry out, in order.
    pub actions: Vec<NodeAction>,
    /// Observations for the checker suite (fault start/end, crash/restart).
    pub observations: Vec<Observation>,
}

#[derive(Clone, Debug)]
enum Event {
    /// Boxed: a fault is large, the queue's other events a word.
    Start(Box<Fault>),
    End(u64),
    Restart(Target),
    /// The wait for an `in_sync` power cut's fsync is over (fault id).
    SyncCutDue(u64),
}

#[derive(Clone, Debug)]
enum Undo {
    /// Links cut, and tie lines opened between these pairs of nodes' plants.
    Cuts(Vec<(NodeId, NodeId)>, Vec<(NodeId, NodeId)>),
    Restart(NodeId),
    /// An `in_sync` power cut armed and not landed yet: the node is still up.
    ArmedCut(NodeId),
    /// The directed links this fault changed (its changes are keyed by its id).
    Links(Vec<(NodeId, NodeId)>),
    Clock(NodeId),
    Disk(NodeId),
    /// The node's card was full.
    Full(NodeId),
    Rogue(NodeId),
    /// The node and the ramp back to normal.
    Load(NodeId, Duration),
    /// The node and the ramp back to normal.
    Water(NodeId, Duration),
}

/// What one open fault does to one directed link, over whatever is beneath it.
#[derive(Clone, Debug)]
enum LinkChange {
    /// A partial model (`link` faults).
    Spec(LinkSpec),
    /// Flapping (`flap_link` faults).
    Flap(Flap),
    /// Burst loss (`burst_loss` faults).
    Burst(BurstLoss),
}

impl LinkChange {
    fn apply(&self, m: LinkModel) -> LinkModel {
        match self {
            // Validated when the scenario was loaded.
            LinkChange::Spec(spec) => spec.apply(m).unwrap_or(m),
            LinkChange::Flap(f) => LinkModel {
                flap: Some(*f),
                ..m
            },
            LinkChange::Burst(b) => LinkModel {
                burst: Some(*b),
                ..m
            },
        }
    }
}

/// The pairs `direction` names between `a` and `b`, as directed links.
fn directed(a: NodeId, b: NodeId, direction: Direction) -> Vec<(NodeId, NodeId)> {
    match direction {
        Direction::Both => vec![(a, b), (b, a)],
        Direction::AToB => vec![(a, b)],
        Direction::BToA => vec![(b, a)],
    }
}

/// Drives a scenario's faults over a run.
#[derive(Debug)]
pub struct FaultDriver {
    node_ids: Vec<NodeId>,
    rng: SimRng,
    queue: BTreeMap<(u64, u64), Event>,
    next_seq: u64,
    next_id: u64,
    open: BTreeMap<u64, Undo>,
    cut_counts: BTreeMap<(NodeId, NodeId), u32>,
    /// Open faults holding each tie line open (lower id first): overlapping splits close a
    /// tie only when the last of them ends.
    tie_counts: BTreeMap<(NodeId, NodeId), u32>,
    /// Each directed link with open link faults: its model before the first of them.
    link_bases: BTreeMap<(NodeId, NodeId), LinkModel>,
    /// Each directed link's open changes, by fault id (start order).
    link_changes: BTreeMap<(NodeId, NodeId), BTreeMap<u64, LinkChange>>,
    down: BTreeSet<NodeId>,
    /// Faults past their `at_s` waiting for their `when` to hold, in arming order.
    armed: Vec<Fault>,
    /// An operator's membership change is asked and not committed (the controller's view,
    /// [`FaultDriver::set_membership_in_flight`]).
    membership_in_flight: bool,
    /// Armed faults that never started before the fault phase ended, described.
    never_fired: Vec<String>,
}

/// Observes a fault that starts and ends at `t_ms` (a request, an armed error).
fn instant(tick: &mut Tick, t_ms: u64, id: u64, what: String) {
    tick.observations
        .push(Observation::FaultStart { t_ms, id, what });
    tick.observations.push(Observation::FaultEnd { t_ms, id });
}

fn ms(s: f64) -> u64 {
    (s.max(0.0) * 1_000.0) as u64
}

impl FaultDriver {
    /// A driver for `scenario`; node index `i` is `node_ids[i]`. Random
    /// faults are drawn now, from `seed`.
    pub fn new(scenario: &Scenario, seed: u64, node_ids: Vec<NodeId>) -> Self {
        let mut d = Self {
            node_ids,
            rng: SimRng::derive(seed, "faults", 0),
            queue: BTreeMap::new(),
            next_seq: 0,
            next_id: 1,
            open: BTreeMap::new(),
            cut_counts: BTreeMap::new(),
            tie_counts: BTreeMap::new(),
            link_bases: BTreeMap::new(),
            link_changes: BTreeMap::new(),
            down: BTreeSet::new(),
            armed: Vec::new(),
            membership_in_flight: false,
            never_fired: Vec::new(),
        };
        for f in &scenario.faults {
            d.push(ms(f.at_s), Event::Start(Box::new(f.clone())));
        }
        d.draw_random(scenario, seed);
        d
    }

    fn push(&mut self, at_ms: u64, e: Event) {
        assert!(
            self.queue.len() < FAULTS_MAX,
            "more than {FAULTS_MAX} faults scheduled: check the scenario's rates"
        );
        self.queue.insert((at_ms, self.next_seq), e);
        self.next_seq += 1;
    }

    fn draw_random(&mut self, scenario: &Scenario, seed: u64) {
        let r = &scenario.random_faults;
        let start = r.start_s;
        let end = r
            .end_s
            .unwrap_or(scenario.duration_s)
            .min(scenario.duration_s);
        let random = Target::Symbol(Symbol::Random);
        let mut rng = SimRng::derive(seed, "faults-random", 0);
        let kinds: [(f64, u8); 6] = [
            (r.crash_per_hour, 0),
            (r.power_cut_per_hour, 1),
            (r.partition_per_hour, 2),
            (r.isolate_per_hour, 3),
            (r.slow_disk_per_hour, 4),
            (r.clock_drift_per_hour, 5),
        ];
        for (rate, kind) in kinds {
            if rate <= 0.0 {
                continue;
            }
            let mut t = start + rng.exponential(3_600.0 / rate);
            while t < end {
                let duration = rng.exponential(r.mean_duration_s).max(1.0);
                let kind = match kind {
                    0 => FaultKind::Crash { node: random },
                    1 => FaultKind::PowerCut {
                        node: random,
                        in_sync: false,
                    },
                    2 => FaultKind::Partition {
                        a: random,
                        b: random,
                        direction: Direction::Both,
                    },
                    3 => FaultKind::Isolate {
                        node: if rng.chance(0.5) {
                            Target::Symbol(Symbol::Leader)
                        } else {
                            random
                        },
                    },
                    // A struggling SD card: 50 ms to 2 s per fsync.
                    4 => FaultKind::SlowDisk {
                        node: random,
                        sync_delay_ms: rng.range_inclusive(50, 2_000),
                    },
                    // Cheap oscillators: up to +/-200 ppm, steps up to +/-5 s.
                    _ => FaultKind::ClockDrift {
                        node: random,
                        ppm: rng.range_inclusive(0, 400) as i64 - 200,
                        offset_ms: rng.range_inclusive(0, 10_000) as i64 - 5_000,
                    },
                };
                self.push(
                    ms(t),
                    Event::Start(Box::new(Fault {
                        at_s: t,
                        duration_s: Some(duration),
                        when: None,
                        kind,
                    })),
                );
                t += rng.exponential(3_600.0 / rate);
            }
        }
    }

    /// Faults scheduled but not yet started or ended.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Nodes currently down.
    pub fn down_nodes(&self) -> &BTreeSet<NodeId> {
        &self.down
    }

    fn resolve(&mut self, t: Target, leader: Option<NodeId>, exclude: &[NodeId]) -> Option<NodeId> {
        let candidates: Vec<NodeId> = self
            .node_ids
            .iter()
            .copied()
            .filter(|n| !exclude.contains(n))
            .collect();
        let pick = |rng: &mut SimRng, c: &[NodeId]| {
            (!c.is_empty()).then(|| c[rng.below(c.len() as u64) as usize])
        };
        match t {
            Target::Index(i) => self.node_ids.get(i as usize).copied(),
            Target::Symbol(Symbol::Leader) => match leader {
                Some(l) if !exclude.contains(&l) => Some(l),
                _ => pick(&mut self.rng, &candidates),
            },
            Target::Symbol(Symbol::Follower) => {
                let c: Vec<NodeId> = candidates
                    .into_iter()
                    .filter(|&n| Some(n) != leader)
                    .collect();
                pick(&mut self.rng, &c)
            }
            Target::Symbol(Symbol::Random) => pick(&mut self.rng, &candidates),
        }
    }

    fn cut(&mut self, net: &SimNet, a: NodeId, b: NodeId, cuts: &mut Vec<(NodeId, NodeId)>) {
        *self.cut_counts.entry((a, b)).or_default() += 1;
        net.partition(a, b, Direction::AToB);
        cuts.push((a, b));
    }

    /// Adds fault `id`'s change to the directed link `x -> y` and sets its model.
    fn change_link(&mut self, net: &SimNet, id: u64, x: NodeId, y: NodeId, change: LinkChange) {
        self.link_bases
            .entry((x, y))
            .or_insert_with(|| net.link_model(x, y));
        self.link_changes
            .entry((x, y))
            .or_default()
            .insert(id, change);
        self.set_effective_link(net, x, y);
    }

    /// Sets `x -> y` to its base with its open changes applied in start order; with none
    /// left, to its base, which it then forgets.
    fn set_effective_link(&mut self, net: &SimNet, x: NodeId, y: NodeId) {
        let Some(&base) = self.link_bases.get(&(x, y)) else {
            return;
        };
        let changes = self.link_changes.get(&(x, y));
        let model = changes
            .into_iter()
            .flat_map(BTreeMap::values)
            .fold(base, |m, c| c.apply(m));
        if changes.is_none_or(BTreeMap::is_empty) {
            self.link_bases.remove(&(x, y));
            self.link_changes.remove(&(x, y));
        }
        // Setting a link restarts its flap cycle and burst chain; an unchanged one keeps them.
        if net.link_model(x, y) != model {
            net.set_link(x, y, model);
        }
    }

    /// Tells the driver whether an operator's membership change is in flight (asked, not yet
    /// committed), for faults that wait for one ([`Trigger::MembershipChange`]).
    pub fn set_membership_in_flight(&mut self, in_flight: bool) {
        self.membership_in_flight = in_flight;
    }

    /// Faults armed with a `when` that never started before the fault phase ended (each
    /// described with its trigger): a scenario that did not test what it says.
    pub fn never_fired(&self) -> &[String] {
        &self.never_fired
    }

    fn holds(&self, trigger: Trigger, leader: Option<NodeId>) -> bool {
        match trigger {
            Trigger::Leader { node } => {
                leader.is_some() && self.node_ids.get(node as usize).copied() == leader
            }
            Trigger::MembershipChange => self.membership_in_flight,
        }
    }

    /// Carries out every fault event due at or before `now_ms`. `leader` is
    /// the controller's current view of the leader (for symbolic targets and triggers).
    pub fn poll(&mut self, now_ms: u64, net: &SimNet, leader: Option<NodeId>) -> Tick {
        let mut tick = Tick::default();
        while let Some((&(at, seq), _)) = self.queue.first_key_value() {
            if at > now_ms {
                break;
            }
            let Some(event) = self.queue.remove(&(at, seq)) else {
                break;
            };
            match event {
                // Armed: it starts below, at this step or a later one, once its state holds.
                Event::Start(f) if f.when.is_some() => self.armed.push(*f),
                Event::Start(f) => self.start(now_ms, at, *f, net, leader, &mut tick),
                Event::End(id) => self.end(now_ms, id, net, &mut tick),
                Event::SyncCutDue(id) => {
                    if let Some(&Undo::ArmedCut(n)) = self.open.get(&id) {
                        tick.actions.push(NodeAction::PowerCut { node: n });
                        self.cut_landed(now_ms, id, n, net, &mut tick);
                    }
                }
                Event::Restart(target) => {
                    let node = self.resolve(target, leader, &[]);
                    let id = self.open.iter().find_map(|(&id, u)| match u {
                        Undo::Restart(n) | Undo::ArmedCut(n) if Some(*n) == node => Some(id),
                        _ => None,
                    });
                    if let Some(id) = id {
                        self.end(now_ms, id, net, &mut tick);
                    }
                }
            }
        }
        // Armed faults whose state holds start now, in arming order; their durations count
        // from here.
        let armed = std::mem::take(&mut self.armed);
        for f in armed {
            if f.when.is_some_and(|w| self.holds(w, leader)) {
                self.start(now_ms, now_ms, f, net, leader, &mut tick);
            } else {
                self.armed.push(f);
            }
        }
        tick
    }

    /// Says that the `in_sync` power cut armed on `node` landed at `t_ms` (its fsync failed
    /// and the controller has cut it): the node is down from now on, until the fault's end.
    pub fn sync_cut_landed(&mut self, t_ms: u64, node: NodeId, net: &SimNet) -> Tick {
        let mut tick = Tick::default();
        let id = self.open.iter().find_map(|(&id, u)| match u {
            Undo::ArmedCut(n) if *n == node => Some(id),
            _ => None,
        });
        if let Some(id) = id {
            self.cut_landed(t_ms, id, node, net, &mut tick);
        }
        tick
    }

    /// Fault `id`'s armed cut of `n` landed: down in `SimNet` and observed as a crash.
    fn cut_landed(&mut self, t_ms: u64, id: u64, n: NodeId, net: &SimNet, tick: &mut Tick) {
        net.set_node_down(n, true);
        tick.observations
            .push(Observation::NodeCrash { t_ms, node: n });
        self.open.insert(id, Undo::Restart(n));
    }

    /// Ends every open fault and drops every scheduled one: the start of the
    /// settle phase, in which the cluster must converge.
    pub fn heal_everything(&mut self, now_ms: u64, net: &SimNet) -> Tick {
        let mut tick = Tick::default();
        self.queue.clear();
        for f in std::mem::take(&mut self.armed) {
            let when = f.when.map(|w| w.to_string()).unwrap_or_default();
            let kind = format!("{:?}", f.kind);
            let kind = kind.split([' ', '{']).next().unwrap_or_default();
            self.never_fired.push(format!(
                "the {kind} fault armed at {} s never started: its trigger ({when}) never held \
                 in the fault phase",
                f.at_s
            ));
        }
        let ids: Vec<u64> = self.open.keys().copied().collect();
        for id in ids {
            self.end(now_ms, id, net, &mut tick);
        }
        tick
    }

    /// Starts fault `f`, scheduled for `at_ms` and carried out at `t_ms`
    /// (its end is scheduled from `at_ms`, so coarse polling does not stretch it).
    fn start(
        &mut self,
        t_ms: u64,
        at_ms: u64,
        f: Fault,
        net: &SimNet,
        leader: Option<NodeId>,
        tick: &mut Tick,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let down: Vec<NodeId> = self.down.iter().copied().collect();
        let (undo, what) = match &f.kind {
            FaultKind::Partition { a, b, direction } => {
                let Some(na) = self.resolve(*a, leader, &[]) else {
                    return;
                };
                let Some(nb) = self.resolve(*b, leader, &[na]) else {
                    return;
                };
                let mut cuts = Vec::new();
                if matches!(direction, Direction::Both | Direction::AToB) {
                    self.cut(net, na, nb, &mut cuts);
                }
                if matches!(direction, Direction::Both | Direction::BToA) {
                    self.cut(net, nb, na, &mut cuts);
                }
                (
                    Undo::Cuts(cuts, Vec::new()),
                    format!("partition {na} <-> {nb} ({direction:?}; {a} / {b})"),
                )
            }
            FaultKind::Split { nodes, open_ties } => {
                let mut side = Vec::new();
                for t in nodes {
                    if let Some(n) = self.resolve(*t, leader, &side) {
                        side.push(n);
                    }
                }
                let rest: Vec<NodeId> = self
                    .node_ids
                    .iter()
                    .copied()
                    .filter(|n| !side.contains(n))
                    .collect();
                let mut cuts = Vec::new();
                let mut ties = Vec::new();
                for &a in &side {
                    for &b in &rest {
                        self.cut(net, a, b, &mut cuts);
                        self.cut(net, b, a, &mut cuts);
                        if *open_ties {
                            let c = self.tie_counts.entry((a.min(b), a.max(b))).or_default();
                            *c += 1;
                            if *c == 1 {
                                tick.actions.push(NodeAction::SetTie {
                                    a,
                                    b,
                                    closed: false,
                                });
                            }
                            ties.push((a.min(b), a.max(b)));
                        }
                    }
                }
                let lines = if *open_ties { " and its tie lines" } else { "" };
                (
                    Undo::Cuts(cuts, ties),
                    format!("split {side:?} from {rest:?}{lines}"),
                )
            }
            FaultKind::Isolate { node } => {
                let Some(n) = self.resolve(*node, leader, &[]) else {
                    return;
                };
                let mut cuts = Vec::new();
                let others: Vec<NodeId> =
                    self.node_ids.iter().copied().filter(|&o| o != n).collect();
                for o in others {
                    self.cut(net, n, o, &mut cuts);
                    self.cut(net, o, n, &mut cuts);
                }
                (
                    Undo::Cuts(cuts, Vec::new()),
                    format!("isolate {n} ({node})"),
                )
            }
            FaultKind::HealAll => {
                let ids: Vec<u64> = self
                    .open
                    .iter()
                    .filter(|(_, u)| matches!(u, Undo::Cuts(..)))
                    .map(|(&id, _)| id)
                    .collect();
                for id in ids {
                    self.end(t_ms, id, net, tick);
                }
                return;
            }
            FaultKind::MemberAdd { node }
            | FaultKind::MemberPromote { node }
            | FaultKind::MemberRemove { node } => {
                let Some(n) = self.resolve(*node, leader, &[]) else {
                    return;
                };
                let change = match f.kind {
                    FaultKind::MemberAdd { .. } => MemberChange::Add,
                    FaultKind::MemberPromote { .. } => MemberChange::Promote,
                    _ => MemberChange::Remove,
                };
                let patience = f.duration_s.unwrap_or(MEMBER_PATIENCE_S_DEFAULT);
                tick.actions.push(NodeAction::Member {
                    node: n,
                    change,
                    patience: Duration::from_millis(ms(patience)),
                });
                // An operator's request, not a condition that holds: it starts and ends here
                // (whether it was carried out the controller judges).
                instant(tick, t_ms, id, format!("{change} of node {n}"));
                return;
            }
            FaultKind::Deploy {
                actor,
                version,
                node,
            } => {
                // A node that is down cannot be asked (the operator's CLI would not connect).
                let Some(n) = self.resolve(*node, leader, &down) else {
                    return;
                };
                let patience = f.duration_s.unwrap_or(DEPLOY_PATIENCE_S_DEFAULT);
                tick.actions.push(NodeAction::Deploy {
                    node: n,
                    actor: actor.clone(),
                    version: *version,
                    patience: Duration::from_millis(ms(patience)),
                });
                // Whether and when it became active everywhere the controller judges.
                instant(
                    tick,
                    t_ms,
                    id,
                    format!("deploy {actor} v{version} through {n}"),
                );
                return;
            }
            FaultKind::DiskIoError { node } => {
                let Some(n) = self.resolve(*node, leader, &down) else {
                    return;
                };
                tick.actions.push(NodeAction::FailSyncIo { node: n });
                // What the node does about it (the watchdog's restart) the controller reports.
                instant(
                    tick,
                    t_ms,
                    id,
                    format!("I/O error in the next fsync of {n}'s Raft log"),
                );
                return;
            }
            FaultKind::DiskFull { node } => {
                let Some(n) = self.resolve(*node, leader, &[]) else {
                    return;
                };
                tick.actions.push(NodeAction::SetDiskFull {
                    node: n,
                    full: true,
                });
                (Undo::Full(n), format!("disk of {n} full"))
            }
            FaultKind::Crash { node }
            | FaultKind::PowerCut { node, .. }
            | FaultKind::Stop { node }
            | FaultKind::ReplaceNode { node }
            | FaultKind::DiskCorrupt { node, .. } => {
                let Some(n) = self.resolve(*node, leader, &down) else {
                    return;
                };
                // Chosen now, so no other fault picks it while its cut waits for an fsync.
                self.down.insert(n);
                if matches!(f.kind, FaultKind::PowerCut { in_sync: true, .. }) {
                    tick.actions.push(NodeAction::ArmSyncCut { node: n });
                    self.open.insert(id, Undo::ArmedCut(n));
                    self.push(at_ms + SYNC_CUT_WAIT_MS, Event::SyncCutDue(id));
                } else {
                    net.set_node_down(n, true);
                    tick.actions.push(match f.kind {
                        FaultKind::Crash { .. } => NodeAction::Crash { node: n },
                        FaultKind::DiskCorrupt { file, .. } => NodeAction::Corrupt {
                            node: n,
                            file,
                            pick: self.rng.next_u64(),
                        },
                        FaultKind::Stop { .. } => NodeAction::Stop { node: n },
                        FaultKind::ReplaceNode { .. } => NodeAction::Replace { node: n },
                        _ => NodeAction::PowerCut { node: n },
                    });
                    tick.observations
                        .push(Observation::NodeCrash { t_ms, node: n });
                    self.open.insert(id, Undo::Restart(n));
                }
                let down_ms = ms(f.duration_s.unwrap_or(DOWN_S_DEFAULT));
                self.push(at_ms + down_ms, Event::End(id));
                return;
            }
            FaultKind::Restart { node } => {
                self.push(at_ms, Event::Restart(*node));
                return;
            }
            FaultKind::Decommission { node } => {
                let Some(n) = self.resolve(*node, leader, &down) else {
                    return;
                };
                // Down for good: no undo to end, so no heal starts it, and no later fault
                // picks it.
                self.down.insert(n);
                net.set_node_down(n, true);
                tick.actions.push(NodeAction::Decommission { node: n });
                tick.observations
                    .push(Observation::NodeCrash { t_ms, node: n });
                instant(tick, t_ms, id, format!("node {n} taken out of service"));
                return;
            }
            FaultKind::ClockDrift {
                node,
                ppm,
                offset_ms,
            } => {
                let Some(n) = self.resolve(*node, leader, &[]) else {
                    return;
                };
                let clock = DriftClock {
                    drift_ppm: *ppm,
                    offset_ms: *offset_ms,
                };
                tick.actions.push(NodeAction::SetClock { node: n, clock });
                (
                    Undo::Clock(n),
                    format!("clock of {n}: {ppm} ppm, {offset_ms} ms step"),
                )
            }
            FaultKind::ClockStep { node, step_ms } => {
                let Some(n) = self.resolve(*node, leader, &[]) else {
                    return;
                };
                let clock = DriftClock {
                    drift_ppm: 0,
                    offset_ms: *step_ms,
                };
                tick.actions.push(NodeAction::SetClock { node: n, clock });
                (
                    Undo::Clock(n),
                    format!("clock of {n} stepped by {step_ms} ms"),
                )
            }
            FaultKind::SlowDisk {
                node,
                sync_delay_ms,
            } => {
                let Some(n) = self.resolve(*node, leader, &[]) else {
                    return;
                };
                tick.actions.push(NodeAction::SetSyncDelay {
                    node: n,
                    delay: Duration::from_millis(*sync_delay_ms),
                });
                (
                    Undo::Disk(n),
                    format!("slow disk on {n}: {sync_delay_ms} ms per sync"),
                )
            }
            FaultKind::Rogue { node } => {
                let Some(n) = self.resolve(*node, leader, &[]) else {
                    return;
                };
                tick.actions
                    .push(NodeAction::SetRogue { node: n, on: true });
                (Undo::Rogue(n), format!("node {n} goes rogue"))
            }
            FaultKind::FlapLink {
                a,
                b,
                direction,
                up_s,
                down_s,
            } => {
                let Some(na) = self.resolve(*a, leader, &[]) else {
                    return;
                };
                let Some(nb) = self.resolve(*b, leader, &[na]) else {
                    return;
                };
                let flap = Flap {
                    up_ms: ms(*up_s).max(1),
                    down_ms: ms(*down_s).max(1),
                };
                let links = directed(na, nb, *direction);
                for &(x, y) in &links {
                    self.change_link(net, id, x, y, LinkChange::Flap(flap));
                }
                (
                    Undo::Links(links),
                    format!("flap {na} <-> {nb} ({direction:?}; up {up_s} s, down {down_s} s)"),
                )
            }
            FaultKind::Link {
                a,
                b,
                direction,
                link,
            } => {
                let Some(na) = self.resolve(*a, leader, &[]) else {
                    return;
                };
                let Some(nb) = self.resolve(*b, leader, &[na]) else {
                    return;
                };
                let links = directed(na, nb, *direction);
                for &(x, y) in &links {
                    self.change_link(net, id, x, y, LinkChange::Spec(link.clone()));
                }
                (
                    Undo::Links(links),
                    format!("link {na} <-> {nb} degraded ({direction:?}): {link:?}"),
                )
            }
            FaultKind::BurstLoss {
                a, b, direction, ..
            } => {
                let Some(na) = self.resolve(*a, leader, &[]) else {
                    return;
                };
                let Some(nb) = self.resolve(*b, leader, &[na]) else {
                    return;
                };
                let Some(burst) = f.kind.burst_loss() else {
                    return;
                };
                let links = directed(na, nb, *direction);
                for &(x, y) in &links {
                    self.change_link(net, id, x, y, LinkChange::Burst(burst));
                }
                (
                    Undo::Links(links),
                    format!("burst loss {na} <-> {nb} ({direction:?}): {burst:?}"),
                )
            }
            FaultKind::Overload {
                node,
                load_scale,
                ramp_s,
            } => {
                let Some(n) = self.resolve(*node, leader, &[]) else {
                    return;
                };
                let ramp = Duration::from_secs_f64(*ramp_s);
                tick.actions.push(NodeAction::SetLoadScale {
                    node: n,
                    scale: *load_scale,
                    ramp,
                });
                (
                    Undo::Load(n, ramp),
                    format!("overload plant of {n}: load x{load_scale}"),
                )
            }
            FaultKind::Drought {
                node,
                water_factor,
                ramp_s,
            } => {
                let Some(n) = self.resolve(*node, leader, &[]) else {
                    return;
                };
                let ramp = Duration::from_secs_f64(*ramp_s);
                tick.actions.push(NodeAction::SetWaterFactor {
                    node: n,
                    factor: *water_factor,
                    ramp,
                });
                (
                    Undo::Water(n, ramp),
                    format!("drought at plant of {n}: water x{water_factor}"),
                )
            }
        };
        tick.observations
            .push(Observation::FaultStart { t_ms, id, what });
        self.open.insert(id, undo);
        if let Some(d) = f.duration_s {
            self.push(at_ms + ms(d), Event::End(id));
        }
    }

    fn end(&mut self, t_ms: u64, id: u64, net: &SimNet, tick: &mut Tick) {
        let Some(undo) = self.open.remove(&id) else {
            return;
        };
        match undo {
            Undo::Cuts(cuts, ties) => {
                for (a, b) in ties {
                    let c = self.tie_counts.entry((a, b)).or_default();
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        self.tie_counts.remove(&(a, b));
                        tick.actions.push(NodeAction::SetTie { a, b, closed: true });
                    }
                }
                for (a, b) in cuts {
                    let c = self.cut_counts.entry((a, b)).or_default();
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        self.cut_counts.remove(&(a, b));
                        // Heal only this direction.
                        let back = net.is_cut(b, a);
                        net.heal(a, b);
                        if back {
                            net.partition(b, a, Direction::AToB);
                        }
                    }
                }
            }
            // Validation keeps an armed cut shorter than its fault; if it is healed first
            // (the settle phase), the node never went down: disarm it where it stands.
            Undo::ArmedCut(n) => {
                self.down.remove(&n);
                tick.actions.push(NodeAction::Restart { node: n });
                return;
            }
            Undo::Restart(n) => {
                net.set_node_down(n, false);
                self.down.remove(&n);
                tick.actions.push(NodeAction::Restart { node: n });
                tick.observations
                    .push(Observation::NodeRestart { t_ms, node: n });
                return;
            }
            Undo::Links(links) => {
                for (x, y) in links {
                    if let Some(c) = self.link_changes.get_mut(&(x, y)) {
                        c.remove(&id);
                    }
                    self.set_effective_link(net, x, y);
                }
            }
            Undo::Clock(n) => tick.actions.push(NodeAction::SetClock {
                node: n,
                clock: DriftClock::default(),
            }),
            Undo::Full(n) => tick.actions.push(NodeAction::SetDiskFull {
                node: n,
                full: false,
            }),
            Undo::Disk(n) => tick.actions.push(NodeAction::SetSyncDelay {
                node: n,
                delay: Duration::ZERO,
            }),
            Undo::Rogue(n) => tick
                .actions
                .push(NodeAction::SetRogue { node: n, on: false }),
            Undo::Load(n, ramp) => tick.actions.push(NodeAction::SetLoadScale {
                node: n,
                scale: 1.0,
                ramp,
            }),
            Undo::Water(n, ramp) => tick.actions.push(NodeAction::SetWaterFactor {
                node: n,
                factor: 1.0,
                ramp,
            }),
        }
        tick.observations.push(Observation::FaultEnd { t_ms, id });
    }
}
