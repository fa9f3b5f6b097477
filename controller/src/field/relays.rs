//! The relay arbiter: one place decides where each relay should be, from the committed
//! commands, local protection and local island credit cuts, and moves only the relays that
//! differ, recording each move with its reason.
//!
//! Precedence, per relay:
//!
//! 1. **Local holds win**: a feeder protection holds open stays open, a ballast stage
//!    protection holds closed stays closed, a customer cut for island credit stays cut,
//!    whatever was committed. (A committed "close feeder 2" while stage 1 holds it open is
//!    remembered and carried out when the hold is released.)
//! 2. Otherwise the **latest committed command** for the relay.
//! 3. Otherwise the state the relay had when the field loop started (the board's start-up
//!    state: feeders and customers closed, ballast as configured).

use std::collections::{BTreeMap, BTreeSet};

use ghatta_hal::{RelayLine, Relays};
use serde::{Deserialize, Serialize};

use crate::journal::{Cause, ReasonCode, RelayEvent};

/// A failing relay is retried at most this often, ms: a relay board that is unplugged must
/// not flood the event log or the GPIO driver ten times a second.
pub const RELAY_RETRY_MS: u64 = 1_000;

/// A committed command, as last seen in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedCmd {
    /// Close (true) or open.
    pub closed: bool,
    /// Reason code.
    pub reason: ReasonCode,
    /// Log index of the entry that produced it.
    pub index: u64,
}

/// A local hold on a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Where the hold keeps the relay.
    pub closed: bool,
    /// Reason code.
    pub reason: ReasonCode,
    /// Details.
    pub cause: Cause,
}

/// Decides and drives the relays of one board.
#[derive(Debug, Clone)]
pub struct Arbiter {
    lines: BTreeSet<RelayLine>,
    initial: BTreeMap<RelayLine, bool>,
    applied: BTreeMap<RelayLine, bool>,
    committed: BTreeMap<RelayLine, CommittedCmd>,
    /// The hold that last moved the relay (its reason is the release's reason).
    moved_by_hold: BTreeMap<RelayLine, ReasonCode>,
    /// Relays whose last command failed, with when it was tried (monotonic ms).
    failing: BTreeMap<RelayLine, u64>,
}

impl Arbiter {
    /// An arbiter for the board's relays, reading where each one is now.
    pub fn new<B: Relays>(board: &mut B) -> Arbiter {
        let lines: BTreeSet<RelayLine> = board.relay_lines().into_iter().collect();
        let mut initial = BTreeMap::new();
        for line in &lines {
            match board.relay_state(*line) {
                Ok(closed) => {
                    initial.insert(*line, closed);
                }
                Err(e) => {
                    // Unknown: assume the safe start-up state of its kind (feeders and
                    // customers closed, ballast open), the hal's defaults.
                    tracing::warn!(%line, error = %e, "cannot read relay state at start");
                    initial.insert(*line, !matches!(line, RelayLine::Ballast(_)));
                }
            }
        }
        Arbiter {
            applied: initial.clone(),
            initial,
            lines,
            committed: BTreeMap::new(),
            moved_by_hold: BTreeMap::new(),
            failing: BTreeMap::new(),
        }
    }

    /// Whether the board has this relay.
    pub fn has(&self, line: RelayLine) -> bool {
        self.lines.contains(&line)
    }

    /// The board's feeders.
    pub fn feeders(&self) -> Vec<u16> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                RelayLine::Feeder(f) => Some(*f),
                _ => None,
            })
            .collect()
    }

    /// The board's ballast stages.
    pub fn ballast(&self) -> Vec<u8> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                RelayLine::Ballast(b) => Some(*b),
                _ => None,
            })
            .collect()
    }

    /// Remember a committed command (the latest wins).
    pub fn set_committed(&mut self, line: RelayLine, cmd: CommittedCmd) {
        self.committed.insert(line, cmd);
    }

    /// The committed commands (saved with the field state).
    pub fn committed(&self) -> &BTreeMap<RelayLine, CommittedCmd> {
        &self.committed
    }

    /// Restore saved committed commands (at start).
    pub fn restore_committed(&mut self, saved: BTreeMap<RelayLine, CommittedCmd>) {
        self.committed = saved
            .into_iter()
            .filter(|(l, _)| self.lines.contains(l))
            .collect();
    }

    /// Where the committed state (or start-up) wants the relay.
    pub fn baseline(&self, line: RelayLine) -> bool {
        match self.committed.get(&line) {
            Some(c) => c.closed,
            None => self.initial(line),
        }
    }

    /// Where the relay was at start.
    fn initial(&self, line: RelayLine) -> bool {
        self.initial.get(&line).copied().unwrap_or(true)
    }

    /// Where the relay was last driven (or found at start).
    pub fn applied(&self, line: RelayLine) -> Option<bool> {
        self.applied.get(&line).copied()
    }

    /// Move every relay that is not where it should be; returns one event per attempt.
    /// `holds` are the local holds; `now_ms` is monotonic (for retry pacing), `wall_ms`
    /// stamps the events. Until `follow_committed` (the outbox has been read up to date once),
    /// relays without a hold stay at their start-up state: replaying old commands one page at
    /// a time would flap them.
    pub fn drive<B: Relays>(
        &mut self,
        board: &mut B,
        holds: &BTreeMap<RelayLine, Hold>,
        now_ms: u64,
        wall_ms: u64,
        follow_committed: bool,
    ) -> Vec<RelayEvent> {
        let mut events = Vec::new();
        let lines: Vec<RelayLine> = self.lines.iter().copied().collect();
        for line in lines {
            let hold = holds.get(&line);
            let (closed, reason, cause, local) = match hold {
                Some(h) => (h.closed, h.reason, h.cause.clone(), true),
                None => {
                    let committed = self.committed.get(&line).filter(|_| follow_committed);
                    let closed = committed.map_or_else(|| self.initial(line), |c| c.closed);
                    match (self.moved_by_hold.get(&line), committed) {
                        (Some(r), _) => (closed, *r, Cause::Released, true),
                        (None, Some(c)) => {
                            (closed, c.reason, Cause::Committed { index: c.index }, false)
                        }
                        (None, None) => (closed, ReasonCode::Protection, Cause::Released, true),
                    }
                }
            };
            if self.applied.get(&line) == Some(&closed) {
                self.failing.remove(&line);
                if hold.is_none() {
                    self.moved_by_hold.remove(&line);
                }
                continue;
            }
            if let Some(t) = self.failing.get(&line)
                && now_ms.saturating_sub(*t) < RELAY_RETRY_MS
            {
                continue;
            }
            let result = board.set_relay(line, closed);
            let error = match result {
                Ok(()) => {
                    self.applied.insert(line, closed);
                    self.failing.remove(&line);
                    match hold {
                        Some(h) => {
                            self.moved_by_hold.insert(line, h.reason);
                        }
                        None => {
                            self.moved_by_hold.remove(&line);
                        }
                    }
                    None
                }
                Err(e) => {
                    let first = !self.failing.contains_key(&line);
                    self.failing.insert(line, now_ms);
                    if !first {
                        continue;
                    }
                    tracing::warn!(%line, closed, error = %e, "relay command failed; retrying");
                    Some(e.to_string())
                }
            };
            if error.is_none() {
                tracing::info!(%line, closed, ?reason, ?cause, local, "relay");
            }
            events.push(RelayEvent {
                at_ms: wall_ms,
                line,
                closed,
                reason,
                cause,
                local,
                error,
            });
        }
        events
    }
}

/// The reason code of a committed relay reason.
pub fn reason_code(r: ghatta_actor_sdk::RelayReason) -> ReasonCode {
    use ghatta_actor_sdk::RelayReason as R;
    match r {
        R::Protection => ReasonCode::Protection,
        R::Balancing => ReasonCode::Balancing,
        R::ZeroCredit | R::CreditRestored => ReasonCode::Billing,
        R::Operator => ReasonCode::Operator,
    }
}
