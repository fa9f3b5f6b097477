//! The relay bank over fake pins: what level each line is driven to, active-high and
//! active-low, and reading the state back.

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
