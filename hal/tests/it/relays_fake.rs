//! The relay bank over fake pins: what level each line is driven to, active-high and
//! active-low, reading the state back, and a line whose GPIO device went away and came back.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
use ghatta_hal::relay::{RelayBank, RelayOutput};
use ghatta_hal::{ErrorKind, RelayLine};

#[derive(Clone, Default)]
struct FakePin(Arc<AtomicBool>);

impl ErrorType for FakePin {
    type Error = Infallible;
}

impl OutputPin for FakePin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.0.store(false, Ordering::SeqCst);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl InputPin for FakePin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.0.load(Ordering::SeqCst))
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.0.load(Ordering::SeqCst))
    }
}

#[test]
fn active_low_line_is_driven_low_to_close() {
    let (high_pin, low_pin) = (FakePin::default(), FakePin::default());
    let mut bank = RelayBank::new();
    bank.insert(
        RelayLine::Feeder(1),
        RelayOutput {
            pin: high_pin.clone(),
            active_low: false,
            device: "fake 1".into(),
        },
    );
    bank.insert(
        RelayLine::Customer(7),
        RelayOutput {
            pin: low_pin.clone(),
            active_low: true,
            device: "fake 2".into(),
        },
    );
    assert_eq!(
        bank.lines(),
        vec![RelayLine::Feeder(1), RelayLine::Customer(7)]
    );

    bank.set(RelayLine::Feeder(1), true).expect("set");
    bank.set(RelayLine::Customer(7), true).expect("set");
    assert!(high_pin.0.load(Ordering::SeqCst), "active-high closes high");
    assert!(!low_pin.0.load(Ordering::SeqCst), "active-low closes low");
    assert_eq!(bank.get(RelayLine::Customer(7)), Ok(true));

    bank.set(RelayLine::Customer(7), false).expect("set");
    assert!(low_pin.0.load(Ordering::SeqCst));
    assert_eq!(bank.get(RelayLine::Customer(7)), Ok(false));
    assert_eq!(bank.get(RelayLine::Feeder(1)), Ok(true));

    let e = bank
        .set(RelayLine::Ballast(0), true)
        .expect_err("no such line");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.to_string().contains("ballast:0"));
}

/// A GPIO expander that can be unplugged: its pins fail while it is away, and lines can be
/// requested from it only while it is there.
#[derive(Clone, Default)]
struct Expander {
    away: Arc<AtomicBool>,
    /// The level of the line as the expander drives it.
    level: Arc<AtomicBool>,
    /// The next operation fails with a transient error (not a device gone).
    glitch: Arc<AtomicBool>,
}

#[derive(Debug, PartialEq, Eq)]
enum ExpanderError {
    Gone,
    Glitch,
}

impl embedded_hal::digital::Error for ExpanderError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

struct ExpanderPin(Expander);

impl ExpanderPin {
    fn check(&self) -> Result<(), ExpanderError> {
        if self.0.away.load(Ordering::SeqCst) {
            return Err(ExpanderError::Gone);
        }
        if self.0.glitch.swap(false, Ordering::SeqCst) {
            return Err(ExpanderError::Glitch);
        }
        Ok(())
    }
}

impl ErrorType for ExpanderPin {
    type Error = ExpanderError;
}

impl OutputPin for ExpanderPin {
    fn set_low(&mut self) -> Result<(), ExpanderError> {
        self.check()?;
        self.0.level.store(false, Ordering::SeqCst);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), ExpanderError> {
        self.check()?;
        self.0.level.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl InputPin for ExpanderPin {
    fn is_high(&mut self) -> Result<bool, ExpanderError> {
        self.check()?;
        Ok(self.0.level.load(Ordering::SeqCst))
    }
    fn is_low(&mut self) -> Result<bool, ExpanderError> {
        Ok(!self.is_high()?)
    }
}

/// A relay on a GPIO expander that is unplugged and plugged back: the line is dropped when
/// its device goes away, requested again with backoff, and driven to the commanded level.
#[test]
fn a_relay_line_whose_device_went_away_is_requested_again_with_backoff() {
    use ghatta_hal::reopen::REOPEN_FIRST_MS;
    let exp = Expander::default();
    let line = RelayLine::Feeder(2);
    let mut bank = RelayBank::new();
    bank.insert(
        line,
        RelayOutput {
            pin: ExpanderPin(exp.clone()),
            active_low: false,
            device: "expander line 3".into(),
        },
    );
    let requests = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (exp2, requests2) = (exp.clone(), requests.clone());
    bank.set_reopener(
        Box::new(move |_line, level| {
            requests2.fetch_add(1, Ordering::SeqCst);
            if exp2.away.load(Ordering::SeqCst) {
                return Err(ghatta_hal::HalError::new(
                    ErrorKind::NotFound,
                    "expander",
                    "not there",
                ));
            }
            exp2.level.store(
                level == embedded_hal::digital::PinState::High,
                Ordering::SeqCst,
            );
            Ok(ExpanderPin(exp2.clone()))
        }),
        |e| *e == ExpanderError::Gone,
    );

    bank.set_at(line, true, 0).expect("present");
    // A transient error is reported and the pin kept: nothing to reopen.
    exp.glitch.store(true, Ordering::SeqCst);
    assert!(bank.set_at(line, true, 10).is_err());
    bank.set_at(line, true, 20).expect("the glitch passed");
    assert_eq!(bank.stats().disconnects, 0);

    exp.away.store(true, Ordering::SeqCst);
    let e = bank.set_at(line, false, 1_000).expect_err("unplugged");
    assert_eq!(e.kind, ErrorKind::Io);
    assert_eq!(bank.stats().disconnects, 1);
    // Before the first backoff nothing is requested.
    let e = bank
        .set_at(line, false, 1_000 + REOPEN_FIRST_MS - 1)
        .expect_err("waiting");
    assert!(e.detail.contains("next attempt"), "{e}");
    assert!(bank.get(line).is_err(), "no pin to read back");
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    // Still away: one failed request, then a longer wait.
    assert!(bank.set_at(line, false, 1_000 + REOPEN_FIRST_MS).is_err());
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert!(
        bank.set_at(line, false, 1_000 + 2 * REOPEN_FIRST_MS)
            .is_err()
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1, "backoff doubled");

    exp.away.store(false, Ordering::SeqCst);
    exp.level.store(true, Ordering::SeqCst); // a replugged expander's own default
    bank.set_at(line, false, 1_000 + 3 * REOPEN_FIRST_MS)
        .expect("requested again");
    assert!(
        !exp.level.load(Ordering::SeqCst),
        "driven to the commanded level"
    );
    assert!(!bank.get(line).expect("read back"));
    let s = bank.stats();
    assert_eq!((s.disconnects, s.reopens, s.reopen_failures), (1, 1, 1));

    // Gone while only read (the grid sample reads feeder relays back): requested again on a
    // read, at the level last driven.
    exp.away.store(true, Ordering::SeqCst);
    assert!(bank.get_at(line, 5_000).is_err());
    exp.away.store(false, Ordering::SeqCst);
    exp.level.store(true, Ordering::SeqCst);
    assert_eq!(bank.get_at(line, 5_000 + REOPEN_FIRST_MS), Ok(false));
    assert!(!exp.level.load(Ordering::SeqCst));
    assert_eq!(bank.stats().reopens, 2);
}
