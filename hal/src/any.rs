//! [`AnyBoard`]: the board a node's config names, chosen at run time, as one type, so the
//! field loop (generic over `Board` for speed and for the simulator) is started once whatever
//! `[board]` says.

use crate::linux::LinuxBoard;
use crate::replay::ReplayBoard;
use crate::sim::SimBoard;
use crate::traits::{AnalogInputs, EnergyMeters, GridMeter, HalResult, Relays};
use crate::types::{AnalogChannel, AnalogChannelInfo, GridSample, MeterReading, RelayLine};

/// One of the backends, chosen from configuration.
pub enum AnyBoard {
    /// Simulated hardware (`kind = "sim"`: the demo, a bench without hardware).
    Sim(SimBoard),
    /// A real board: GPIO relays, ADS1115, PZEM-004T meters.
    Linux(Box<LinuxBoard>),
    /// Recordings played back (`kind = "replay"`).
    Replay(Box<ReplayBoard>),
}

impl GridMeter for AnyBoard {
    fn line_stats(&self) -> Option<crate::modbus::ModbusStats> {
        match self {
            AnyBoard::Sim(b) => b.line_stats(),
            AnyBoard::Linux(b) => b.line_stats(),
            AnyBoard::Replay(b) => b.line_stats(),
        }
    }

    async fn read_grid(&mut self) -> HalResult<GridSample> {
        match self {
            AnyBoard::Sim(b) => b.read_grid().await,
            AnyBoard::Linux(b) => b.read_grid().await,
            AnyBoard::Replay(b) => b.read_grid().await,
        }
    }
}

impl EnergyMeters for AnyBoard {
    fn customers(&self) -> Vec<u32> {
        match self {
            AnyBoard::Sim(b) => b.customers(),
            AnyBoard::Linux(b) => b.customers(),
            AnyBoard::Replay(b) => b.customers(),
        }
    }

    async fn read_energy(&mut self, customer: u32) -> HalResult<MeterReading> {
        match self {
            AnyBoard::Sim(b) => b.read_energy(customer).await,
            AnyBoard::Linux(b) => b.read_energy(customer).await,
            AnyBoard::Replay(b) => b.read_energy(customer).await,
        }
    }
}

impl Relays for AnyBoard {
    fn relay_lines(&self) -> Vec<RelayLine> {
        match self {
            AnyBoard::Sim(b) => b.relay_lines(),
            AnyBoard::Linux(b) => b.relay_lines(),
            AnyBoard::Replay(b) => b.relay_lines(),
        }
    }

    fn set_relay(&mut self, line: RelayLine, closed: bool) -> HalResult<()> {
        match self {
            AnyBoard::Sim(b) => b.set_relay(line, closed),
            AnyBoard::Linux(b) => b.set_relay(line, closed),
            AnyBoard::Replay(b) => b.set_relay(line, closed),
        }
    }

    fn relay_stats(&self) -> Option<crate::relay::RelayStats> {
        match self {
            AnyBoard::Sim(b) => b.relay_stats(),
            AnyBoard::Linux(b) => b.relay_stats(),
            AnyBoard::Replay(b) => b.relay_stats(),
        }
    }

    fn relay_state(&mut self, line: RelayLine) -> HalResult<bool> {
        match self {
            AnyBoard::Sim(b) => b.relay_state(line),
            AnyBoard::Linux(b) => b.relay_state(line),
            AnyBoard::Replay(b) => b.relay_state(line),
        }
    }
}

impl AnalogInputs for AnyBoard {
    fn analog_channels(&self) -> Vec<AnalogChannelInfo> {
        match self {
            AnyBoard::Sim(b) => b.analog_channels(),
            AnyBoard::Linux(b) => b.analog_channels(),
            AnyBoard::Replay(b) => b.analog_channels(),
        }
    }

    async fn read_analog(&mut self, channel: AnalogChannel) -> HalResult<i32> {
        match self {
            AnyBoard::Sim(b) => b.read_analog(channel).await,
            AnyBoard::Linux(b) => b.read_analog(channel).await,
            AnyBoard::Replay(b) => b.read_analog(channel).await,
        }
    }
}
