//! The PZEM-004T v3 energy meter: its input-register map, decoding and plausibility checks.
//!
//! Register map (function 0x04, start 0x0000, 10 registers): voltage (0.1 V), current
//! (0.001 A, 32 bits, low word first), power (0.1 W, 32 bits, low word first), energy
//! (1 Wh, 32 bits, low word first), frequency (0.1 Hz), power factor (0.01), alarm
//! (0xFFFF alarm, 0x0000 none). A frame that passes its CRC but decodes to values the meter
//! cannot produce is rejected: no bad reading is ever returned as good.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ErrorKind, HalError};
use crate::modbus::ModbusRtu;
use crate::types::MeterReading;

/// First input register of the measurement block.
pub const REGISTER_START: u16 = 0x0000;
/// Registers in the measurement block.
pub const REGISTER_COUNT: u16 = 10;
/// Highest voltage accepted: 400 V, the line-to-line voltage of a 230/400 V system. The meter
/// is rated 80-260 V; a genuine overvoltage still passes, a corrupt frame does not.
pub const VOLTAGE_DV_MAX: u32 = 4_000;
/// Highest current accepted: 150 A, 1.5 x the 100 A version's range (its CT saturates first).
pub const CURRENT_MA_MAX: u32 = 150_000;
/// Highest frequency accepted: 100 Hz, twice nominal 50 Hz; even a runaway turbine stays under.
pub const FREQUENCY_DHZ_MAX: u16 = 1_000;
/// Power factor is reported in hundredths and cannot exceed 1.00.
pub const POWER_FACTOR_CENTI_MAX: u16 = 100;
/// Active power may not exceed apparent power (V x I) by more than this percentage, which
/// covers the meter's 0.5 % accuracy and its rounding of V and I.
const POWER_OVER_APPARENT_PCT: u64 = 5;
/// ...plus this absolute slack in deciwatts (2 W) for readings near zero current.
const POWER_SLACK_DW: u64 = 20;

/// Everything the meter reports, at its own resolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PzemReading {
    /// Voltage in decivolts.
    pub voltage_dv: u32,
    /// Current in milliamperes.
    pub current_ma: u32,
    /// Active power in deciwatts.
    pub power_dw: u32,
    /// Cumulative energy in watt-hours (the meter's 32-bit counter).
    pub energy_wh: u32,
    /// Frequency in decihertz.
    pub frequency_dhz: u16,
    /// Power factor in hundredths.
    pub power_factor_centi: u16,
    /// The meter's power alarm.
    pub alarm: bool,
}

impl PzemReading {
    /// The reading in the hal's units. Power is rounded to the nearest watt.
    pub fn to_meter_reading(&self) -> MeterReading {
        MeterReading {
            total_wh: u64::from(self.energy_wh),
            voltage_dv: self.voltage_dv,
            current_ma: self.current_ma,
            power_w: self.power_dw.saturating_add(5) / 10,
            frequency_mhz: u32::from(self.frequency_dhz) * 100,
        }
    }
}

fn word32(low: u16, high: u16) -> u32 {
    (u32::from(high) << 16) | u32::from(low)
}

/// Decodes the 10-register measurement block, or says which value is impossible.
pub fn decode(regs: &[u16]) -> Result<PzemReading, String> {
    let [
        voltage,
        current_lo,
        current_hi,
        power_lo,
        power_hi,
        energy_lo,
        energy_hi,
        frequency,
        pf,
        alarm,
    ] = regs
    else {
        return Err(format!(
            "expected {REGISTER_COUNT} registers, got {}",
            regs.len()
        ));
    };
    let reading = PzemReading {
        voltage_dv: u32::from(*voltage),
        current_ma: word32(*current_lo, *current_hi),
        power_dw: word32(*power_lo, *power_hi),
        energy_wh: word32(*energy_lo, *energy_hi),
        frequency_dhz: *frequency,
        power_factor_centi: *pf,
        alarm: match *alarm {
            0x0000 => false,
            0xFFFF => true,
            other => {
                return Err(format!(
                    "alarm register is 0x{other:04X}, not 0x0000 or 0xFFFF"
                ));
            }
        },
    };
    if reading.voltage_dv > VOLTAGE_DV_MAX {
        return Err(format!(
            "voltage {}.{} V is above {} V",
            reading.voltage_dv / 10,
            reading.voltage_dv % 10,
            VOLTAGE_DV_MAX / 10
        ));
    }
    if reading.current_ma > CURRENT_MA_MAX {
        return Err(format!(
            "current {} mA is above {} mA",
            reading.current_ma, CURRENT_MA_MAX
        ));
    }
    if reading.frequency_dhz > FREQUENCY_DHZ_MAX {
        return Err(format!(
            "frequency {}.{} Hz is above {} Hz",
            reading.frequency_dhz / 10,
            reading.frequency_dhz % 10,
            FREQUENCY_DHZ_MAX / 10
        ));
    }
    if reading.power_factor_centi > POWER_FACTOR_CENTI_MAX {
        return Err(format!(
            "power factor {} hundredths is above 1.00",
            reading.power_factor_centi
        ));
    }
    // Apparent power in deciwatts: dV x mA / 1000.
    let apparent_dw = u64::from(reading.voltage_dv) * u64::from(reading.current_ma) / 1_000;
    let power_dw_max = apparent_dw * (100 + POWER_OVER_APPARENT_PCT) / 100 + POWER_SLACK_DW;
    if u64::from(reading.power_dw) > power_dw_max {
        return Err(format!(
            "power {} dW exceeds voltage x current ({apparent_dw} dW)",
            reading.power_dw
        ));
    }
    Ok(reading)
}

/// Reads one PZEM-004T v3 at `address` on `bus`.
pub async fn read<P: AsyncRead + AsyncWrite + Unpin + Send>(
    bus: &mut ModbusRtu<P>,
    address: u8,
) -> Result<PzemReading, HalError> {
    let regs = bus
        .read_input_registers(address, REGISTER_START, REGISTER_COUNT)
        .await?;
    decode(&regs).map_err(|why| {
        bus.note_invalid_response();
        HalError::new(
            ErrorKind::OutOfRange,
            bus.device_name(address),
            format!(
                "reply passed its CRC but {why}; reading discarded. If this repeats, check that the \
                 device at this address is a PZEM-004T v3"
            ),
        )
    })
}

/// The 10 registers a meter would send for `reading` (for simulators and tests).
pub fn encode(reading: &PzemReading) -> [u16; 10] {
    let lo = |v: u32| (v & 0xFFFF) as u16;
    let hi = |v: u32| (v >> 16) as u16;
    [
        lo(reading.voltage_dv),
        lo(reading.current_ma),
        hi(reading.current_ma),
        lo(reading.power_dw),
        hi(reading.power_dw),
        lo(reading.energy_wh),
        hi(reading.energy_wh),
        reading.frequency_dhz,
        reading.power_factor_centi,
        if reading.alarm { 0xFFFF } else { 0x0000 },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PzemReading {
        PzemReading {
            voltage_dv: 2_301,
            current_ma: 70_123,
            power_dw: 150_000,
            energy_wh: 0x0001_2345,
            frequency_dhz: 500,
            power_factor_centi: 93,
            alarm: false,
        }
    }

    #[test]
    fn decode_inverts_encode_and_splits_low_word_first() {
        let regs = encode(&sample());
        // 70,123 mA = 0x0001_11EB: low word first.
        assert_eq!(regs[1], 0x11EB);
        assert_eq!(regs[2], 0x0001);
        assert_eq!(decode(&regs), Ok(sample()));
        let m = sample().to_meter_reading();
        assert_eq!(m.power_w, 15_000);
        assert_eq!(m.frequency_mhz, 50_000);
        assert_eq!(m.total_wh, 0x0001_2345);
    }

    #[test]
    fn decode_rejects_impossible_values() {
        let mut regs = encode(&sample());
        regs[9] = 0x1234;
        assert!(decode(&regs).unwrap_err().contains("alarm"));
        let mut regs = encode(&sample());
        regs[8] = 101;
        assert!(decode(&regs).unwrap_err().contains("power factor"));
        let mut regs = encode(&sample());
        regs[7] = 1_001;
        assert!(decode(&regs).unwrap_err().contains("frequency"));
        let mut regs = encode(&sample());
        regs[0] = 4_001;
        assert!(decode(&regs).unwrap_err().contains("voltage"));
        // 230 V x 1 A = 230 W, so 500 W is impossible.
        let r = PzemReading {
            current_ma: 1_000,
            power_dw: 5_000,
            ..sample()
        };
        assert!(decode(&encode(&r)).unwrap_err().contains("exceeds"));
        assert!(decode(&regs[..9]).is_err());
    }
}
