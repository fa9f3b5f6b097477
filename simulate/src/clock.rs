//! A node's wall clock in the simulator: simulated time from a fixed calendar epoch, with the
//! rate error and steps the scenario's clock faults ask for.
//!
//! Only the node's [`Clock`] drifts (leader timestamps, log time, meter-read times); tokio's
//! timers, and so openraft's heartbeats and election timeouts, run on true simulated time. A
//! drifting crystal on a real board would stretch those too, by at most a few hundred ppm,
//! which is far below the election timeout's own randomisation.

use std::sync::Mutex;

use ghatta_sim::time::{DriftClock, Epoch};

use ghatta::clock::Clock;

/// One node's clock. It survives the node's crashes (a board's clock keeps running while the
/// controller process restarts), so the world keeps one per node, not per incarnation.
#[derive(Debug)]
pub struct SimClock {
    epoch: Epoch,
    /// Unix ms at simulated time zero.
    start_unix_ms: u64,
    state: Mutex<DriftState>,
}

/// The drift model, re-based at every change so a new rate applies from now on (changing the
/// rate never steps the clock; only an explicit offset does).
#[derive(Debug, Clone, Copy)]
struct DriftState {
    /// Simulated ms at which `model` took effect.
    since_sim_ms: u64,
    /// Local (drifted) ms since the epoch at that moment, without the offset.
    since_local_ms: u64,
    model: DriftClock,
}

impl SimClock {
    /// A clock that reads `start_unix_ms` at the world's epoch and runs true.
    pub fn new(epoch: Epoch, start_unix_ms: u64) -> Self {
        SimClock {
            epoch,
            start_unix_ms,
            state: Mutex::new(DriftState {
                since_sim_ms: 0,
                since_local_ms: 0,
                model: DriftClock::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DriftState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Local ms since the epoch (without the Unix base) at simulated time `sim_ms`.
    fn local_ms(s: &DriftState, sim_ms: u64) -> u64 {
        let run = DriftClock {
            drift_ppm: s.model.drift_ppm,
            offset_ms: 0,
        }
        .local_ms(sim_ms.saturating_sub(s.since_sim_ms));
        s.since_local_ms.saturating_add(run)
    }

    /// Applies a clock fault (or its end) now: the new rate from now on, and the new step.
    /// Call it on the clock's own runtime (in a lockstep run, the node's); elsewhere use
    /// [`SimClock::set_at`].
    pub fn set(&self, model: DriftClock) {
        self.set_at(model, self.epoch.elapsed_ms());
    }

    /// [`SimClock::set`] at simulated time `now_ms`, for the world: in a lockstep run this
    /// clock's epoch is on the node's runtime, whose clock the world's thread cannot read.
    pub fn set_at(&self, model: DriftClock, now_ms: u64) {
        let now = now_ms;
        let mut s = self.lock();
        let local = Self::local_ms(&s, now);
        *s = DriftState {
            since_sim_ms: now,
            since_local_ms: local,
            model,
        };
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let sim = self.epoch.elapsed_ms();
        let s = *self.lock();
        let local = i128::from(Self::local_ms(&s, sim)) + i128::from(s.model.offset_ms);
        let unix = i128::from(self.start_unix_ms) + local;
        u64::try_from(unix.max(0)).unwrap_or(u64::MAX)
    }

    /// The board's monotonic clock: the same crystal (its drift), never the steps.
    fn mono_ms(&self) -> u64 {
        let sim = self.epoch.elapsed_ms();
        Self::local_ms(&self.lock(), sim)
    }
}
