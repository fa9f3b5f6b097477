//! The hardware traits the field loop is generic over, one per kind of I/O, and `Board`.
//!
//! embedded-hal style: every method is fallible and returns the shared `HalError`. Slow I/O
//! (Modbus at 9,600 bit/s, ADC conversions) is async; GPIO is a register write and stays
//! synchronous. The async methods are declared as `fn ... -> impl Future + Send` rather than
//! bare `async fn` so a generic caller can move the field loop onto a multi-threaded tokio
//! runtime (`tokio::spawn` needs `Send` futures); implementations still write `async fn`.

use std::future::Future;

use crate::error::HalError;
use crate::modbus::ModbusStats;
use crate::relay::RelayStats;
use crate::types::{AnalogChannel, AnalogChannelInfo, GridSample, MeterReading, RelayLine};

/// Result of every hal operation.
pub type HalResult<T> = Result<T, HalError>;

/// Frequency, voltage, generation, feeder loads and ballast of the local grid.
pub trait GridMeter {
    /// Takes one supervisory sample. Fails whole rather than returning a sample with a
    /// missing or stale part: a reading that could not be taken is never reported as good.
    fn read_grid(&mut self) -> impl Future<Output = HalResult<GridSample>> + Send;

    /// Counters of the Modbus line the grid and customer meters share (requests, timeouts,
    /// the adapter going away and being reopened), for the node's status; `None` on a board
    /// without one (the simulator, a replay).
    fn line_stats(&self) -> Option<ModbusStats> {
        None
    }
}

/// Customers' cumulative energy meters.
pub trait EnergyMeters {
    /// The customers whose meters this board reads, in ascending order.
    fn customers(&self) -> Vec<u32>;

    /// Reads one customer's meter. `ErrorKind::NotFound` if this board does not meter
    /// `customer`.
    fn read_energy(
        &mut self,
        customer: u32,
    ) -> impl Future<Output = HalResult<MeterReading>> + Send;
}

/// Feeder contactors, customer relays and ballast stages.
pub trait Relays {
    /// The relay lines this board can switch, in ascending order.
    fn relay_lines(&self) -> Vec<RelayLine>;

    /// Closes (`true`, supplying) or opens (`false`) a relay. `ErrorKind::NotFound` if the
    /// board has no such line.
    fn set_relay(&mut self, line: RelayLine, closed: bool) -> HalResult<()>;

    /// Whether a relay is closed, as far as the board can tell: the level driven on the
    /// Linux backend (no auxiliary contact is wired back), the actual contact in the
    /// simulator (so a stuck relay shows).
    fn relay_state(&mut self, line: RelayLine) -> HalResult<bool>;

    /// Counters of relay lines whose GPIO device went away and was requested again, for the
    /// node's status; `None` on a board whose relays cannot go away (the simulator).
    fn relay_stats(&self) -> Option<RelayStats> {
        None
    }
}

/// Slow analog inputs: water level, pressure, temperature.
pub trait AnalogInputs {
    /// The configured channels, in ascending order.
    fn analog_channels(&self) -> Vec<AnalogChannelInfo>;

    /// Reads one channel, in millivolts at the ADC input (signed: a differential input
    /// can be negative). Scaling to metres or degrees is the caller's business.
    fn read_analog(
        &mut self,
        channel: AnalogChannel,
    ) -> impl Future<Output = HalResult<i32>> + Send;
}

/// Everything the field loop touches, so it can be generic over one type parameter:
/// `async fn field_loop<B: Board>(board: B)`.
///
/// Implemented automatically for any type that implements all four traits and is `Send`.
pub trait Board: GridMeter + EnergyMeters + Relays + AnalogInputs + Send {}

impl<T: GridMeter + EnergyMeters + Relays + AnalogInputs + Send> Board for T {}
