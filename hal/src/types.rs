//! The values that cross the hal boundary: samples, meter readings, relay and channel names.
//!
//! All integers with the unit last in the name (`frequency_mhz`, `voltage_dv`), so a value
//! read on the board, stored in the log and shown to an operator never changes scale or
//! rounds through a float.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One supervisory snapshot of the grid, as the field loop sees it every 100 ms - 1 s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridSample {
    /// Bus frequency in millihertz (50 Hz = 50_000). The PZEM-004T resolves 0.1 Hz, so on
    /// the Linux backend this moves in steps of 100.
    pub frequency_mhz: u32,
    /// Bus voltage in decivolts (230 V = 2_300).
    pub voltage_dv: u32,
    /// Generator output in watts.
    pub generation_w: u32,
    /// One entry per feeder, ordered by feeder number.
    pub feeders: Vec<FeederSample>,
    /// Power going into the ballast (dump) load in watts.
    pub ballast_w: u32,
    /// The most the ballast can absorb, in watts.
    pub ballast_capacity_w: u32,
}

/// One feeder's share of a `GridSample`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeederSample {
    /// Feeder number, as in `RelayLine::Feeder`.
    pub feeder: u16,
    /// Feeder current in milliamperes.
    pub current_ma: u32,
    /// Feeder load in watts.
    pub load_w: u32,
    /// Whether the feeder's contactor is closed (supplying).
    pub closed: bool,
}

/// One reading of a customer's energy meter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterReading {
    /// Cumulative energy in watt-hours, as the meter counts it.
    pub total_wh: u64,
    /// Supply voltage at the meter in decivolts.
    pub voltage_dv: u32,
    /// Current in milliamperes.
    pub current_ma: u32,
    /// Active power in watts.
    pub power_w: u32,
    /// Frequency at the meter in millihertz.
    pub frequency_mhz: u32,
}

/// A relay or contactor the board can switch.
///
/// Written in configuration and logs as `feeder:3`, `customer:42`, `ballast:0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RelayLine {
    /// A feeder's contactor (sheds a whole feeder).
    Feeder(u16),
    /// One customer's supply relay (prepaid cut-off, power-limit enforcement).
    Customer(u32),
    /// A ballast (dump-load) stage.
    Ballast(u8),
}

impl fmt::Display for RelayLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayLine::Feeder(n) => write!(f, "feeder:{n}"),
            RelayLine::Customer(n) => write!(f, "customer:{n}"),
            RelayLine::Ballast(n) => write!(f, "ballast:{n}"),
        }
    }
}

impl FromStr for RelayLine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{s}` is not a relay line; write feeder:N (0-65535), customer:N or ballast:N (0-255)"
            )
        };
        let (kind, number) = s.trim().split_once(':').ok_or_else(bad)?;
        let number = number.trim();
        match kind.trim() {
            "feeder" => number.parse().map(RelayLine::Feeder).map_err(|_| bad()),
            "customer" => number.parse().map(RelayLine::Customer).map_err(|_| bad()),
            "ballast" => number.parse().map(RelayLine::Ballast).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for RelayLine {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RelayLine> for String {
    fn from(line: RelayLine) -> String {
        line.to_string()
    }
}

/// A slow analog input (water level, penstock pressure, temperature), numbered in the
/// board's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AnalogChannel(pub u8);

impl fmt::Display for AnalogChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "analog:{}", self.0)
    }
}

/// What an analog channel is, so callers can find "water_level" without knowing wiring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalogChannelInfo {
    /// The channel number to pass to `read_analog`.
    pub channel: AnalogChannel,
    /// The name from configuration, e.g. `water_level`.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_line_round_trips_through_text() {
        for line in [
            RelayLine::Feeder(3),
            RelayLine::Customer(4_000_000),
            RelayLine::Ballast(0),
        ] {
            assert_eq!(line.to_string().parse::<RelayLine>(), Ok(line));
        }
        assert!("feeder:70000".parse::<RelayLine>().is_err());
        assert!("pump:1".parse::<RelayLine>().is_err());
        assert!("feeder".parse::<RelayLine>().is_err());
    }
}
