//! When to reopen a device that went away (a USB-serial adapter unplugged and plugged back, a
//! pseudo-terminal closed and recreated): which OS errors mean "gone", and one episode's
//! exponential backoff between attempts. Logic without I/O: the caller passes the time in,
//! opens the device itself and logs what the methods return.
//!
//! An episode starts at the first error that means the device is gone and ends at the first
//! successful transaction after a reopen, not at the reopen itself: a path that opens but whose
//! device fails again at once (a half-enumerated adapter) stays one episode, logged once, with
//! the backoff still growing.

/// First wait before reopening, ms. A USB adapter re-enumerates about a second after it is
/// plugged back; a quarter second catches a brief glitch without spinning on the open.
pub const REOPEN_FIRST_MS: u64 = 250;
/// Longest wait between attempts, ms. A failed open is one syscall, so 4 s costs nothing on
/// a board whose adapter stays away, while a replugged one is read again within 4 s.
pub const REOPEN_BACKOFF_MS_MAX: u64 = 4_000;
/// Linux errno values that mean the device behind an open descriptor is gone. They are the
/// same on every Linux architecture ghatta builds for (x86-64, aarch64, armv7).
const EIO: i32 = 5;
/// "No such device or address": a tty whose hardware went away.
const ENXIO: i32 = 6;
/// "No such device": a USB device removed under an open descriptor.
const ENODEV: i32 = 19;

/// Whether `err` on an open device means the device itself went away (unplugged, the pty's
/// other side closed) rather than a bad request or a slow answer: `ENOENT`, `ENODEV`,
/// `ENXIO`, `EIO`, a broken pipe, or a read that returned 0 bytes (a hang-up).
pub fn is_gone(err: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    if matches!(
        err.kind(),
        K::NotFound | K::BrokenPipe | K::UnexpectedEof | K::NotConnected | K::ConnectionReset
    ) {
        return true;
    }
    err.raw_os_error().is_some_and(errno_means_gone)
}

/// Whether a raw errno (from an ioctl on a GPIO line, say) means the device went away.
pub fn errno_means_gone(errno: i32) -> bool {
    /// "No such file or directory": the device node itself was removed.
    const ENOENT: i32 = 2;
    matches!(errno, ENOENT | EIO | ENXIO | ENODEV)
}

/// One episode of a device that went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Episode {
    /// When the device went away, ms on the caller's clock.
    since_ms: u64,
    /// Reopen attempts so far (failed opens, and opens whose device failed again).
    attempts: u32,
    /// Not before this time, ms.
    next_attempt_ms: u64,
    /// Reopened and waiting for its first successful transaction.
    open: bool,
}

/// The reopen state of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reopen {
    episode: Option<Episode>,
}

/// The wait before attempt `attempts + 1`: `REOPEN_FIRST_MS` doubled per attempt, capped.
pub fn backoff_ms(attempts: u32) -> u64 {
    REOPEN_FIRST_MS
        .saturating_mul(1u64 << attempts.min(20))
        .min(REOPEN_BACKOFF_MS_MAX)
}

impl Reopen {
    /// A device that is present.
    pub fn new() -> Reopen {
        Reopen::default()
    }

    /// Whether an episode is under way (the device went away and has not answered since).
    pub fn in_episode(&self) -> bool {
        self.episode.is_some()
    }

    /// The device failed in a way that means it is gone and its descriptor was dropped.
    /// Returns `true` when this starts an episode (the caller logs at WARN once), `false`
    /// when a reopened device failed again within the same episode.
    pub fn gone(&mut self, now_ms: u64) -> bool {
        match &mut self.episode {
            Some(e) => {
                e.open = false;
                e.attempts = e.attempts.saturating_add(1);
                e.next_attempt_ms = now_ms.saturating_add(backoff_ms(e.attempts));
                false
            }
            None => {
                self.episode = Some(Episode {
                    since_ms: now_ms,
                    attempts: 0,
                    next_attempt_ms: now_ms.saturating_add(backoff_ms(0)),
                    open: false,
                });
                true
            }
        }
    }

    /// Whether the caller should try to open the device now.
    pub fn due(&self, now_ms: u64) -> bool {
        self.episode
            .is_some_and(|e| !e.open && now_ms >= e.next_attempt_ms)
    }

    /// Milliseconds until the next attempt (0 when due, or not in an episode).
    pub fn wait_ms(&self, now_ms: u64) -> u64 {
        match self.episode {
            Some(e) if !e.open => e.next_attempt_ms.saturating_sub(now_ms),
            _ => 0,
        }
    }

    /// An attempt to open failed; returns the wait before the next one, ms.
    pub fn open_failed(&mut self, now_ms: u64) -> u64 {
        let Some(e) = &mut self.episode else {
            return 0;
        };
        e.attempts = e.attempts.saturating_add(1);
        let wait = backoff_ms(e.attempts);
        e.next_attempt_ms = now_ms.saturating_add(wait);
        wait
    }

    /// The device opened again; the episode ends at its first successful transaction.
    pub fn opened(&mut self) {
        if let Some(e) = &mut self.episode {
            e.open = true;
        }
    }

    /// A transaction succeeded. Ends an episode and returns how long the device was away,
    /// ms (the caller logs that it is back); `None` outside an episode.
    pub fn answered(&mut self, now_ms: u64) -> Option<u64> {
        self.episode
            .take()
            .map(|e| now_ms.saturating_sub(e.since_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_errors_are_recognised_and_others_are_not() {
        use std::io::{Error, ErrorKind};
        assert!(is_gone(&Error::from_raw_os_error(EIO)));
        assert!(is_gone(&Error::from_raw_os_error(ENODEV)));
        assert!(is_gone(&Error::from_raw_os_error(ENXIO)));
        assert!(is_gone(&Error::from(ErrorKind::NotFound)));
        assert!(is_gone(&Error::from(ErrorKind::BrokenPipe)));
        assert!(is_gone(&Error::from(ErrorKind::UnexpectedEof)));
        assert!(!is_gone(&Error::from(ErrorKind::TimedOut)));
        assert!(!is_gone(&Error::from(ErrorKind::PermissionDenied)));
        assert!(!is_gone(&Error::from(ErrorKind::InvalidInput)));
        assert!(errno_means_gone(2) && errno_means_gone(ENODEV));
        assert!(!errno_means_gone(16), "EBUSY");
    }

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_cap() {
        assert_eq!(backoff_ms(0), REOPEN_FIRST_MS);
        assert_eq!(backoff_ms(1), 2 * REOPEN_FIRST_MS);
        assert_eq!(backoff_ms(3), 8 * REOPEN_FIRST_MS);
        assert_eq!(backoff_ms(4), REOPEN_BACKOFF_MS_MAX);
        assert_eq!(backoff_ms(u32::MAX), REOPEN_BACKOFF_MS_MAX);
    }

    #[test]
    fn one_episode_from_gone_to_the_first_answer() {
        let mut r = Reopen::new();
        assert!(!r.due(0));
        assert!(r.gone(1_000), "the first failure starts an episode");
        assert!(!r.due(1_000 + REOPEN_FIRST_MS - 1));
        assert!(r.due(1_000 + REOPEN_FIRST_MS));
        // The path is missing twice: waits of 500 and 1,000 ms.
        assert_eq!(r.open_failed(1_250), 500);
        assert!(!r.due(1_749));
        assert_eq!(r.wait_ms(1_700), 50);
        assert_eq!(r.open_failed(1_750), 1_000);
        // It opens, fails again at once: the same episode, nothing new to log, and a longer
        // wait (the backoff keeps growing).
        assert!(r.due(2_750));
        r.opened();
        assert!(!r.due(10_000), "open: nothing to reopen");
        assert!(!r.gone(2_800), "the same episode");
        assert!(!r.due(2_800 + 1_999));
        assert!(r.due(2_800 + 2_000));
        r.opened();
        assert_eq!(r.answered(5_000), Some(4_000));
        assert!(!r.in_episode());
        assert_eq!(r.answered(6_000), None);
        // A later failure is a new episode, starting from the first wait again.
        assert!(r.gone(7_000));
        assert!(r.due(7_000 + REOPEN_FIRST_MS));
    }
}
