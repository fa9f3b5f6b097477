//! Relay outputs on digital pins: the closed/open to high/low mapping (active-high or
//! active-low per line) and a bank of lines keyed by `RelayLine`.
//!
//! A bank given a reopener (`RelayBank::set_reopener`) gets its lines back after their chip
//! went away (a USB GPIO expander unplugged and plugged back): a pin whose error means the
//! device is gone is dropped, WARN is logged once per episode, and the next commands for the
//! line request it again (with backoff, `crate::reopen`), driven straight to the commanded
//! level; the events are counted in `RelayStats`.
//!
//! Generic over embedded-hal 1's `OutputPin + InputPin`, so the mapping is tested with a fake
//! pin and runs on `linux_embedded_hal::CdevPin` on a board. The inversion is done here, not
//! by the kernel's ACTIVE_LOW request flag, so one tested function decides what "closed"
//! means on the wire.

use std::collections::BTreeMap;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin, PinState};

use crate::error::{ErrorKind, HalError};
use crate::reopen::Reopen;
use crate::types::RelayLine;

/// The pin level that puts a relay in the `closed` state. Active-high: closed = high.
/// Active-low (most opto-isolated relay boards sink the coil current): closed = low.
pub fn level_for(closed: bool, active_low: bool) -> PinState {
    if closed != active_low {
        PinState::High
    } else {
        PinState::Low
    }
}

/// Whether a relay is closed given its pin level.
pub fn closed_for(level_high: bool, active_low: bool) -> bool {
    level_high != active_low
}

/// One relay output.
pub struct RelayOutput<P> {
    /// The pin driving the relay's coil (or its driver transistor).
    pub pin: P,
    /// Whether a low level closes the relay.
    pub active_low: bool,
    /// The pin's name for errors, e.g. `/dev/gpiochip0 line 17`.
    pub device: String,
}

/// Requests a relay's line again, driven to the given level, after its device went away.
pub type Reopener<P> = Box<dyn FnMut(RelayLine, PinState) -> Result<P, HalError> + Send>;

/// Says whether a pin's error means its device went away.
pub type GoneTest<P> = fn(&<P as ErrorType>::Error) -> bool;

/// Counters of a bank's lines going away and coming back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Times a line's device went away (its pin dropped).
    pub disconnects: u64,
    /// Times a line was requested again.
    pub reopens: u64,
    /// Attempts to request it again that failed.
    pub reopen_failures: u64,
}

/// One line of the bank: its pin while it has one.
struct Slot<P> {
    pin: Option<P>,
    /// The level last driven, so a line can be requested again at it when it is read.
    level: Option<PinState>,
    active_low: bool,
    device: String,
    reopen: Reopen,
}

/// The relays of one board.
pub struct RelayBank<P: ErrorType> {
    outputs: BTreeMap<RelayLine, Slot<P>>,
    reopener: Option<(Reopener<P>, GoneTest<P>)>,
    stats: RelayStats,
    epoch: std::time::Instant,
}

impl<P: ErrorType> Default for RelayBank<P> {
    fn default() -> Self {
        RelayBank {
            outputs: BTreeMap::new(),
            reopener: None,
            stats: RelayStats::default(),
            epoch: std::time::Instant::now(),
        }
    }
}

impl<P: OutputPin + InputPin> RelayBank<P> {
    /// An empty bank.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `line`; returns the output it replaced, if it still had its pin.
    pub fn insert(&mut self, line: RelayLine, output: RelayOutput<P>) -> Option<RelayOutput<P>> {
        let slot = Slot {
            pin: Some(output.pin),
            level: None,
            active_low: output.active_low,
            device: output.device,
            reopen: Reopen::new(),
        };
        let old = self.outputs.insert(line, slot)?;
        old.pin.map(|pin| RelayOutput {
            pin,
            active_low: old.active_low,
            device: old.device,
        })
    }

    /// Reopen lines whose device went away with `reopener`; `gone` says which pin errors
    /// mean that (others are reported and the pin kept). Without one, a failing pin stays.
    pub fn set_reopener(&mut self, reopener: Reopener<P>, gone: GoneTest<P>) {
        self.reopener = Some((reopener, gone));
    }

    /// The counters.
    pub fn stats(&self) -> RelayStats {
        self.stats
    }

    /// The lines in the bank, in ascending order.
    pub fn lines(&self) -> Vec<RelayLine> {
        self.outputs.keys().copied().collect()
    }

    fn slot(&mut self, line: RelayLine) -> Result<&mut Slot<P>, HalError> {
        self.outputs.get_mut(&line).ok_or_else(|| {
            HalError::new(
                ErrorKind::NotFound,
                format!("relay {line}"),
                "no such relay line in this board's configuration; add it under [[relays.lines]]",
            )
        })
    }

    /// Drives `line` closed or open.
    pub fn set(&mut self, line: RelayLine, closed: bool) -> Result<(), HalError> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        self.set_at(line, closed, now_ms)
    }

    /// [`set`](RelayBank::set) at `now_ms` on the bank's own clock (tests pass their time).
    pub fn set_at(&mut self, line: RelayLine, closed: bool, now_ms: u64) -> Result<(), HalError> {
        let slot = self.slot(line)?;
        let level = level_for(closed, slot.active_low);
        if slot.pin.is_none() {
            // Requested straight at the commanded level: nothing to drive afterwards.
            return self.reopen(line, level, now_ms);
        }
        let slot = self.slot(line)?;
        let Some(pin) = slot.pin.as_mut() else {
            return Ok(()); // taken just above
        };
        let result = match level {
            PinState::High => pin.set_high(),
            PinState::Low => pin.set_low(),
        };
        let Err(e) = result else {
            slot.level = Some(level);
            if let Some(away_ms) = slot.reopen.answered(now_ms) {
                tracing::info!(relay = %line, device = %slot.device, away_ms, "relay line is back");
            }
            return Ok(());
        };
        let err = HalError::new(
            ErrorKind::Io,
            format!("relay {line} ({})", slot.device),
            format!(
                "could not drive the line: {e:?}; check that no other program holds it (`gpioinfo`)"
            ),
        );
        self.note_failure(line, &e, &err, now_ms);
        Err(err)
    }

    /// A pin failed with `e`: if that means its device went away (and the bank can reopen
    /// it), drop the pin and start or continue the line's episode.
    fn note_failure(&mut self, line: RelayLine, e: &P::Error, err: &HalError, now_ms: u64) {
        let Some((_, gone)) = &self.reopener else {
            return;
        };
        if !gone(e) {
            return;
        }
        let Some(slot) = self.outputs.get_mut(&line) else {
            return;
        };
        // Drop the handle: the kernel frees the line, and a replugged chip gets a new one.
        slot.pin = None;
        self.stats.disconnects += 1;
        if slot.reopen.gone(now_ms) {
            tracing::warn!(
                relay = %line,
                error = %err,
                first_retry_ms = crate::reopen::REOPEN_FIRST_MS,
                "relay line's GPIO device went away: requesting it again with backoff on the next commands"
            );
        }
    }

    fn reopen(&mut self, line: RelayLine, level: PinState, now_ms: u64) -> Result<(), HalError> {
        let Some(slot) = self.outputs.get_mut(&line) else {
            return Ok(());
        };
        let device = format!("relay {line} ({})", slot.device);
        let Some((reopener, _)) = self.reopener.as_mut() else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                device,
                "the line's device went away and this board cannot request it again",
            ));
        };
        if !slot.reopen.due(now_ms) {
            return Err(HalError::new(
                ErrorKind::NotFound,
                device,
                format!(
                    "the line's GPIO device went away; next attempt to request it in {} ms",
                    slot.reopen.wait_ms(now_ms)
                ),
            ));
        }
        match reopener(line, level) {
            Ok(pin) => {
                slot.pin = Some(pin);
                slot.level = Some(level);
                slot.reopen.opened();
                // Requested at the commanded level: that is a successful command.
                if let Some(away_ms) = slot.reopen.answered(now_ms) {
                    tracing::info!(relay = %line, away_ms, "relay line requested again and driven");
                }
                self.stats.reopens += 1;
                Ok(())
            }
            Err(e) => {
                let wait_ms = slot.reopen.open_failed(now_ms);
                self.stats.reopen_failures += 1;
                tracing::debug!(error = %e, wait_ms, "relay line's device still missing");
                Err(HalError::new(
                    e.kind,
                    device,
                    format!("{}; next attempt in {wait_ms} ms", e.detail),
                ))
            }
        }
    }

    /// Whether `line` is driven closed, read back from the pin.
    pub fn get(&mut self, line: RelayLine) -> Result<bool, HalError> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        self.get_at(line, now_ms)
    }

    /// [`get`](RelayBank::get) at `now_ms` on the bank's own clock. A line whose device went
    /// away is requested again here too (at the level it was last driven to), so a relay
    /// that is only read, never commanded, still comes back.
    pub fn get_at(&mut self, line: RelayLine, now_ms: u64) -> Result<bool, HalError> {
        let slot = self.slot(line)?;
        if slot.pin.is_none() {
            let Some(level) = slot.level else {
                return Err(HalError::new(
                    ErrorKind::NotFound,
                    format!("relay {line} ({})", slot.device),
                    "the line's GPIO device went away; it is requested again on the next command",
                ));
            };
            self.reopen(line, level, now_ms)?;
        }
        let slot = self.slot(line)?;
        let device = format!("relay {line} ({})", slot.device);
        let active_low = slot.active_low;
        let Some(pin) = slot.pin.as_mut() else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                device,
                "the line's GPIO device went away; it is requested again on the next command",
            ));
        };
        match pin.is_high() {
            Ok(high) => Ok(closed_for(high, active_low)),
            Err(e) => {
                let err = HalError::new(
                    ErrorKind::Io,
                    device,
                    format!("could not read the line back: {e:?}"),
                );
                self.note_failure(line, &e, &err, now_ms);
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_low_inverts() {
        assert_eq!(level_for(true, false), PinState::High);
        assert_eq!(level_for(false, false), PinState::Low);
        assert_eq!(level_for(true, true), PinState::Low);
        assert_eq!(level_for(false, true), PinState::High);
        for closed in [false, true] {
            for active_low in [false, true] {
                let high = level_for(closed, active_low) == PinState::High;
                assert_eq!(closed_for(high, active_low), closed);
            }
        }
    }
}
