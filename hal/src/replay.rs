//! The replay backend: feeds grid samples and meter readings recorded in CSV files back to
//! the field loop, one grid row per `read_grid`.
//!
//! Grid file columns (header row first; any order; `#` lines and blank lines ignored):
//!
//! | column | meaning |
//! |---|---|
//! | `t_ms` | time of the row in ms, non-decreasing (required) |
//! | `frequency_mhz`, `voltage_dv`, `generation_w`, `ballast_w`, `ballast_capacity_w` | as in `GridSample` (required) |
//! | `feeder<N>_w` | load of feeder N in watts (one per feeder) |
//! | `feeder<N>_ma` | its current in mA (optional; else derived from W and V) |
//! | `feeder<N>_closed` | 1 or 0 (optional; else 1) |
//! | `analog<N>_mv` | analog channel N in millivolts (optional) |
//!
//! Meter file columns: `t_ms,customer,total_wh,voltage_dv,current_ma,power_w,frequency_mhz`.
//! `read_energy` returns a customer's latest row at or before the time of the last grid row
//! read. Relay commands are accepted and remembered (`relay_state` returns them) but cannot
//! change what was recorded. A malformed line is an error naming the file and line number.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{ErrorKind, HalError};
use crate::traits::{AnalogInputs, EnergyMeters, GridMeter, HalResult, Relays};
use crate::types::{
    AnalogChannel, AnalogChannelInfo, FeederSample, GridSample, MeterReading, RelayLine,
};

/// Largest recording read: 64 MiB, over a week of 1 s rows for a plant with 8 feeders,
/// and still small beside the controller's memory.
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The grid file's required columns.
pub const GRID_COLUMNS_REQUIRED: [&str; 6] = [
    "t_ms",
    "frequency_mhz",
    "voltage_dv",
    "generation_w",
    "ballast_w",
    "ballast_capacity_w",
];
/// The meter file's columns.
pub const METER_COLUMNS: [&str; 7] = [
    "t_ms",
    "customer",
    "total_wh",
    "voltage_dv",
    "current_ma",
    "power_w",
    "frequency_mhz",
];

#[derive(Clone, Debug)]
struct GridRow {
    t_ms: u64,
    sample: GridSample,
    analog: BTreeMap<AnalogChannel, i32>,
}

/// What a grid-file column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum GridColumn {
    Time,
    Frequency,
    Voltage,
    Generation,
    Ballast,
    BallastCapacity,
    FeederW(u16),
    FeederMa(u16),
    FeederClosed(u16),
    AnalogMv(u8),
}

fn parse_grid_column(name: &str) -> Option<GridColumn> {
    Some(match name {
        "t_ms" => GridColumn::Time,
        "frequency_mhz" => GridColumn::Frequency,
        "voltage_dv" => GridColumn::Voltage,
        "generation_w" => GridColumn::Generation,
        "ballast_w" => GridColumn::Ballast,
        "ballast_capacity_w" => GridColumn::BallastCapacity,
        _ => {
            if let Some(rest) = name.strip_prefix("feeder") {
                let (n, suffix) = rest.split_once('_')?;
                let n: u16 = n.parse().ok()?;
                match suffix {
                    "w" => GridColumn::FeederW(n),
                    "ma" => GridColumn::FeederMa(n),
                    "closed" => GridColumn::FeederClosed(n),
                    _ => return None,
                }
            } else if let Some(rest) = name.strip_prefix("analog") {
                let n = rest.strip_suffix("_mv")?;
                GridColumn::AnalogMv(n.parse().ok()?)
            } else {
                return None;
            }
        }
    })
}

/// A CSV reader's position, for errors.
struct Source<'a> {
    name: &'a str,
}

impl Source<'_> {
    fn error(&self, line: usize, detail: impl std::fmt::Display) -> HalError {
        HalError::new(
            ErrorKind::InvalidInput,
            format!("replay {}", self.name),
            format!("{}:{line}: {detail}; fix or remove the line", self.name),
        )
    }

    fn number<T: std::str::FromStr>(
        &self,
        line: usize,
        column: &str,
        field: &str,
    ) -> Result<T, HalError> {
        field.parse().map_err(|_| {
            self.error(
                line,
                format!("column `{column}`: `{field}` is not a number in range"),
            )
        })
    }
}

/// The lines of a CSV text that carry data: (1-based line number, trimmed text).
fn data_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn split(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

fn parse_grid(text: &str, name: &str) -> Result<Vec<GridRow>, HalError> {
    let src = Source { name };
    let mut lines = data_lines(text);
    let Some((header_line, header)) = lines.next() else {
        return Err(src.error(1, "the file is empty; the first line must be the header"));
    };
    let mut columns = Vec::new();
    let mut seen = BTreeSet::new();
    for field in split(header) {
        let column = parse_grid_column(field).ok_or_else(|| {
            src.error(
                header_line,
                format!(
                    "unknown column `{field}`; use {GRID_COLUMNS_REQUIRED:?}, feeder<N>_w, feeder<N>_ma, \
                     feeder<N>_closed or analog<N>_mv"
                ),
            )
        })?;
        if !seen.insert(column) {
            return Err(src.error(header_line, format!("column `{field}` appears twice")));
        }
        columns.push(column);
    }
    for required in GRID_COLUMNS_REQUIRED {
        let column = parse_grid_column(required);
        if !column.is_some_and(|c| seen.contains(&c)) {
            return Err(src.error(header_line, format!("the header lacks column `{required}`")));
        }
    }
    for c in &columns {
        if let GridColumn::FeederMa(n) | GridColumn::FeederClosed(n) = *c
            && !seen.contains(&GridColumn::FeederW(n))
        {
            return Err(src.error(
                header_line,
                format!("feeder {n} has a current or closed column but no feeder{n}_w"),
            ));
        }
    }
    let feeders: Vec<u16> = seen
        .iter()
        .filter_map(|c| match c {
            GridColumn::FeederW(n) => Some(*n),
            _ => None,
        })
        .collect();
    let header_fields = split(header);

    let mut rows: Vec<GridRow> = Vec::new();
    for (line, text) in lines {
        let fields = split(text);
        if fields.len() != columns.len() {
            return Err(src.error(
                line,
                format!(
                    "{} fields where the header has {} columns",
                    fields.len(),
                    columns.len()
                ),
            ));
        }
        let mut sample = GridSample {
            feeders: feeders
                .iter()
                .map(|&feeder| FeederSample {
                    feeder,
                    closed: true,
                    ..FeederSample::default()
                })
                .collect(),
            ..GridSample::default()
        };
        let mut t_ms = 0;
        let mut analog = BTreeMap::new();
        let mut feeder_ma: BTreeMap<u16, u32> = BTreeMap::new();
        for ((column, field), column_name) in columns.iter().zip(&fields).zip(&header_fields) {
            let num32 = || src.number::<u32>(line, column_name, field);
            let feeder_mut = |sample: &mut GridSample, n: u16| -> Option<usize> {
                sample.feeders.iter().position(|f| f.feeder == n)
            };
            match *column {
                GridColumn::Time => t_ms = src.number::<u64>(line, column_name, field)?,
                GridColumn::Frequency => sample.frequency_mhz = num32()?,
                GridColumn::Voltage => sample.voltage_dv = num32()?,
                GridColumn::Generation => sample.generation_w = num32()?,
                GridColumn::Ballast => sample.ballast_w = num32()?,
                GridColumn::BallastCapacity => sample.ballast_capacity_w = num32()?,
                GridColumn::FeederW(n) => {
                    if let Some(i) = feeder_mut(&mut sample, n) {
                        sample.feeders[i].load_w = num32()?;
                    }
                }
                GridColumn::FeederMa(n) => {
                    feeder_ma.insert(n, num32()?);
                }
                GridColumn::FeederClosed(n) => {
                    let closed = match *field {
                        "1" => true,
                        "0" => false,
                        _ => {
                            return Err(src.error(
                                line,
                                format!("column `{column_name}`: `{field}` is not 0 or 1"),
                            ));
                        }
                    };
                    if let Some(i) = feeder_mut(&mut sample, n) {
                        sample.feeders[i].closed = closed;
                    }
                }
                GridColumn::AnalogMv(n) => {
                    analog.insert(
                        AnalogChannel(n),
                        src.number::<i32>(line, column_name, field)?,
                    );
                }
            }
        }
        let voltage_dv = u64::from(sample.voltage_dv.max(1));
        for f in &mut sample.feeders {
            f.current_ma = match feeder_ma.get(&f.feeder) {
                Some(&ma) => ma,
                // I = P / V: mA = W x 10,000 / dV.
                None => (u64::from(f.load_w) * 10_000 / voltage_dv).min(u64::from(u32::MAX)) as u32,
            };
        }
        if let Some(prev) = rows.last()
            && t_ms < prev.t_ms
        {
            return Err(src.error(
                line,
                format!(
                    "t_ms {t_ms} goes back from {}; rows must be in time order",
                    prev.t_ms
                ),
            ));
        }
        rows.push(GridRow {
            t_ms,
            sample,
            analog,
        });
    }
    if rows.is_empty() {
        return Err(src.error(header_line, "the file has a header but no rows"));
    }
    Ok(rows)
}

fn parse_meters(
    text: &str,
    name: &str,
) -> Result<BTreeMap<u32, Vec<(u64, MeterReading)>>, HalError> {
    let src = Source { name };
    let mut lines = data_lines(text);
    let mut meters: BTreeMap<u32, Vec<(u64, MeterReading)>> = BTreeMap::new();
    let Some((header_line, header)) = lines.next() else {
        return Ok(meters);
    };
    let names = split(header);
    let mut index = [0usize; METER_COLUMNS.len()];
    for (slot, column) in index.iter_mut().zip(METER_COLUMNS) {
        *slot = names.iter().position(|n| *n == column).ok_or_else(|| {
            src.error(
                header_line,
                format!("the header lacks column `{column}`; the meter file has {METER_COLUMNS:?}"),
            )
        })?;
    }
    if names.len() != METER_COLUMNS.len() {
        return Err(src.error(
            header_line,
            format!(
                "the header has {} columns; the meter file has exactly {METER_COLUMNS:?}",
                names.len()
            ),
        ));
    }
    for (line, text) in lines {
        let fields = split(text);
        if fields.len() != names.len() {
            return Err(src.error(
                line,
                format!(
                    "{} fields where the header has {} columns",
                    fields.len(),
                    names.len()
                ),
            ));
        }
        let field = |i: usize| fields[index[i]];
        let u64_at = |i: usize| src.number::<u64>(line, METER_COLUMNS[i], field(i));
        let u32_at = |i: usize| src.number::<u32>(line, METER_COLUMNS[i], field(i));
        let t_ms = u64_at(0)?;
        let customer = u32_at(1)?;
        let reading = MeterReading {
            total_wh: u64_at(2)?,
            voltage_dv: u32_at(3)?,
            current_ma: u32_at(4)?,
            power_w: u32_at(5)?,
            frequency_mhz: u32_at(6)?,
        };
        let series = meters.entry(customer).or_default();
        if let Some((prev_t, _)) = series.last()
            && t_ms < *prev_t
        {
            return Err(src.error(
                line,
                format!("t_ms {t_ms} for customer {customer} goes back from {prev_t}; rows must be in time order"),
            ));
        }
        series.push((t_ms, reading));
    }
    Ok(meters)
}

fn read_limited(path: &Path) -> Result<String, HalError> {
    let device = format!("replay {}", path.display());
    let meta = std::fs::metadata(path)
        .map_err(|e| HalError::from_io(&e, device.clone(), "check the recording's path"))?;
    if meta.len() > FILE_BYTES_MAX {
        return Err(HalError::new(
            ErrorKind::OutOfRange,
            device,
            format!(
                "{} bytes is more than the {FILE_BYTES_MAX}-byte limit; split the recording",
                meta.len()
            ),
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|e| HalError::from_io(&e, device, "the recording must be UTF-8 text"))
}

/// A board that plays back recorded readings.
#[derive(Clone, Debug)]
pub struct ReplayBoard {
    name: String,
    rows: Vec<GridRow>,
    cursor: usize,
    meters: BTreeMap<u32, Vec<(u64, MeterReading)>>,
    relays: BTreeMap<RelayLine, bool>,
}

impl ReplayBoard {
    /// Opens a grid recording and, optionally, a meter recording.
    pub fn open(grid: &Path, meters: Option<&Path>) -> Result<ReplayBoard, HalError> {
        let grid_text = read_limited(grid)?;
        let meter_text = match meters {
            Some(p) => Some((read_limited(p)?, p.display().to_string())),
            None => None,
        };
        ReplayBoard::from_text(
            &grid_text,
            &grid.display().to_string(),
            meter_text.as_ref().map(|(t, n)| (t.as_str(), n.as_str())),
        )
    }

    /// Parses recordings already in memory; the names are used in errors.
    pub fn from_text(
        grid: &str,
        grid_name: &str,
        meters: Option<(&str, &str)>,
    ) -> Result<ReplayBoard, HalError> {
        let rows = parse_grid(grid, grid_name)?;
        let meters = match meters {
            Some((text, name)) => parse_meters(text, name)?,
            None => BTreeMap::new(),
        };
        let mut relays = BTreeMap::new();
        if let Some(first) = rows.first() {
            for f in &first.sample.feeders {
                relays.insert(RelayLine::Feeder(f.feeder), f.closed);
            }
        }
        for &customer in meters.keys() {
            relays.insert(RelayLine::Customer(customer), true);
        }
        Ok(ReplayBoard {
            name: grid_name.to_string(),
            rows,
            cursor: 0,
            meters,
            relays,
        })
    }

    /// The recorded time of the last grid row read (the first row's before any read).
    pub fn now_ms(&self) -> u64 {
        self.current().map_or(0, |r| r.t_ms)
    }

    /// Grid rows not yet read.
    pub fn remaining(&self) -> usize {
        self.rows.len() - self.cursor
    }

    /// Moves so the next `read_grid` returns the first row at or after `t_ms`.
    pub fn seek(&mut self, t_ms: u64) {
        self.cursor = self.rows.partition_point(|r| r.t_ms < t_ms);
    }

    fn current(&self) -> Option<&GridRow> {
        self.rows.get(self.cursor.saturating_sub(1))
    }
}

impl GridMeter for ReplayBoard {
    async fn read_grid(&mut self) -> HalResult<GridSample> {
        let Some(row) = self.rows.get(self.cursor) else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                format!("replay {}", self.name),
                format!(
                    "end of the recording after {} rows (t_ms {}); seek back or stop the replay",
                    self.rows.len(),
                    self.now_ms()
                ),
            ));
        };
        let sample = row.sample.clone();
        self.cursor += 1;
        Ok(sample)
    }
}

impl EnergyMeters for ReplayBoard {
    fn customers(&self) -> Vec<u32> {
        self.meters.keys().copied().collect()
    }

    async fn read_energy(&mut self, customer: u32) -> HalResult<MeterReading> {
        let device = format!("replay meter (customer {customer})");
        let Some(series) = self.meters.get(&customer) else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                device,
                "the meter recording has no rows for this customer",
            ));
        };
        let now = self.now_ms();
        let at = series.partition_point(|(t, _)| *t <= now);
        match at.checked_sub(1).and_then(|i| series.get(i)) {
            Some((_, reading)) => Ok(reading.clone()),
            None => Err(HalError::new(
                ErrorKind::NotFound,
                device,
                format!("no reading recorded at or before t_ms {now}; read more grid rows first"),
            )),
        }
    }
}

impl Relays for ReplayBoard {
    fn relay_lines(&self) -> Vec<RelayLine> {
        self.relays.keys().copied().collect()
    }

    fn set_relay(&mut self, line: RelayLine, closed: bool) -> HalResult<()> {
        match self.relays.get_mut(&line) {
            Some(state) => {
                *state = closed;
                Ok(())
            }
            None => Err(HalError::new(
                ErrorKind::NotFound,
                format!("relay {line}"),
                "the recording has no such feeder or customer",
            )),
        }
    }

    fn relay_state(&mut self, line: RelayLine) -> HalResult<bool> {
        self.relays.get(&line).copied().ok_or_else(|| {
            HalError::new(
                ErrorKind::NotFound,
                format!("relay {line}"),
                "the recording has no such feeder or customer",
            )
        })
    }
}

impl AnalogInputs for ReplayBoard {
    fn analog_channels(&self) -> Vec<AnalogChannelInfo> {
        self.rows
            .first()
            .map(|r| {
                r.analog
                    .keys()
                    .map(|&channel| AnalogChannelInfo {
                        channel,
                        name: format!("analog{}", channel.0),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn read_analog(&mut self, channel: AnalogChannel) -> HalResult<i32> {
        self.current()
            .and_then(|r| r.analog.get(&channel).copied())
            .ok_or_else(|| {
                HalError::new(
                    ErrorKind::NotFound,
                    format!("replay {channel}"),
                    format!("the recording has no analog{}_mv column", channel.0),
                )
            })
    }
}
