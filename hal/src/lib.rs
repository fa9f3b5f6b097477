//! Hardware abstraction for ghatta: grid measurement, energy meters, relays and slow analog
//! inputs behind a few traits, with a Linux, a simulated and a replay backend.
//!
//! The field loop is generic over one type, `B: Board`, and runs unchanged on:
//!
//! - [`LinuxBoard`]: relays on the GPIO character device, an ADS1115 ADC on I2C and
//!   PZEM-004T v3 meters over Modbus-RTU (9,600 bit/s), opened from a serde
//!   [`LinuxBoardConfig`];
//! - [`SimBoard`]: a cheap-to-clone handle over state a plant model writes (and a small
//!   seeded demo model of its own, for `ghatta demo`);
//! - [`ReplayBoard`]: readings recorded in CSV files.
//!
//! Every method is fallible with [`HalError`] (kind, device, and what to do). All values are
//! integers with their unit last in the name.
//!
//! Architecture invariants:
//!
//! - The hal knows nothing of Raft, actors or any other ghatta crate.
//! - No bad reading is returned as good: a Modbus reply is accepted only whole, from the
//!   right address and function, with a good CRC and values the meter can produce; a
//!   clipped ADC conversion is an error; a grid sample with a part missing fails whole.
//! - Nothing panics on what a device, a file or an operator supplies.
//! - The Linux backend needs no C library (no libudev), so it cross-builds for
//!   aarch64/armv7 with only a Rust target installed.
//! - Code map: `traits` and `types` (the seam), `error`; drivers `modbus`, `pzem`,
//!   `ads1115`, `relay` (generic over byte streams and embedded-hal pins/buses, so they are
//!   tested without hardware); `reopen` (when and how often to reopen a device that went
//!   away, used by the Modbus line and the relay bank: pure, time passed in); backends
//!   `linux`, `sim`, `replay`.
//!
//! ```
//! use ghatta_hal::{Board, RelayLine, SimBoard, SimBoardState};
//!
//! async fn shed_if_low<B: Board>(board: &mut B) -> Result<(), ghatta_hal::HalError> {
//!     let sample = board.read_grid().await?;
//!     if sample.frequency_mhz < 49_000 {
//!         board.set_relay(RelayLine::Feeder(1), false)?;
//!     }
//!     Ok(())
//! }
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//! let mut board = SimBoard::new(SimBoardState::demo(40, 7));
//! board.step(1_000);
//! rt.block_on(shed_if_low(&mut board)).unwrap();
//! ```
#![forbid(unsafe_code)]

pub mod ads1115;
pub mod any;
pub mod error;
pub mod linux;
pub mod modbus;
pub mod pzem;
pub mod relay;
pub mod reopen;
pub mod replay;
pub mod sim;
pub mod traits;
pub mod types;

pub use any::AnyBoard;
pub use error::{ErrorKind, HalError};
pub use linux::{LinuxBoard, LinuxBoardConfig};
pub use modbus::ModbusStats;
pub use replay::ReplayBoard;
pub use sim::{SimBoard, SimBoardState, SimFault};
pub use traits::{AnalogInputs, Board, EnergyMeters, GridMeter, HalResult, Relays};
pub use types::{
    AnalogChannel, AnalogChannelInfo, FeederSample, GridSample, MeterReading, RelayLine,
};
