//! ADS1115 16-bit I2C ADC: config word, single-shot conversion and scaling to millivolts.
//!
//! Used for slow signals only (water level, pressure, temperature): one conversion per call,
//! started by writing the config register with OS=1 and MODE=single-shot, waited for, then
//! read from the conversion register. Generic over embedded-hal 1's `I2c`, so the register
//! sequence is tested against a fake bus and runs on `linux_embedded_hal::I2cdev` on a board.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use embedded_hal::i2c::{Error as _, ErrorKind as I2cErrorKind, I2c};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, HalError};

/// Conversion register (16-bit two's complement result).
pub const REG_CONVERSION: u8 = 0x00;
/// Config register.
pub const REG_CONFIG: u8 = 0x01;
/// The four addresses the ADDR pin can select (GND, VDD, SDA, SCL).
pub const ADDRESSES: [u8; 4] = [0x48, 0x49, 0x4A, 0x4B];
/// Default address (ADDR to GND).
pub const ADDRESS_DEFAULT: u8 = 0x48;
/// Default full scale: +/-4.096 V suits 0-3.3 V sensor outputs without clipping.
pub const FULL_SCALE_MV_DEFAULT: u16 = 4_096;
/// Default data rate: 128 samples/s (the chip's reset value), a 7.8 ms conversion; the
/// slower rates filter more noise but 8 samples/s would take 125 ms of a field loop.
pub const DATA_RATE_SPS_DEFAULT: u16 = 128;
/// The data rates the chip offers (8-860 samples/s), in config-field order.
pub const DATA_RATES_SPS: [u16; 8] = [8, 16, 32, 64, 128, 250, 475, 860];
/// The full-scale ranges the PGA offers, in config-field order.
pub const FULL_SCALES_MV: [u16; 6] = [6_144, 4_096, 2_048, 1_024, 512, 256];
/// The internal oscillator may run 10 % slow (datasheet), so wait 110 % of 1/rate.
const CONVERSION_MARGIN_PCT: u64 = 110;
/// Plus the ~25 us wake-up from power-down, rounded up.
const WAKEUP_US: u64 = 100;
/// Polls of the OS bit after the computed wait before giving up: each 1 ms apart, so a
/// conversion more than 3 ms late is reported as a timeout, not waited on forever.
const READY_POLLS_MAX: u32 = 3;
const READY_POLL_INTERVAL_MS: u64 = 1;

/// Config register bits.
const OS_START: u16 = 1 << 15;
const MODE_SINGLE_SHOT: u16 = 1 << 8;
/// COMP_QUE = 0b11 disables the comparator (ALERT/RDY pin unused).
const COMP_QUE_DISABLE: u16 = 0b11;

/// Which pins a conversion measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Ads1115Input {
    /// AIN0 - AIN1 (differential).
    Ain0Ain1,
    /// AIN0 - AIN3.
    Ain0Ain3,
    /// AIN1 - AIN3.
    Ain1Ain3,
    /// AIN2 - AIN3.
    Ain2Ain3,
    /// AIN0 against GND.
    Ain0,
    /// AIN1 against GND.
    Ain1,
    /// AIN2 against GND.
    Ain2,
    /// AIN3 against GND.
    Ain3,
}

impl Ads1115Input {
    /// The MUX field (bits 14:12).
    pub fn mux_bits(self) -> u16 {
        match self {
            Ads1115Input::Ain0Ain1 => 0b000,
            Ads1115Input::Ain0Ain3 => 0b001,
            Ads1115Input::Ain1Ain3 => 0b010,
            Ads1115Input::Ain2Ain3 => 0b011,
            Ads1115Input::Ain0 => 0b100,
            Ads1115Input::Ain1 => 0b101,
            Ads1115Input::Ain2 => 0b110,
            Ads1115Input::Ain3 => 0b111,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Ads1115Input::Ain0Ain1 => "ain0-ain1",
            Ads1115Input::Ain0Ain3 => "ain0-ain3",
            Ads1115Input::Ain1Ain3 => "ain1-ain3",
            Ads1115Input::Ain2Ain3 => "ain2-ain3",
            Ads1115Input::Ain0 => "ain0",
            Ads1115Input::Ain1 => "ain1",
            Ads1115Input::Ain2 => "ain2",
            Ads1115Input::Ain3 => "ain3",
        }
    }
}

impl fmt::Display for Ads1115Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ads1115Input {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "ain0-ain1" => Ads1115Input::Ain0Ain1,
            "ain0-ain3" => Ads1115Input::Ain0Ain3,
            "ain1-ain3" => Ads1115Input::Ain1Ain3,
            "ain2-ain3" => Ads1115Input::Ain2Ain3,
            "ain0" => Ads1115Input::Ain0,
            "ain1" => Ads1115Input::Ain1,
            "ain2" => Ads1115Input::Ain2,
            "ain3" => Ads1115Input::Ain3,
            _ => {
                return Err(format!(
                    "`{s}` is not an ADS1115 input; use ain0-ain3 (single-ended) or \
                     ain0-ain1, ain0-ain3, ain1-ain3, ain2-ain3 (differential)"
                ));
            }
        })
    }
}

impl TryFrom<String> for Ads1115Input {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Ads1115Input> for String {
    fn from(i: Ads1115Input) -> String {
        i.to_string()
    }
}

/// One conversion's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// The pins measured.
    pub input: Ads1115Input,
    /// Full-scale range of the PGA in millivolts (one of `FULL_SCALES_MV`).
    pub full_scale_mv: u16,
    /// Data rate in samples per second (one of `DATA_RATES_SPS`).
    pub data_rate_sps: u16,
}

impl Conversion {
    /// The config word that starts this single-shot conversion, or why the settings are not
    /// ones the chip offers.
    pub fn config_word(&self) -> Result<u16, String> {
        let pga = FULL_SCALES_MV
            .iter()
            .position(|&mv| mv == self.full_scale_mv)
            .ok_or_else(|| {
                format!(
                    "full scale {} mV is not one the ADS1115 offers; use one of {FULL_SCALES_MV:?}",
                    self.full_scale_mv
                )
            })?;
        let dr = DATA_RATES_SPS
            .iter()
            .position(|&sps| sps == self.data_rate_sps)
            .ok_or_else(|| {
                format!(
                    "data rate {} samples/s is not one the ADS1115 offers; use one of {DATA_RATES_SPS:?}",
                    self.data_rate_sps
                )
            })?;
        // Both positions are below 8, so the casts cannot truncate.
        Ok(OS_START
            | (self.input.mux_bits() << 12)
            | ((pga as u16) << 9)
            | MODE_SINGLE_SHOT
            | ((dr as u16) << 5)
            | COMP_QUE_DISABLE)
    }

    /// How long to wait after starting before the result is ready.
    pub fn conversion_time(&self) -> Duration {
        let sps = u64::from(self.data_rate_sps.max(1));
        Duration::from_micros(1_000_000 * CONVERSION_MARGIN_PCT / 100 / sps + WAKEUP_US)
    }
}

/// Scales a raw conversion to millivolts, rounding to nearest: full scale is 32,768 counts.
pub fn raw_to_mv(raw: i16, full_scale_mv: u16) -> i32 {
    let scaled = i64::from(raw) * i64::from(full_scale_mv);
    // Round half away from zero, symmetric for negative differential readings.
    let rounded = if scaled >= 0 {
        (scaled + 16_384) / 32_768
    } else {
        (scaled - 16_384) / 32_768
    };
    rounded as i32
}

/// Whether a raw value sits at either end of the range: the input is at or past full scale
/// and the true value is unknown.
pub fn is_clipped(raw: i16) -> bool {
    raw == i16::MAX || raw == i16::MIN
}

/// An ADS1115 on an I2C bus.
pub struct Ads1115<I> {
    i2c: I,
    address: u8,
    device: String,
}

impl<I: I2c + Send> Ads1115<I> {
    /// The chip at `address` on `i2c`; `device` names it in errors (e.g. `/dev/i2c-1 0x48`).
    pub fn new(i2c: I, address: u8, device: impl Into<String>) -> Self {
        Ads1115 {
            i2c,
            address,
            device: device.into(),
        }
    }

    /// Gives back the bus.
    pub fn release(self) -> I {
        self.i2c
    }

    fn error(&self, err: I::Error, doing: &str) -> HalError {
        let (kind, advice) = match err.kind() {
            I2cErrorKind::NoAcknowledge(_) => (
                ErrorKind::NotFound,
                format!(
                    "no device acknowledged address 0x{:02X}; check the ADDR pin wiring and `i2cdetect -y <bus>`",
                    self.address
                ),
            ),
            I2cErrorKind::ArbitrationLoss => (
                ErrorKind::Busy,
                "another master holds the bus; retry".to_string(),
            ),
            _ => (
                ErrorKind::Io,
                "check the SDA/SCL wiring, pull-ups and the ADC's supply".to_string(),
            ),
        };
        HalError::new(
            kind,
            self.device.clone(),
            format!("{doing}: {err:?}; {advice}"),
        )
    }

    /// Writes the config register, starting a single-shot conversion.
    pub fn start(&mut self, conversion: &Conversion) -> Result<(), HalError> {
        let word = conversion
            .config_word()
            .map_err(|why| HalError::new(ErrorKind::InvalidInput, self.device.clone(), why))?;
        let [hi, lo] = word.to_be_bytes();
        self.i2c
            .write(self.address, &[REG_CONFIG, hi, lo])
            .map_err(|e| self.error(e, "writing the config register"))
    }

    /// Whether the conversion has finished (OS bit reads 1 when idle).
    pub fn is_ready(&mut self) -> Result<bool, HalError> {
        let mut buf = [0u8; 2];
        self.i2c
            .write_read(self.address, &[REG_CONFIG], &mut buf)
            .map_err(|e| self.error(e, "reading the config register"))?;
        Ok(u16::from_be_bytes(buf) & OS_START != 0)
    }

    /// Reads the conversion register.
    pub fn read_raw(&mut self) -> Result<i16, HalError> {
        let mut buf = [0u8; 2];
        self.i2c
            .write_read(self.address, &[REG_CONVERSION], &mut buf)
            .map_err(|e| self.error(e, "reading the conversion register"))?;
        Ok(i16::from_be_bytes(buf))
    }

    /// One single-shot conversion, in millivolts. A clipped result is an `OutOfRange` error,
    /// never a reading.
    pub async fn read_mv(&mut self, conversion: &Conversion) -> Result<i32, HalError> {
        self.start(conversion)?;
        tokio::time::sleep(conversion.conversion_time()).await;
        let mut polls = 0;
        while !self.is_ready()? {
            polls += 1;
            if polls > READY_POLLS_MAX {
                return Err(HalError::new(
                    ErrorKind::Timeout,
                    self.device.clone(),
                    format!(
                        "conversion on {} not finished {} ms after the expected {} us; check the ADC's supply",
                        conversion.input,
                        u64::from(READY_POLLS_MAX) * READY_POLL_INTERVAL_MS,
                        conversion.conversion_time().as_micros()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(READY_POLL_INTERVAL_MS)).await;
        }
        let raw = self.read_raw()?;
        if is_clipped(raw) {
            return Err(HalError::new(
                ErrorKind::OutOfRange,
                self.device.clone(),
                format!(
                    "{} is at the end of the +/-{} mV range (raw {raw}); the sensor is disconnected, \
                     shorted, or needs a larger full_scale_mv",
                    conversion.input, conversion.full_scale_mv
                ),
            ));
        }
        Ok(raw_to_mv(raw, conversion.full_scale_mv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_word_matches_datasheet() {
        // The datasheet's reset value 0x8583 with OS set: AIN0-AIN1, +/-2.048 V, single
        // shot, 128 SPS, comparator disabled.
        let reset = Conversion {
            input: Ads1115Input::Ain0Ain1,
            full_scale_mv: 2_048,
            data_rate_sps: 128,
        };
        assert_eq!(reset.config_word(), Ok(0x8583));
        let ain3 = Conversion {
            input: Ads1115Input::Ain3,
            full_scale_mv: 4_096,
            data_rate_sps: 860,
        };
        // 1 111 001 1 111 0 0 0 11
        assert_eq!(ain3.config_word(), Ok(0b1111_0011_1110_0011));
        let bad = Conversion {
            full_scale_mv: 5_000,
            ..reset
        };
        assert!(bad.config_word().is_err());
    }

    #[test]
    fn raw_scales_to_millivolts() {
        assert_eq!(raw_to_mv(0, 4_096), 0);
        assert_eq!(raw_to_mv(16_384, 4_096), 2_048);
        assert_eq!(raw_to_mv(-16_384, 4_096), -2_048);
        assert_eq!(raw_to_mv(32_766, 6_144), 6_144);
        // 1 count at +/-4.096 V is 0.125 mV: rounds to 0.
        assert_eq!(raw_to_mv(1, 4_096), 0);
        assert_eq!(raw_to_mv(4, 4_096), 1);
        assert!(is_clipped(i16::MAX) && is_clipped(i16::MIN) && !is_clipped(0));
    }
}
