//! The Linux backend: relays on the GPIO character device, an ADS1115 on /dev/i2c-N and
//! PZEM-004T v3 meters on a Modbus-RTU serial line, all opened from a `LinuxBoardConfig`.
//!
//! Opening checks each device path first, so a missing device is reported with its path,
//! the configuration key that named it and the command that finds the right one, instead
//! of a bare ENOENT.
//!
//! The Modbus line comes back by itself: when its port fails in a way that means the adapter
//! went away, the port is closed and reopened by path with backoff (`crate::reopen`) on
//! later reads, logged at WARN once per episode and at INFO when a meter answers again, and
//! counted in `ModbusStats`.

pub mod config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::{CdevPin, CdevPinError, I2cdev};
use tokio_serial::{DataBits, FlowControl, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use crate::ads1115::{Ads1115, Conversion};
use crate::error::{ErrorKind, HalError, io_kind};
use crate::modbus::{ModbusRtu, ModbusSettings, ModbusStats};
use crate::pzem;
use crate::relay::{RelayBank, RelayOutput, level_for};
use crate::reopen::Reopen;
use crate::traits::{AnalogInputs, EnergyMeters, GridMeter, HalResult, Relays};
use crate::types::{
    AnalogChannel, AnalogChannelInfo, FeederSample, GridSample, MeterReading, RelayLine,
};

pub use config::LinuxBoardConfig;

use config::GridConfig;

/// A board built from real Linux devices.
pub struct LinuxBoard {
    relays: RelayBank<CdevPin>,
    adc: Option<Ads1115<I2cdev>>,
    analog: BTreeMap<AnalogChannel, (String, Conversion)>,
    modbus: Option<ModbusRtu<SerialStream>>,
    /// Where and how to reopen the Modbus port after it went away.
    modbus_port: Option<(PathBuf, u32)>,
    modbus_reopen: Reopen,
    /// The zero of the reopen schedule's clock.
    epoch: tokio::time::Instant,
    meters: BTreeMap<u32, u8>,
    grid: Option<GridConfig>,
}

/// `NotFound` naming the config key and path, with the command that lists the real ones.
pub fn missing_device(key: &str, path: &Path, advice: &str) -> HalError {
    HalError::new(
        ErrorKind::NotFound,
        key,
        format!("{} does not exist; {advice}", path.display()),
    )
}

fn require_exists(key: &str, path: &Path, advice: &str) -> Result<(), HalError> {
    if path.exists() {
        Ok(())
    } else {
        Err(missing_device(key, path, advice))
    }
}

/// What to run to find the board's gpiochip.
pub const GPIOCHIP_ADVICE: &str = "check the board's gpiochip number with `gpiodetect`";
/// What to run to find the I2C bus.
pub const I2C_ADVICE: &str = "enable I2C (on a Raspberry Pi `dtparam=i2c_arm=on` in config.txt) and list buses with `i2cdetect -l`";
/// What to run to find the serial port.
pub const SERIAL_ADVICE: &str =
    "check that the USB-serial adapter is plugged in and list ports with `ls /dev/serial/by-id/`";

impl LinuxBoard {
    /// Validates `config` and opens every device it names. Must be called inside a tokio
    /// runtime (the serial port registers with its reactor); outside one it returns an
    /// error instead of panicking.
    pub fn open(config: &LinuxBoardConfig) -> Result<LinuxBoard, HalError> {
        config.validate()?;
        let relays = open_relays(config)?;

        let mut adc = None;
        let mut analog = BTreeMap::new();
        if let Some(a) = &config.analog {
            require_exists("analog.i2c_bus", &a.i2c_bus, I2C_ADVICE)?;
            let bus = I2cdev::new(&a.i2c_bus).map_err(|e| {
                let io: std::io::Error = e.into();
                HalError::new(
                    io_kind(&io),
                    "analog.i2c_bus",
                    format!(
                        "{}: {io}; if permission is denied add the service user to the i2c group",
                        a.i2c_bus.display()
                    ),
                )
            })?;
            adc = Some(Ads1115::new(
                bus,
                a.address,
                format!("ads1115 {} 0x{:02X}", a.i2c_bus.display(), a.address),
            ));
            for ch in &a.channels {
                analog.insert(
                    AnalogChannel(ch.channel),
                    (ch.name.clone(), ch.conversion()),
                );
            }
        }

        let mut modbus = None;
        let mut modbus_port = None;
        let mut meters = BTreeMap::new();
        if let Some(m) = &config.modbus {
            require_exists("modbus.port", &m.port, SERIAL_ADVICE)?;
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(HalError::new(
                    ErrorKind::Other,
                    "modbus.port",
                    "LinuxBoard::open was called outside a tokio runtime; open the board from async code",
                ));
            }
            let port_name = m.port.display().to_string();
            let stream = open_serial(&m.port, m.baud)?;
            modbus_port = Some((m.port.clone(), m.baud));
            let settings = ModbusSettings {
                port_name,
                baud: m.baud,
                response_timeout_ms: m.response_timeout_ms,
                retries: m.retries,
            };
            modbus = Some(ModbusRtu::new(stream, settings));
            for meter in &m.meters {
                meters.insert(meter.customer, meter.address);
            }
        }

        Ok(LinuxBoard {
            relays,
            adc,
            analog,
            modbus,
            modbus_port,
            modbus_reopen: Reopen::new(),
            epoch: tokio::time::Instant::now(),
            meters,
            grid: config.grid.clone(),
        })
    }

    /// The Modbus line's counters, if the board has one.
    pub fn modbus_stats(&self) -> Option<ModbusStats> {
        self.modbus.as_ref().map(ModbusRtu::stats)
    }

    async fn read_meter(&mut self, address: u8, role: &str) -> HalResult<pzem::PzemReading> {
        let now_ms = self.now_ms();
        let Some(bus) = self.modbus.as_mut() else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                "modbus",
                "no [modbus] section in the board configuration",
            ));
        };
        if !bus.is_attached() {
            reopen_line(
                bus,
                &mut self.modbus_reopen,
                self.modbus_port.as_ref(),
                now_ms,
            )?;
        }
        let result = pzem::read(bus, address).await;
        if result.is_ok() {
            if let Some(away_ms) = self.modbus_reopen.answered(now_ms) {
                tracing::info!(
                    port = %bus.settings().port_name,
                    away_ms,
                    stats = %bus.stats(),
                    "modbus line is back: a meter answered after the port was reopened"
                );
            }
        } else if let Err(e) = &result
            && !bus.is_attached()
            && self.modbus_reopen.gone(now_ms)
        {
            tracing::warn!(
                port = %bus.settings().port_name,
                error = %e,
                first_retry_ms = crate::reopen::REOPEN_FIRST_MS,
                backoff_ms_max = crate::reopen::REOPEN_BACKOFF_MS_MAX,
                "modbus line went away (adapter unplugged or hung up): reopening with backoff; \
                 grid samples and meter reads fail until it is back"
            );
        }
        result.map_err(|mut e| {
            e.device = format!("{} ({role})", e.device);
            e
        })
    }

    fn now_ms(&self) -> u64 {
        tokio::time::Instant::now()
            .duration_since(self.epoch)
            .as_millis() as u64
    }
}

/// Opens the Modbus port: PZEM-004T v3 framing, 8 data bits, no parity, 1 stop bit, no flow
/// control.
fn open_serial(path: &Path, baud: u32) -> Result<SerialStream, HalError> {
    let port_name = path.display().to_string();
    tokio_serial::new(port_name.clone(), baud)
        .data_bits(DataBits::Eight)
        .parity(Parity::None)
        .stop_bits(StopBits::One)
        .flow_control(FlowControl::None)
        .open_native_async()
        .map_err(|e| serial_error(&port_name, &e))
}

/// Reopens a Modbus port that went away, when its backoff allows; otherwise (or when the
/// device is still missing) fails at once, without bus time, saying when the next attempt is.
fn reopen_line(
    bus: &mut ModbusRtu<SerialStream>,
    reopen: &mut Reopen,
    port: Option<&(PathBuf, u32)>,
    now_ms: u64,
) -> Result<(), HalError> {
    let device = format!("modbus {}", bus.settings().port_name);
    let Some((path, baud)) = port else {
        return Err(HalError::new(
            ErrorKind::NotFound,
            device,
            "the serial port went away and this board cannot reopen it",
        ));
    };
    if !reopen.in_episode() {
        // Closed without an episode (cannot happen through read_meter); start one so the
        // backoff applies.
        reopen.gone(now_ms);
    }
    if !reopen.due(now_ms) {
        return Err(HalError::new(
            ErrorKind::NotFound,
            device,
            format!(
                "the serial port went away; next reopen attempt in {} ms. {SERIAL_ADVICE}",
                reopen.wait_ms(now_ms)
            ),
        ));
    }
    match open_serial(path, *baud) {
        Ok(stream) => {
            bus.attach(stream);
            reopen.opened();
            tracing::info!(port = %path.display(), "modbus port reopened");
            Ok(())
        }
        Err(e) => {
            bus.note_reopen_failure();
            let wait_ms = reopen.open_failed(now_ms);
            tracing::debug!(error = %e, wait_ms, "modbus port still missing");
            Err(HalError::new(
                e.kind,
                device,
                format!("{}; next reopen attempt in {wait_ms} ms", e.detail),
            ))
        }
    }
}

fn serial_error(port: &str, err: &tokio_serial::Error) -> HalError {
    let kind = match err.kind() {
        tokio_serial::ErrorKind::NoDevice => ErrorKind::NotFound,
        tokio_serial::ErrorKind::Io(k) => io_kind(&std::io::Error::from(k)),
        tokio_serial::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
        tokio_serial::ErrorKind::Unknown => ErrorKind::Io,
    };
    let advice = match kind {
        ErrorKind::PermissionDenied => "add the service user to the dialout group",
        ErrorKind::Busy => "another program has the port open (`fuser` shows which)",
        _ => SERIAL_ADVICE,
    };
    HalError::new(
        kind,
        "modbus.port",
        format!("{port}: {}; {advice}", err.description),
    )
}

/// Whether a GPIO line's error means its chip went away (a USB GPIO expander unplugged):
/// ENODEV, ENXIO, EIO or ENOENT. gpio-cdev keeps its error kind private, so the errno is
/// read from its source: an `io::Error`, or nix's `Errno`, whose text starts with its name.
fn cdev_gone(e: &CdevPinError) -> bool {
    use std::error::Error as _;
    let Some(source) = e.inner().source() else {
        return false;
    };
    if let Some(io) = source.downcast_ref::<std::io::Error>() {
        return crate::reopen::is_gone(io);
    }
    let text = source.to_string();
    ["ENODEV", "ENXIO", "EIO:", "ENOENT"]
        .iter()
        .any(|name| text.starts_with(name))
}

fn open_relays(config: &LinuxBoardConfig) -> Result<RelayBank<CdevPin>, HalError> {
    let mut bank = RelayBank::new();
    // How to request each line again after its chip went away.
    let mut wiring: BTreeMap<RelayLine, (PathBuf, u32)> = BTreeMap::new();
    let mut chips: BTreeMap<std::path::PathBuf, Chip> = BTreeMap::new();
    for (i, line) in config.relays.lines.iter().enumerate() {
        let (key, path) = match &line.gpiochip {
            Some(p) => (format!("relays.lines[{i}].gpiochip"), p.clone()),
            None => (
                "relays.gpiochip".to_string(),
                config.relays.gpiochip.clone(),
            ),
        };
        if !chips.contains_key(&path) {
            require_exists(&key, &path, GPIOCHIP_ADVICE)?;
            let chip = Chip::new(&path).map_err(|e| {
                HalError::new(
                    ErrorKind::Io,
                    key.clone(),
                    format!(
                        "{}: {e}; if permission is denied add the service user to the gpio group",
                        path.display()
                    ),
                )
            })?;
            chips.insert(path.clone(), chip);
        }
        let Some(chip) = chips.get_mut(&path) else {
            continue; // inserted just above
        };
        let lines_n = chip.num_lines();
        let device = format!("{} line {}", path.display(), line.line);
        if line.line >= lines_n {
            return Err(HalError::new(
                ErrorKind::NotFound,
                format!("relays.lines[{i}].line"),
                format!(
                    "line {} does not exist on {} (lines 0-{}); check the wiring table with `gpioinfo`",
                    line.line,
                    path.display(),
                    lines_n.saturating_sub(1)
                ),
            ));
        }
        let gpio_err = |e: linux_embedded_hal::gpio_cdev::Error| {
            HalError::new(
                ErrorKind::Io,
                format!("relays.lines[{i}]"),
                format!(
                    "{device}: {e}; if `gpioinfo` shows another consumer holding the line, stop that program"
                ),
            )
        };
        let start_level = level_for(line.start_closed(), line.active_low);
        let value = u8::from(start_level == embedded_hal::digital::PinState::High);
        let handle = chip
            .get_line(line.line)
            .and_then(|l| l.request(LineRequestFlags::OUTPUT, value, &config.relays.consumer))
            .map_err(gpio_err)?;
        let pin = CdevPin::new(handle).map_err(gpio_err)?;
        wiring.insert(line.relay, (path.clone(), line.line));
        bank.insert(
            line.relay,
            RelayOutput {
                pin,
                active_low: line.active_low,
                device,
            },
        );
        // Drive the level it was requested at once more, so the bank knows it: a line whose
        // chip goes away before its first command is requested again at it when read.
        bank.set(line.relay, line.start_closed())?;
    }
    let consumer = config.relays.consumer.clone();
    bank.set_reopener(
        Box::new(move |relay, level| {
            let device = format!("relay {relay}");
            let Some((path, offset)) = wiring.get(&relay) else {
                return Err(HalError::new(
                    ErrorKind::NotFound,
                    device,
                    "no such relay line in this board's configuration",
                ));
            };
            let fail = |e: linux_embedded_hal::gpio_cdev::Error| {
                HalError::new(
                    ErrorKind::NotFound,
                    device.clone(),
                    format!("{} line {offset}: {e}; {GPIOCHIP_ADVICE}", path.display()),
                )
            };
            let mut chip = Chip::new(path).map_err(fail)?;
            let value = u8::from(level == embedded_hal::digital::PinState::High);
            let handle = chip
                .get_line(*offset)
                .and_then(|l| l.request(LineRequestFlags::OUTPUT, value, &consumer))
                .map_err(fail)?;
            CdevPin::new(handle).map_err(fail)
        }),
        cdev_gone,
    );
    Ok(bank)
}

impl GridMeter for LinuxBoard {
    fn line_stats(&self) -> Option<ModbusStats> {
        self.modbus_stats()
    }

    async fn read_grid(&mut self) -> HalResult<GridSample> {
        let Some(grid) = self.grid.clone() else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                "grid",
                "no [grid] section in the board configuration; name the generator and feeder meters",
            ));
        };
        let generator = self
            .read_meter(grid.generator_address, "generator")
            .await?
            .to_meter_reading();
        let mut feeders = Vec::with_capacity(grid.feeders.len());
        let mut feeders_w: u32 = 0;
        for f in &grid.feeders {
            let m = self
                .read_meter(f.address, &format!("feeder {}", f.feeder))
                .await?
                .to_meter_reading();
            let line = RelayLine::Feeder(f.feeder);
            // A feeder without a contactor is always supplying.
            let closed = if self.relays.lines().contains(&line) {
                self.relays.get(line)?
            } else {
                true
            };
            feeders_w = feeders_w.saturating_add(m.power_w);
            feeders.push(FeederSample {
                feeder: f.feeder,
                current_ma: m.current_ma,
                load_w: m.power_w,
                closed,
            });
        }
        feeders.sort_by_key(|f| f.feeder);
        let ballast_w = match grid.ballast_address {
            Some(address) => {
                self.read_meter(address, "ballast")
                    .await?
                    .to_meter_reading()
                    .power_w
            }
            // Without a ballast meter, everything generated and not on a feeder goes there.
            None => generator.power_w.saturating_sub(feeders_w),
        };
        Ok(GridSample {
            frequency_mhz: generator.frequency_mhz,
            voltage_dv: generator.voltage_dv,
            generation_w: generator.power_w,
            feeders,
            ballast_w,
            ballast_capacity_w: grid.ballast_capacity_w,
        })
    }
}

impl EnergyMeters for LinuxBoard {
    fn customers(&self) -> Vec<u32> {
        self.meters.keys().copied().collect()
    }

    async fn read_energy(&mut self, customer: u32) -> HalResult<MeterReading> {
        let Some(&address) = self.meters.get(&customer) else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                format!("customer {customer}"),
                "this board has no meter for the customer; add it under [[modbus.meters]]",
            ));
        };
        Ok(self
            .read_meter(address, &format!("customer {customer}"))
            .await?
            .to_meter_reading())
    }
}

impl Relays for LinuxBoard {
    fn relay_lines(&self) -> Vec<RelayLine> {
        self.relays.lines()
    }

    fn set_relay(&mut self, line: RelayLine, closed: bool) -> HalResult<()> {
        self.relays.set(line, closed)
    }

    fn relay_stats(&self) -> Option<crate::relay::RelayStats> {
        Some(self.relays.stats())
    }

    fn relay_state(&mut self, line: RelayLine) -> HalResult<bool> {
        self.relays.get(line)
    }
}

impl AnalogInputs for LinuxBoard {
    fn analog_channels(&self) -> Vec<AnalogChannelInfo> {
        self.analog
            .iter()
            .map(|(&channel, (name, _))| AnalogChannelInfo {
                channel,
                name: name.clone(),
            })
            .collect()
    }

    async fn read_analog(&mut self, channel: AnalogChannel) -> HalResult<i32> {
        let Some((_, conversion)) = self.analog.get(&channel).cloned() else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                channel.to_string(),
                "no such analog channel; add it under [[analog.channels]]",
            ));
        };
        let Some(adc) = self.adc.as_mut() else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                "analog",
                "no [analog] section in the board configuration",
            ));
        };
        adc.read_mv(&conversion).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpio_error_of_a_removed_device_means_gone_and_others_do_not() {
        let err = |errno| {
            CdevPinError::from(linux_embedded_hal::gpio_cdev::Error::from(
                std::io::Error::from_raw_os_error(errno),
            ))
        };
        assert!(cdev_gone(&err(19)), "ENODEV");
        assert!(cdev_gone(&err(5)), "EIO");
        assert!(
            !cdev_gone(&err(16)),
            "EBUSY: another program holds the line"
        );
        assert!(!cdev_gone(&err(22)), "EINVAL");
    }
}
