//! Simulated time: tokio's paused clock, a world epoch, and per-node drifting clocks.
//!
//! The whole world runs on one current-thread tokio runtime whose clock starts
//! paused ([`runtime`]). When every task is idle, tokio jumps the clock to the
//! next timer, so a simulated day costs only the CPU the world actually uses.
//! Nothing in the sim reads `std::time` to make a decision.
//!
//! Determinism caveat for the code running inside: `tokio::select!` picks a
//! random ready branch unless written with `biased;` (its RNG cannot be seeded
//! without `tokio_unstable`), and `HashMap` iteration order is per process.
//! Code whose behaviour must replay from a seed uses `biased;` and ordered maps.

use tokio::time::{Duration, Instant};

/// Builds the single-threaded, paused-clock runtime the simulated world runs on.
///
/// # Errors
/// When tokio cannot create the runtime (out of threads or file descriptors).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
}

/// As [`runtime`], with tokio's own random choices drawn from `seed` where tokio allows it.
///
/// tokio draws from a per-runtime RNG in `select!` without `biased;` and when a task starts
/// waiting on a `watch` channel (it picks one of eight wait lists at random, so tasks waiting
/// on the same channel wake in a random order: openraft's heartbeat workers do). That RNG can
/// only be seeded with `Builder::rng_seed`, which exists when tokio is compiled with
/// `--cfg tokio_unstable`; without it, runs of the same seed can schedule differently.
/// [`tokio_rng_is_seeded`] says which build this is.
///
/// # Errors
/// When tokio cannot create the runtime (out of threads or file descriptors).
pub fn seeded_runtime(seed: u64) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_time().start_paused(true);
    #[cfg(tokio_unstable)]
    b.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    #[cfg(not(tokio_unstable))]
    let _ = seed;
    b.build()
}

/// Whether [`seeded_runtime`] seeds tokio's RNG in this build (compiled with
/// `--cfg tokio_unstable`), i.e. whether whole runs replay from their seed. A function, not a
/// constant, because it is a property of the build that tests check at run time.
pub fn tokio_rng_is_seeded() -> bool {
    cfg!(tokio_unstable)
}

/// The origin of simulated time: every `t_ms` in observations counts from here.
#[derive(Clone, Copy, Debug)]
pub struct Epoch {
    start: Instant,
}

impl Epoch {
    /// Takes "now" (on the runtime's paused clock) as time zero. Call inside the runtime.
    pub fn now() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// The instant that is time zero.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Simulated milliseconds since the epoch.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(Instant::now().duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant `t_ms` after the epoch.
    pub fn at_ms(&self, t_ms: u64) -> Instant {
        self.start + Duration::from_millis(t_ms)
    }
}

/// Largest clock drift a scenario may ask for. Cheap crystal oscillators on
/// single-board computers without an RTC drift tens of ppm; 1,000 ppm
/// (86 s a day) is far beyond any working board, so it is a stress bound.
pub const CLOCK_DRIFT_PPM_MAX: i64 = 1_000;

/// A node's local view of time: simulated time scaled by a drift rate plus an
/// offset step. The node's clock implementation maps its "now" through this so
/// that leader-assigned timestamps and lease arithmetic see realistic skew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriftClock {
    /// Rate error in parts per million (positive: the node's clock runs fast).
    pub drift_ppm: i64,
    /// A step added to the node's clock (e.g. an NTP jump), in milliseconds.
    pub offset_ms: i64,
}

impl DriftClock {
    /// The node-local time for simulated time `sim_ms` (saturating at 0).
    pub fn local_ms(&self, sim_ms: u64) -> u64 {
        let ppm = self
            .drift_ppm
            .clamp(-CLOCK_DRIFT_PPM_MAX, CLOCK_DRIFT_PPM_MAX);
        let sim = i128::from(sim_ms);
        let local = sim + sim * i128::from(ppm) / 1_000_000 + i128::from(self.offset_ms);
        u64::try_from(local.max(0)).unwrap_or(u64::MAX)
    }

    /// How long a local-clock duration lasts in simulated time (what a node
    /// that sleeps `local` on its own clock actually waits).
    pub fn sim_duration(&self, local: Duration) -> Duration {
        let ppm = self
            .drift_ppm
            .clamp(-CLOCK_DRIFT_PPM_MAX, CLOCK_DRIFT_PPM_MAX);
        let nanos = local.as_nanos() * 1_000_000 / (1_000_000 + ppm) as u128;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_clock_scales_and_offsets() {
        let c = DriftClock {
            drift_ppm: 100,
            offset_ms: -5,
        };
        assert_eq!(c.local_ms(1_000_000), 1_000_100 - 5);
        assert_eq!(DriftClock::default().local_ms(42), 42);
        let fast = DriftClock {
            drift_ppm: 1_000,
            offset_ms: 0,
        };
        // A fast clock reaches a local second sooner in simulated time.
        assert!(fast.sim_duration(Duration::from_secs(1)) < Duration::from_secs(1));
    }

    #[test]
    fn paused_runtime_jumps_the_clock() {
        let rt = runtime().expect("runtime");
        rt.block_on(async {
            let epoch = Epoch::now();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            assert_eq!(epoch.elapsed_ms(), 3_600_000);
        });
    }
}
