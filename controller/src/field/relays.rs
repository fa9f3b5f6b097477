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
    /// The inputs of the last pass that left every relay where it should be (no failure),
    /// while no committed command has changed since: the same inputs would move nothing, so
    /// `drive` skips the walk over every line (ten times a second, a few hundred customer
    /// relays per board).
    settled: Option<(BTreeMap<RelayLine, Hold>, bool)>,
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
            settled: None,
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
        if self.committed.insert(line, cmd) != Some(cmd) {
            self.settled = None;
        }
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
        self.settled = None;
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
        if self
            .settled
            .as_ref()
            .is_some_and(|(h, f)| h == holds && *f == follow_committed)
        {
            return Vec::new();
        }
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
        // A failing relay is retried on a clock, so only a pass without failures settles.
        self.settled = self
            .failing
            .is_empty()
            .then(|| (holds.clone(), follow_committed));
        events
    }
}

/// The reason code of a committed relay reason.
pub fn reason_code(r: ghatta_actor_sdk::RelayReason) -> ReasonCode {
    use ghatta_actor_sdk::RelayReason as R;
    match r {
        R::Protection => ReasonCode::Protection,
        // Starting a deferrable load on spare generation is balancing the grid too; a code of
        // its own would change the journal's counters' layout.
        R::Balancing | R::DemandResponse => ReasonCode::Balancing,
        R::ZeroCredit | R::CreditRestored => ReasonCode::Billing,
        R::Operator => ReasonCode::Operator,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghatta_hal::{ErrorKind, HalError, HalResult};

    /// A board that counts commands and fails the next `fail` of them.
    #[derive(Default)]
    struct Board {
        state: BTreeMap<RelayLine, bool>,
        commands: u32,
        fail: u32,
    }

    impl Relays for Board {
        fn relay_lines(&self) -> Vec<RelayLine> {
            self.state.keys().copied().collect()
        }
        fn set_relay(&mut self, line: RelayLine, closed: bool) -> HalResult<()> {
            self.commands += 1;
            if self.fail > 0 {
                self.fail -= 1;
                return Err(HalError::new(ErrorKind::Io, "test board", "unplugged"));
            }
            self.state.insert(line, closed);
            Ok(())
        }
        fn relay_state(&mut self, line: RelayLine) -> HalResult<bool> {
            Ok(self.state[&line])
        }
    }

    const CUSTOMER: RelayLine = RelayLine::Customer(1);
    const FEEDER: RelayLine = RelayLine::Feeder(1);

    fn cmd(closed: bool, index: u64) -> CommittedCmd {
        CommittedCmd {
            closed,
            reason: ReasonCode::Billing,
            index,
        }
    }

    #[test]
    fn a_settled_arbiter_moves_nothing_until_an_input_changes() {
        let mut board = Board::default();
        board.state.insert(CUSTOMER, true);
        board.state.insert(FEEDER, true);
        let mut a = Arbiter::new(&mut board);
        let none = BTreeMap::new();
        assert!(a.drive(&mut board, &none, 0, 0, true).is_empty());

        a.set_committed(CUSTOMER, cmd(false, 7));
        let ev = a.drive(&mut board, &none, 100, 100, true);
        assert_eq!((ev.len(), board.state[&CUSTOMER]), (1, false));
        // The same command again (a re-read outbox page) and the same inputs: nothing moves.
        a.set_committed(CUSTOMER, cmd(false, 7));
        assert!(a.drive(&mut board, &none, 200, 200, true).is_empty());

        // A hold, then its release, each move the feeder once.
        let mut holds = BTreeMap::new();
        holds.insert(
            FEEDER,
            Hold {
                closed: false,
                reason: ReasonCode::Protection,
                cause: Cause::Released,
            },
        );
        assert_eq!(a.drive(&mut board, &holds, 300, 300, true).len(), 1);
        assert!(a.drive(&mut board, &holds, 400, 400, true).is_empty());
        let ev = a.drive(&mut board, &none, 500, 500, true);
        assert_eq!((ev.len(), board.state[&FEEDER]), (1, true));
        assert_eq!(board.commands, 3);

        // Not following committed commands any more puts the customer back at its start-up
        // state; following them again cuts it again.
        assert_eq!(a.drive(&mut board, &none, 600, 600, false).len(), 1);
        assert!(board.state[&CUSTOMER]);
        assert_eq!(a.drive(&mut board, &none, 700, 700, true).len(), 1);
        assert!(!board.state[&CUSTOMER]);
    }

    #[test]
    fn a_failing_relay_is_retried_on_its_clock_with_unchanged_inputs() {
        let mut board = Board::default();
        board.state.insert(CUSTOMER, true);
        let mut a = Arbiter::new(&mut board);
        let none = BTreeMap::new();
        board.fail = 1;
        a.set_committed(CUSTOMER, cmd(false, 3));
        let ev = a.drive(&mut board, &none, 0, 0, true);
        assert!(ev[0].error.is_some());
        // Inside the retry interval nothing is tried; after it, the command goes through.
        assert!(
            a.drive(&mut board, &none, RELAY_RETRY_MS - 1, 0, true)
                .is_empty()
        );
        assert_eq!(board.commands, 1);
        let ev = a.drive(&mut board, &none, RELAY_RETRY_MS, 0, true);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].error.is_none());
        assert!(!board.state[&CUSTOMER]);
        assert!(
            a.drive(&mut board, &none, 2 * RELAY_RETRY_MS, 0, true)
                .is_empty()
        );
        assert_eq!(board.commands, 2);
    }
}
