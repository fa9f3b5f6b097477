//! Relay outputs on digital pins: the closed/open to high/low mapping (active-high or
//! active-low per line) and a bank of lines keyed by `RelayLine`.
//!
//! Generic over embedded-hal 1's `OutputPin + InputPin`, so the mapping is tested with a fake
//! pin and runs on `linux_embedded_hal::CdevPin` on a board. The inversion is done here, not
//! by the kernel's ACTIVE_LOW request flag, so one tested function decides what "closed"
//! means on the wire.

use std::collections::BTreeMap;

use embedded_hal::digital::{InputPin, OutputPin, PinState};

use crate::error::{ErrorKind, HalError};
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

/// The relays of one board.
pub struct RelayBank<P> {
    outputs: BTreeMap<RelayLine, RelayOutput<P>>,
}

impl<P> Default for RelayBank<P> {
    fn default() -> Self {
        RelayBank {
            outputs: BTreeMap::new(),
        }
    }
}

impl<P: OutputPin + InputPin> RelayBank<P> {
    /// An empty bank.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `line`; returns the output it replaced, if any.
    pub fn insert(&mut self, line: RelayLine, output: RelayOutput<P>) -> Option<RelayOutput<P>> {
        self.outputs.insert(line, output)
    }

    /// The lines in the bank, in ascending order.
    pub fn lines(&self) -> Vec<RelayLine> {
        self.outputs.keys().copied().collect()
    }

    fn output(&mut self, line: RelayLine) -> Result<&mut RelayOutput<P>, HalError> {
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
        let out = self.output(line)?;
        let result = match level_for(closed, out.active_low) {
            PinState::High => out.pin.set_high(),
            PinState::Low => out.pin.set_low(),
        };
        result.map_err(|e| {
            HalError::new(
                ErrorKind::Io,
                format!("relay {line} ({})", out.device),
                format!("could not drive the line: {e:?}; check that no other program holds it (`gpioinfo`)"),
            )
        })
    }

    /// Whether `line` is driven closed, read back from the pin.
    pub fn get(&mut self, line: RelayLine) -> Result<bool, HalError> {
        let out = self.output(line)?;
        let high = out.pin.is_high().map_err(|e| {
            HalError::new(
                ErrorKind::Io,
                format!("relay {line} ({})", out.device),
                format!("could not read the line back: {e:?}"),
            )
        })?;
        Ok(closed_for(high, out.active_low))
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
