//! The Linux board's configuration: which gpiochip line drives which relay, where the ADS1115
//! sits, which serial port and Modbus address reads which meter. Deserialised with serde
//! (TOML in practice) and validated before any device is opened.
//!
//! ```toml
//! [relays]
//! gpiochip = "/dev/gpiochip0"
//! [[relays.lines]]
//! relay = "feeder:1"
//! line = 17
//! active_low = true
//!
//! [analog]
//! i2c_bus = "/dev/i2c-1"
//! address = 0x48
//! [[analog.channels]]
//! channel = 0
//! name = "water_level"
//! input = "ain0"
//!
//! [modbus]
//! port = "/dev/ttyUSB0"
//! [[modbus.meters]]
//! customer = 17
//! address = 17
//!
//! [grid]
//! generator_address = 1
//! ballast_capacity_w = 30000
//! feeders = [{ feeder = 1, address = 2 }]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ads1115::{self, Ads1115Input, Conversion};
use crate::error::{ErrorKind, HalError};
use crate::modbus;
use crate::types::RelayLine;

/// The default GPIO character device: the SoC's own bank on a Raspberry Pi and most boards.
pub const GPIOCHIP_DEFAULT: &str = "/dev/gpiochip0";
/// The default I2C bus: the header's I2C on a Raspberry Pi.
pub const I2C_BUS_DEFAULT: &str = "/dev/i2c-1";
/// The consumer name the kernel shows in `gpioinfo` for lines ghatta holds.
pub const GPIO_CONSUMER_DEFAULT: &str = "ghatta";

/// Everything the Linux board needs to open its devices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinuxBoardConfig {
    /// Relay outputs on the GPIO character device.
    #[serde(default)]
    pub relays: RelaysConfig,
    /// The ADS1115 for slow analog inputs, if fitted.
    #[serde(default)]
    pub analog: Option<AnalogConfig>,
    /// The Modbus-RTU line to the PZEM-004T meters, if fitted.
    #[serde(default)]
    pub modbus: Option<ModbusConfig>,
    /// Which meters on the Modbus line measure the generator, feeders and ballast.
    #[serde(default)]
    pub grid: Option<GridConfig>,
}

/// `[relays]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaysConfig {
    /// The GPIO character device lines are on unless a line names its own.
    #[serde(default = "default_gpiochip")]
    pub gpiochip: PathBuf,
    /// The consumer label shown by `gpioinfo`.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// One entry per relay.
    #[serde(default)]
    pub lines: Vec<RelayLineConfig>,
}

impl Default for RelaysConfig {
    fn default() -> Self {
        RelaysConfig {
            gpiochip: default_gpiochip(),
            consumer: default_consumer(),
            lines: Vec::new(),
        }
    }
}

/// `[[relays.lines]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayLineConfig {
    /// Which relay: `feeder:N`, `customer:N` or `ballast:N`.
    pub relay: RelayLine,
    /// The line offset on the gpiochip (`gpioinfo` lists them).
    pub line: u32,
    /// Whether a low level closes the relay (typical of opto-isolated relay boards).
    #[serde(default)]
    pub active_low: bool,
    /// A gpiochip other than `relays.gpiochip` (e.g. an I2C GPIO expander).
    #[serde(default)]
    pub gpiochip: Option<PathBuf>,
    /// The state the line is driven to when the board opens it. Defaults: feeders and
    /// customers closed (a controller restart must not black out the village), ballast
    /// open (the ELC, not the supervisor, holds the per-cycle balance).
    #[serde(default)]
    pub start_closed: Option<bool>,
}

impl RelayLineConfig {
    /// `start_closed`, or the default for this kind of relay.
    pub fn start_closed(&self) -> bool {
        self.start_closed
            .unwrap_or(!matches!(self.relay, RelayLine::Ballast(_)))
    }
}

/// `[analog]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalogConfig {
    /// The I2C bus device.
    #[serde(default = "default_i2c_bus")]
    pub i2c_bus: PathBuf,
    /// The ADS1115's 7-bit address (0x48-0x4B by the ADDR pin).
    #[serde(default = "default_ads_address")]
    pub address: u8,
    /// One entry per signal.
    #[serde(default)]
    pub channels: Vec<AnalogChannelConfig>,
}

/// `[[analog.channels]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalogChannelConfig {
    /// The number callers pass to `read_analog`.
    pub channel: u8,
    /// What the signal is, e.g. `water_level`.
    pub name: String,
    /// The ADC input: `ain0`..`ain3` or a differential pair such as `ain0-ain1`.
    pub input: Ads1115Input,
    /// PGA full scale in millivolts: 6144, 4096, 2048, 1024, 512 or 256.
    #[serde(default = "default_full_scale_mv")]
    pub full_scale_mv: u16,
    /// Samples per second: 8, 16, 32, 64, 128, 250, 475 or 860.
    #[serde(default = "default_data_rate_sps")]
    pub data_rate_sps: u16,
}

impl AnalogChannelConfig {
    /// The conversion settings for this channel.
    pub fn conversion(&self) -> Conversion {
        Conversion {
            input: self.input,
            full_scale_mv: self.full_scale_mv,
            data_rate_sps: self.data_rate_sps,
        }
    }
}

/// `[modbus]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// The serial port, e.g. `/dev/ttyUSB0` (a `/dev/serial/by-id/...` path survives
    /// re-plugging).
    pub port: PathBuf,
    /// Line speed; the PZEM-004T v3 uses 9,600 bit/s.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Wait for each reply, in milliseconds.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u32,
    /// Further attempts after a timeout or CRC error.
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Customers' meters.
    #[serde(default)]
    pub meters: Vec<CustomerMeterConfig>,
}

/// `[[modbus.meters]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerMeterConfig {
    /// The customer.
    pub customer: u32,
    /// The meter's Modbus address (1-247).
    pub address: u8,
}

/// `[grid]`: meters on the Modbus line that measure the plant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridConfig {
    /// The meter on the generator output: frequency, voltage and generation.
    pub generator_address: u8,
    /// One meter per feeder.
    #[serde(default)]
    pub feeders: Vec<FeederMeterConfig>,
    /// The meter on the ballast circuit; without one, ballast power is estimated as
    /// generation minus the feeders' loads.
    #[serde(default)]
    pub ballast_address: Option<u8>,
    /// The ballast's rating in watts.
    pub ballast_capacity_w: u32,
}

/// `[[grid.feeders]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeederMeterConfig {
    /// The feeder, as in `feeder:N` relays.
    pub feeder: u16,
    /// Its meter's Modbus address.
    pub address: u8,
}

fn default_gpiochip() -> PathBuf {
    PathBuf::from(GPIOCHIP_DEFAULT)
}
fn default_consumer() -> String {
    GPIO_CONSUMER_DEFAULT.to_string()
}
fn default_i2c_bus() -> PathBuf {
    PathBuf::from(I2C_BUS_DEFAULT)
}
fn default_ads_address() -> u8 {
    ads1115::ADDRESS_DEFAULT
}
fn default_full_scale_mv() -> u16 {
    ads1115::FULL_SCALE_MV_DEFAULT
}
fn default_data_rate_sps() -> u16 {
    ads1115::DATA_RATE_SPS_DEFAULT
}
fn default_baud() -> u32 {
    modbus::BAUD_DEFAULT
}
fn default_response_timeout_ms() -> u32 {
    modbus::RESPONSE_TIMEOUT_MS_DEFAULT
}
fn default_retries() -> u8 {
    modbus::RETRIES_DEFAULT
}

fn invalid(key: impl Into<String>, detail: impl Into<String>) -> HalError {
    HalError::new(ErrorKind::InvalidInput, key, detail)
}

fn check_modbus_address(key: String, address: u8) -> Result<(), HalError> {
    if (modbus::ADDRESS_MIN..=modbus::ADDRESS_MAX).contains(&address) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "address {address} is not a unicast Modbus address; use {}-{}, a different one for each meter on the line",
                modbus::ADDRESS_MIN,
                modbus::ADDRESS_MAX
            ),
        ))
    }
}

impl LinuxBoardConfig {
    /// Parses TOML text; `source` names the file in errors.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Self, HalError> {
        let config: LinuxBoardConfig = toml::from_str(text).map_err(|e| {
            invalid(
                source,
                format!("{e}; fix the board configuration (keys: relays, analog, modbus, grid)"),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that can be checked without opening a device. Errors name the
    /// configuration key, e.g. `modbus.meters[2].address`.
    pub fn validate(&self) -> Result<(), HalError> {
        let mut relays: BTreeMap<RelayLine, usize> = BTreeMap::new();
        let mut pins: BTreeMap<(PathBuf, u32), usize> = BTreeMap::new();
        for (i, line) in self.relays.lines.iter().enumerate() {
            if let Some(first) = relays.insert(line.relay, i) {
                return Err(invalid(
                    format!("relays.lines[{i}].relay"),
                    format!(
                        "{} is already configured at relays.lines[{first}]",
                        line.relay
                    ),
                ));
            }
            let chip = line
                .gpiochip
                .clone()
                .unwrap_or_else(|| self.relays.gpiochip.clone());
            if let Some(first) = pins.insert((chip.clone(), line.line), i) {
                return Err(invalid(
                    format!("relays.lines[{i}].line"),
                    format!(
                        "line {} on {} already drives relays.lines[{first}]; each relay needs its own line",
                        line.line,
                        chip.display()
                    ),
                ));
            }
        }

        if let Some(analog) = &self.analog {
            if !ads1115::ADDRESSES.contains(&analog.address) {
                return Err(invalid(
                    "analog.address",
                    format!(
                        "0x{:02X} is not an ADS1115 address; the ADDR pin selects 0x48 (GND), 0x49 (VDD), \
                         0x4A (SDA) or 0x4B (SCL)",
                        analog.address
                    ),
                ));
            }
            let mut channels: BTreeMap<u8, usize> = BTreeMap::new();
            let mut names: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, ch) in analog.channels.iter().enumerate() {
                if let Some(first) = channels.insert(ch.channel, i) {
                    return Err(invalid(
                        format!("analog.channels[{i}].channel"),
                        format!("channel {} is already analog.channels[{first}]", ch.channel),
                    ));
                }
                if ch.name.trim().is_empty() {
                    return Err(invalid(
                        format!("analog.channels[{i}].name"),
                        "a channel needs a name, e.g. water_level",
                    ));
                }
                if let Some(first) = names.insert(ch.name.as_str(), i) {
                    return Err(invalid(
                        format!("analog.channels[{i}].name"),
                        format!("`{}` is already analog.channels[{first}]", ch.name),
                    ));
                }
                ch.conversion()
                    .config_word()
                    .map_err(|why| invalid(format!("analog.channels[{i}]"), why))?;
            }
        }

        let mut addresses: BTreeMap<u8, String> = BTreeMap::new();
        let mut claim = |key: String, address: u8| -> Result<(), HalError> {
            check_modbus_address(key.clone(), address)?;
            if let Some(first) = addresses.insert(address, key.clone()) {
                return Err(invalid(
                    key,
                    format!(
                        "address {address} is already used by {first}; two meters on one line need different addresses"
                    ),
                ));
            }
            Ok(())
        };
        if let Some(bus) = &self.modbus {
            if !(modbus::BAUD_MIN..=modbus::BAUD_MAX).contains(&bus.baud) {
                return Err(invalid(
                    "modbus.baud",
                    format!(
                        "{} bit/s is outside {}-{}; the PZEM-004T v3 uses 9600",
                        bus.baud,
                        modbus::BAUD_MIN,
                        modbus::BAUD_MAX
                    ),
                ));
            }
            if !(modbus::RESPONSE_TIMEOUT_MS_MIN..=modbus::RESPONSE_TIMEOUT_MS_MAX)
                .contains(&bus.response_timeout_ms)
            {
                return Err(invalid(
                    "modbus.response_timeout_ms",
                    format!(
                        "{} ms is outside {}-{} ms",
                        bus.response_timeout_ms,
                        modbus::RESPONSE_TIMEOUT_MS_MIN,
                        modbus::RESPONSE_TIMEOUT_MS_MAX
                    ),
                ));
            }
            if bus.retries > modbus::RETRIES_MAX {
                return Err(invalid(
                    "modbus.retries",
                    format!(
                        "{} retries is more than {}; more only hides a broken line",
                        bus.retries,
                        modbus::RETRIES_MAX
                    ),
                ));
            }
            let mut customers: BTreeMap<u32, usize> = BTreeMap::new();
            for (i, meter) in bus.meters.iter().enumerate() {
                if let Some(first) = customers.insert(meter.customer, i) {
                    return Err(invalid(
                        format!("modbus.meters[{i}].customer"),
                        format!(
                            "customer {} already has a meter at modbus.meters[{first}]",
                            meter.customer
                        ),
                    ));
                }
                claim(format!("modbus.meters[{i}].address"), meter.address)?;
            }
        }
        if let Some(grid) = &self.grid {
            if self.modbus.is_none() {
                return Err(invalid(
                    "grid",
                    "the grid meters are on the Modbus line, but there is no [modbus] section naming its port",
                ));
            }
            claim("grid.generator_address".to_string(), grid.generator_address)?;
            let mut feeders: BTreeMap<u16, usize> = BTreeMap::new();
            for (i, feeder) in grid.feeders.iter().enumerate() {
                if let Some(first) = feeders.insert(feeder.feeder, i) {
                    return Err(invalid(
                        format!("grid.feeders[{i}].feeder"),
                        format!("feeder {} is already grid.feeders[{first}]", feeder.feeder),
                    ));
                }
                claim(format!("grid.feeders[{i}].address"), feeder.address)?;
            }
            if let Some(address) = grid.ballast_address {
                claim("grid.ballast_address".to_string(), address)?;
            }
        }
        Ok(())
    }
}
