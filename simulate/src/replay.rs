//! `ReplayCache`: one execution of a delivery serves every replica that makes the same one.
//!
//! A delivery's outcome is a function of the module, the host's limits, the delivery bytes
//! (input, log index, log time, origin), the values of the state keys the actor reads, and
//! the total state size (the host's state limit): actors see nothing else (module docs). So
//! when a second replica makes a delivery with the same bytes, and every key the first
//! execution read still holds the value it read then, and the total state size is the same,
//! the first execution's status and effects are this one's too, byte for byte: the cache
//! applies the recorded writes to the state and returns them, without running wasm.
//!
//! It exists for the simulator, whose nodes share one `ActorHost`: five replicas of a grid
//! interpret every committed input five times (the simulator's largest cost), and the
//! replicas at equal log positions hold equal state (that is what the state checker holds
//! them to). Any difference in what an actor would read makes the lookup miss and the
//! delivery run for real, so a replica whose state diverged still computes its own outcome
//! and the checker still sees the divergence. A board has one replica and no use for it.
//!
//! Bounded: [`REPLAY_CACHE_ENTRIES`] deliveries, oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use ghatta::actors::{ActorKind, ActorState, DeliveryCache, Effects, Reads, Status};

/// Deliveries remembered. Replicas apply the same entry within seconds of each other; one
/// that lags further (isolated for ten minutes: a few thousand deliveries) runs them itself.
pub const REPLAY_CACHE_ENTRIES: usize = 4_096;

/// One recorded execution.
#[derive(Debug)]
struct Run {
    /// Total state bytes before the delivery (the host's state limit depends on it).
    state_bytes: u64,
    /// Every key the actor read before writing it, with the value it found.
    reads: Reads,
    status: Status,
    effects: Effects,
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<Vec<u8>, Run>,
    order: VecDeque<Vec<u8>>,
    hits: u64,
    misses: u64,
}

/// Counters of a replay cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Deliveries answered from a recorded execution.
    pub hits: u64,
    /// Deliveries that ran (nothing recorded, or the state they would read differed).
    pub misses: u64,
}

/// The cache. See the module documentation.
#[derive(Debug, Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

fn key(kind: ActorKind, delivery: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(delivery.len() + 1);
    k.push(kind.prefix());
    k.extend_from_slice(delivery);
    k
}

impl ReplayCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> ReplayStats {
        let inner = self.lock();
        ReplayStats {
            hits: inner.hits,
            misses: inner.misses,
        }
    }
}

impl DeliveryCache for ReplayCache {
    fn replay(
        &self,
        kind: ActorKind,
        delivery: &[u8],
        state: &mut ActorState,
    ) -> Option<(Status, Effects)> {
        let mut inner = self.lock();
        let valid = inner.runs.get(&key(kind, delivery)).filter(|run| {
            run.state_bytes == state.bytes
                && run
                    .reads
                    .iter()
                    .all(|(k, v)| state.map.get(k) == v.as_ref())
        });
        let Some(run) = valid else {
            inner.misses += 1;
            return None;
        };
        for (k, v) in &run.effects.writes {
            match v {
                Some(v) => state.insert(k.clone(), v.clone()),
                None => state.remove(k),
            };
        }
        let out = (run.status, run.effects.clone());
        inner.hits += 1;
        Some(out)
    }

    fn record(
        &self,
        kind: ActorKind,
        delivery: &[u8],
        state_bytes: u64,
        reads: Reads,
        status: Status,
        effects: &Effects,
    ) {
        let mut inner = self.lock();
        let k = key(kind, delivery);
        let run = Run {
            state_bytes,
            reads,
            status,
            effects: effects.clone(),
        };
        if inner.runs.insert(k.clone(), run).is_none() {
            inner.order.push_back(k);
        }
        while inner.order.len() > REPLAY_CACHE_ENTRIES {
            if let Some(old) = inner.order.pop_front() {
                inner.runs.remove(&old);
            }
        }
    }
}
