//! A Modbus-RTU master over any async byte stream (a serial port on the board, a
//! pseudo-terminal or an in-memory pipe in tests): CRC, framing, timeouts, retries, stats.
//!
//! Reading a reply relies on lengths, not on the 3.5-character gap alone: USB-serial adapters
//! deliver bytes in bursts (the FTDI latency timer is 16 ms), so a gap inside a frame is
//! normal on Linux. Bytes that cannot start a reply from the addressed device are skipped
//! and counted as garbage; a reply is accepted only whole, from the right address, to the
//! right function, with the expected byte count and a good CRC. Nothing here panics on
//! anything the line delivers.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use crate::error::{ErrorKind, HalError};

/// Default line speed: the PZEM-004T v3 speaks Modbus-RTU at 9,600 bit/s.
pub const BAUD_DEFAULT: u32 = 9_600;
/// Lowest line speed accepted in configuration; below it one PZEM reply takes over 100 ms.
pub const BAUD_MIN: u32 = 1_200;
/// Highest line speed accepted; no meter ghatta drives goes past 115,200 bit/s.
pub const BAUD_MAX: u32 = 115_200;
/// Lowest unicast slave address (0 is broadcast, which never answers).
pub const ADDRESS_MIN: u8 = 1;
/// Highest unicast slave address (Modbus serial line spec; the PZEM-004T has 247 addresses).
pub const ADDRESS_MAX: u8 = 247;
/// Default wait for a reply after the request has left the wire. A 10-register PZEM reply
/// is 25 bytes = 26 ms at 9,600 bit/s; add a 16 ms USB latency timer and the meter's own
/// turnaround (tens of ms) and 200 ms leaves margin without stalling a 1 s field loop.
pub const RESPONSE_TIMEOUT_MS_DEFAULT: u32 = 200;
/// Shortest reply timeout accepted: below 20 ms even a fast meter's turnaround does not fit.
pub const RESPONSE_TIMEOUT_MS_MIN: u32 = 20;
/// Longest reply timeout accepted: 2 s is already two whole field-loop periods.
pub const RESPONSE_TIMEOUT_MS_MAX: u32 = 2_000;
/// Default retries after a timeout or CRC error; 2 rides out one burst of noise while a
/// dead meter still costs at most 3 x 200 ms.
pub const RETRIES_DEFAULT: u8 = 2;
/// Most retries accepted in configuration: more only hides a broken line.
pub const RETRIES_MAX: u8 = 5;
/// Most registers one read may ask for (Modbus application protocol, function 0x03/0x04).
pub const REGISTERS_PER_READ_MAX: u16 = 125;
/// Largest RTU frame (Modbus serial line spec: 256-byte ADU).
pub const FRAME_BYTES_MAX: usize = 256;
/// Receive buffer bound: two frames. A line spewing garbage can not grow memory past it;
/// older bytes are dropped (and counted as garbage) first.
const RX_BUFFER_BYTES_MAX: usize = 2 * FRAME_BYTES_MAX;
/// Bits per character used for timing: RTU frames characters as start + 8 data + parity +
/// stop (11 bits); the PZEM's 8N1 is 10, so 11 errs on the side of waiting longer.
const BITS_PER_CHAR: u64 = 11;
/// Above 19,200 bit/s the spec fixes the inter-frame silence at 1.75 ms instead of 3.5 chars.
const SILENCE_FIXED_BAUD_MIN: u32 = 19_200;
const SILENCE_FIXED_US: u64 = 1_750;
/// After a complete frame with a bad CRC, wait this long for more bytes before calling it a
/// CRC error: a good frame may follow a false start in garbage, and a USB adapter may hold
/// bytes for its 16 ms latency timer.
const CRC_SETTLE_MS: u64 = 20;

/// Function code: read holding registers.
pub const FN_READ_HOLDING: u8 = 0x03;
/// Function code: read input registers (what the PZEM-004T v3 measures lives here).
pub const FN_READ_INPUT: u8 = 0x04;
/// Set on the function code of an exception reply.
const EXCEPTION_FLAG: u8 = 0x80;

/// Modbus CRC-16: polynomial 0xA001 (reflected 0x8005), initial 0xFFFF. The frame carries
/// it low byte first.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            if crc & 1 != 0 {
                crc = (crc >> 1) ^ 0xA001;
            } else {
                crc >>= 1;
            }
        }
    }
    crc
}

/// Appends the CRC to `frame`, low byte first.
pub fn push_crc(frame: &mut Vec<u8>) {
    let crc = crc16(frame);
    frame.extend_from_slice(&crc.to_le_bytes());
}

/// Whether `frame` (body followed by its two CRC bytes) has a good CRC.
pub fn crc_ok(frame: &[u8]) -> bool {
    if frame.len() < 3 {
        return false;
    }
    let (body, tail) = frame.split_at(frame.len() - 2);
    crc16(body).to_le_bytes() == [tail[0], tail[1]]
}

/// Builds a read request (function 0x03 or 0x04) with its CRC.
pub fn read_request(address: u8, function: u8, start: u16, count: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8);
    frame.push(address);
    frame.push(function);
    frame.extend_from_slice(&start.to_be_bytes());
    frame.extend_from_slice(&count.to_be_bytes());
    push_crc(&mut frame);
    frame
}

/// What a scan of the receive buffer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    /// A whole, CRC-good reply: `start..start + len` in the buffer.
    Reply {
        /// Offset of the frame in the buffer; everything before it is garbage.
        start: usize,
        /// Frame length including CRC.
        len: usize,
    },
    /// A whole, CRC-good exception reply carrying this exception code.
    Exception {
        /// Offset of the frame in the buffer.
        start: usize,
        /// The Modbus exception code.
        code: u8,
    },
    /// No whole reply yet, but a complete-length candidate failed its CRC.
    BadCrc,
    /// No whole reply yet; wait for more bytes.
    Incomplete,
}

/// Looks for the reply to a read of `data_len` bytes from `address` with `function` in
/// `buf`, skipping any bytes that cannot start one.
pub fn scan_reply(buf: &[u8], address: u8, function: u8, data_len: usize) -> Scan {
    let mut bad_crc = false;
    let mut start = 0;
    while start < buf.len() {
        if buf[start] != address {
            start += 1;
            continue;
        }
        let Some(&func) = buf.get(start + 1) else {
            // The address byte may be the start of the reply: wait for the next byte.
            return if bad_crc {
                Scan::BadCrc
            } else {
                Scan::Incomplete
            };
        };
        if func == function {
            let Some(&count) = buf.get(start + 2) else {
                return if bad_crc {
                    Scan::BadCrc
                } else {
                    Scan::Incomplete
                };
            };
            if usize::from(count) == data_len {
                let len = 3 + data_len + 2;
                let Some(frame) = buf.get(start..start + len) else {
                    return if bad_crc {
                        Scan::BadCrc
                    } else {
                        Scan::Incomplete
                    };
                };
                if crc_ok(frame) {
                    return Scan::Reply { start, len };
                }
                bad_crc = true;
            }
        } else if func == function | EXCEPTION_FLAG {
            let Some(frame) = buf.get(start..start + 5) else {
                return if bad_crc {
                    Scan::BadCrc
                } else {
                    Scan::Incomplete
                };
            };
            if crc_ok(frame) {
                return Scan::Exception {
                    start,
                    code: frame[2],
                };
            }
            bad_crc = true;
        }
        start += 1;
    }
    if bad_crc {
        Scan::BadCrc
    } else {
        Scan::Incomplete
    }
}

/// The meaning of a Modbus exception code, for error messages.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "slave device failure",
        0x05 => "acknowledge",
        0x06 => "slave device busy",
        0x08 => "memory parity error",
        _ => "unknown exception",
    }
}

/// Counters of what happened on one Modbus line since it was opened. Every attempt that
/// fails is counted once under its cause; `ok` counts transactions that returned data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModbusStats {
    /// Transactions asked for (each may take several attempts).
    pub requests: u64,
    /// Transactions that returned good data.
    pub ok: u64,
    /// Attempts repeated after a timeout or CRC error.
    pub retries: u64,
    /// Attempts whose reply had a bad CRC.
    pub crc_errors: u64,
    /// Attempts with no (whole) reply in time.
    pub timeouts: u64,
    /// Exception replies from a device.
    pub exceptions: u64,
    /// Replies that were intact but meaningless (values out of a meter's range).
    pub invalid_responses: u64,
    /// Operating-system errors on the port.
    pub io_errors: u64,
    /// Bytes received that belonged to no reply (noise, echoes, other devices).
    pub garbage_bytes: u64,
    /// Times the port failed in a way that means the device went away (unplugged, hung up);
    /// the port is then closed until the board reopens it.
    pub disconnects: u64,
    /// Times the port was opened again after it went away.
    pub reopens: u64,
    /// Attempts to reopen it that failed (the device was still away).
    pub reopen_failures: u64,
}

impl fmt::Display for ModbusStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests {} ok {} retries {} crc_errors {} timeouts {} exceptions {} invalid {} io_errors {} garbage_bytes {} disconnects {} reopens {} reopen_failures {}",
            self.requests,
            self.ok,
            self.retries,
            self.crc_errors,
            self.timeouts,
            self.exceptions,
            self.invalid_responses,
            self.io_errors,
            self.garbage_bytes,
            self.disconnects,
            self.reopens,
            self.reopen_failures
        )
    }
}

/// Line settings of one Modbus master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModbusSettings {
    /// The port's name for error messages, e.g. `/dev/ttyUSB0`.
    pub port_name: String,
    /// Line speed in bit/s; sets the transmit time and the inter-frame silence.
    pub baud: u32,
    /// Wait for a reply after the request has been sent.
    pub response_timeout_ms: u32,
    /// Further attempts after a timeout or CRC error.
    pub retries: u8,
}

impl ModbusSettings {
    /// Settings for a PZEM-004T line on `port_name`: 9,600 bit/s and the default timeout.
    pub fn new(port_name: impl Into<String>) -> Self {
        ModbusSettings {
            port_name: port_name.into(),
            baud: BAUD_DEFAULT,
            response_timeout_ms: RESPONSE_TIMEOUT_MS_DEFAULT,
            retries: RETRIES_DEFAULT,
        }
    }

    /// The inter-frame silence: 3.5 characters, or 1.75 ms above 19,200 bit/s.
    pub fn silence(&self) -> Duration {
        if self.baud > SILENCE_FIXED_BAUD_MIN {
            Duration::from_micros(SILENCE_FIXED_US)
        } else {
            // 3.5 characters = 7 half-characters.
            Duration::from_micros(7 * BITS_PER_CHAR * 1_000_000 / (2 * u64::from(self.baud.max(1))))
        }
    }

    /// How long `bytes` take on the wire.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        let bits = bytes as u64 * BITS_PER_CHAR;
        Duration::from_micros(bits * 1_000_000 / u64::from(self.baud.max(1)))
    }
}

/// Why one attempt failed.
enum AttemptError {
    Timeout {
        received: usize,
    },
    Crc,
    Exception(u8),
    Io(std::io::Error),
    /// The line never went quiet long enough to transmit.
    LineBusy,
}

/// A Modbus-RTU master on one line.
///
/// When the port fails in a way that means the device went away ([`crate::reopen::is_gone`]),
/// the master drops it (so the kernel can free the device node) and every read fails at once
/// with `NotFound` until the owner [`attach`](ModbusRtu::attach)es a reopened port; the
/// counters carry across.
pub struct ModbusRtu<P> {
    port: Option<P>,
    settings: ModbusSettings,
    stats: ModbusStats,
    /// When the line was last seen busy (our transmission or a received byte).
    last_activity: Option<Instant>,
    rx: Vec<u8>,
}

impl<P: AsyncRead + AsyncWrite + Unpin + Send> ModbusRtu<P> {
    /// A master driving `port` with `settings`.
    pub fn new(port: P, settings: ModbusSettings) -> Self {
        ModbusRtu {
            port: Some(port),
            settings,
            stats: ModbusStats::default(),
            last_activity: None,
            rx: Vec::with_capacity(RX_BUFFER_BYTES_MAX),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ModbusStats {
        self.stats
    }

    /// Whether the master holds an open port (false after the device went away).
    pub fn is_attached(&self) -> bool {
        self.port.is_some()
    }

    /// Drive `port` from now on: the device was reopened. Counted as a reopen.
    pub fn attach(&mut self, port: P) {
        self.port = Some(port);
        self.last_activity = None;
        self.rx.clear();
        self.stats.reopens += 1;
    }

    /// Counts an attempt to reopen the port that failed; the owner calls this.
    pub fn note_reopen_failure(&mut self) {
        self.stats.reopen_failures += 1;
    }

    /// The line settings.
    pub fn settings(&self) -> &ModbusSettings {
        &self.settings
    }

    /// Counts a reply that was intact but meaningless; drivers above the framing call this.
    pub fn note_invalid_response(&mut self) {
        self.stats.invalid_responses += 1;
    }

    /// The device name used in errors for `address` on this line.
    pub fn device_name(&self, address: u8) -> String {
        format!("modbus {} address {address}", self.settings.port_name)
    }

    /// Reads `count` input registers (function 0x04) from `start`.
    pub async fn read_input_registers(
        &mut self,
        address: u8,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, HalError> {
        self.read_registers(address, FN_READ_INPUT, start, count)
            .await
    }

    /// Reads `count` holding registers (function 0x03) from `start`.
    pub async fn read_holding_registers(
        &mut self,
        address: u8,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, HalError> {
        self.read_registers(address, FN_READ_HOLDING, start, count)
            .await
    }

    async fn read_registers(
        &mut self,
        address: u8,
        function: u8,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, HalError> {
        let device = self.device_name(address);
        if !(ADDRESS_MIN..=ADDRESS_MAX).contains(&address) {
            return Err(HalError::new(
                ErrorKind::InvalidInput,
                device,
                format!(
                    "address {address} is not a unicast Modbus address; use {ADDRESS_MIN}-{ADDRESS_MAX}"
                ),
            ));
        }
        if count == 0 || count > REGISTERS_PER_READ_MAX {
            return Err(HalError::new(
                ErrorKind::InvalidInput,
                device,
                format!(
                    "cannot read {count} registers at once; Modbus allows 1-{REGISTERS_PER_READ_MAX}"
                ),
            ));
        }
        if self.port.is_none() {
            return Err(HalError::new(
                ErrorKind::NotFound,
                device,
                "the serial port went away and is closed; it is reopened with backoff. Check that \
                 the USB-serial adapter is plugged in",
            ));
        }
        self.stats.requests += 1;
        let request = read_request(address, function, start, count);
        let data_len = 2 * usize::from(count);
        let attempts = u32::from(self.settings.retries) + 1;
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                self.stats.retries += 1;
            }
            match self.attempt(&request, address, function, data_len).await {
                Ok(data) => {
                    self.stats.ok += 1;
                    return Ok(data
                        .chunks_exact(2)
                        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                        .collect());
                }
                Err(AttemptError::Timeout { received }) => {
                    self.stats.timeouts += 1;
                    tracing::debug!(%device, attempt, received, "modbus: no whole reply in time");
                    last = Some(AttemptError::Timeout { received });
                }
                Err(AttemptError::Crc) => {
                    self.stats.crc_errors += 1;
                    tracing::debug!(%device, attempt, "modbus: reply failed its CRC");
                    last = Some(AttemptError::Crc);
                }
                Err(AttemptError::Exception(code)) => {
                    self.stats.exceptions += 1;
                    tracing::debug!(%device, attempt, code, "modbus: exception reply");
                    // A device that says "busy" may answer next time; any other exception
                    // is a wrong request or a wrong device, and repeating it changes nothing.
                    if code == 0x06 && attempt + 1 < attempts {
                        last = Some(AttemptError::Exception(code));
                        continue;
                    }
                    return Err(self.exception_error(device, function, code));
                }
                Err(AttemptError::LineBusy) => {
                    return Err(HalError::new(
                        ErrorKind::Busy,
                        device,
                        format!(
                            "the line never went quiet for {} us within {} ms, so the request was not sent; \
                             another master or a babbling device is on the line",
                            self.settings.silence().as_micros(),
                            self.settings.response_timeout_ms
                        ),
                    ));
                }
                Err(AttemptError::Io(err)) => {
                    self.stats.io_errors += 1;
                    if crate::reopen::is_gone(&err) {
                        // Drop the descriptor: a replugged adapter gets a fresh device node,
                        // and holding the old one open helps nobody.
                        self.port = None;
                        self.stats.disconnects += 1;
                        return Err(HalError::from_io(
                            &err,
                            device,
                            "the serial device went away (unplugged or hung up); it is reopened with \
                             backoff. Check the USB-serial adapter and its cable",
                        ));
                    }
                    return Err(HalError::from_io(
                        &err,
                        device,
                        "the serial port failed; check that the USB-serial adapter is still plugged in",
                    ));
                }
            }
        }
        let timeout_ms = self.settings.response_timeout_ms;
        Err(match last {
            Some(AttemptError::Crc) => HalError::new(
                ErrorKind::Crc,
                device,
                format!(
                    "replies failed their CRC in all {attempts} attempts; check the A/B wiring, \
                     termination and cable length, and that no two meters share the address"
                ),
            ),
            Some(AttemptError::Exception(code)) => self.exception_error(device, function, code),
            Some(AttemptError::Timeout { received }) if received > 0 => HalError::new(
                ErrorKind::Timeout,
                device,
                format!(
                    "no whole reply in {timeout_ms} ms in {attempts} attempts ({received} bytes of noise or partial frames); \
                     check the line speed ({} bit/s) and the wiring",
                    self.settings.baud
                ),
            ),
            _ => HalError::new(
                ErrorKind::Timeout,
                device,
                format!(
                    "no reply in {timeout_ms} ms in {attempts} attempts; check that the meter is powered, \
                     wired (TX/RX or A/B) and set to address {address}"
                ),
            ),
        })
    }

    fn exception_error(&self, device: String, function: u8, code: u8) -> HalError {
        let kind = if matches!(code, 0x05 | 0x06) {
            ErrorKind::Busy
        } else {
            ErrorKind::InvalidResponse
        };
        HalError::new(
            kind,
            device,
            format!(
                "Modbus exception 0x{code:02X} ({}) to function 0x{function:02X}; check that the device at this \
                 address is the meter model the configuration says",
                exception_name(code)
            ),
        )
    }

    /// One request and its reply.
    async fn attempt(
        &mut self,
        request: &[u8],
        address: u8,
        function: u8,
        data_len: usize,
    ) -> Result<Vec<u8>, AttemptError> {
        self.wait_for_silence().await?;
        let port = self.port_mut()?;
        port.write_all(request).await.map_err(AttemptError::Io)?;
        port.flush().await.map_err(AttemptError::Io)?;
        let sent = Instant::now() + self.settings.wire_time(request.len());
        self.last_activity = Some(sent);
        let deadline = sent + Duration::from_millis(u64::from(self.settings.response_timeout_ms));

        self.rx.clear();
        let mut chunk = [0u8; 64];
        loop {
            let scan = scan_reply(&self.rx, address, function, data_len);
            match scan {
                Scan::Reply { start, len } => {
                    let data = self.rx[start + 3..start + len - 2].to_vec();
                    self.count_garbage(self.rx.len() - len);
                    return Ok(data);
                }
                Scan::Exception { code, .. } => {
                    // Everything but the 5-byte exception frame is garbage.
                    self.count_garbage(self.rx.len().saturating_sub(5));
                    return Err(AttemptError::Exception(code));
                }
                Scan::BadCrc | Scan::Incomplete => {}
            }
            let wait_until = if scan == Scan::BadCrc {
                deadline.min(Instant::now() + Duration::from_millis(CRC_SETTLE_MS))
            } else {
                deadline
            };
            let port = self.port_mut()?;
            match timeout_at(wait_until, port.read(&mut chunk)).await {
                Ok(Ok(0)) => {
                    return Err(AttemptError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the serial port closed",
                    )));
                }
                Ok(Ok(n)) => {
                    self.last_activity = Some(Instant::now());
                    self.rx.extend_from_slice(&chunk[..n]);
                    if self.rx.len() > RX_BUFFER_BYTES_MAX {
                        let excess = self.rx.len() - RX_BUFFER_BYTES_MAX;
                        self.rx.drain(..excess);
                        self.count_garbage(excess);
                    }
                }
                Ok(Err(err)) => return Err(AttemptError::Io(err)),
                Err(_elapsed) => {
                    let received = self.rx.len();
                    if scan == Scan::BadCrc {
                        return Err(AttemptError::Crc);
                    }
                    self.count_garbage(received);
                    return Err(AttemptError::Timeout { received });
                }
            }
        }
    }

    /// Waits until the line has been quiet for the inter-frame silence, discarding (and
    /// counting) whatever arrives meanwhile: a late reply to an earlier request, or noise.
    async fn wait_for_silence(&mut self) -> Result<(), AttemptError> {
        let silence = self.settings.silence();
        // Bound the wait: a line that never goes quiet is reported, not waited on forever.
        let give_up = Instant::now()
            + silence
            + Duration::from_millis(u64::from(self.settings.response_timeout_ms));
        let mut chunk = [0u8; 64];
        loop {
            let quiet_at = match self.last_activity {
                Some(at) => at + silence,
                None => Instant::now(),
            };
            if quiet_at > give_up {
                return Err(AttemptError::LineBusy);
            }
            let port = self.port_mut()?;
            match timeout_at(quiet_at, port.read(&mut chunk)).await {
                Err(_elapsed) => return Ok(()),
                Ok(Ok(0)) => {
                    return Err(AttemptError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the serial port closed",
                    )));
                }
                Ok(Ok(n)) => {
                    self.count_garbage(n);
                    self.last_activity = Some(Instant::now());
                }
                Ok(Err(err)) => return Err(AttemptError::Io(err)),
            }
        }
    }

    fn port_mut(&mut self) -> Result<&mut P, AttemptError> {
        self.port.as_mut().ok_or_else(|| {
            AttemptError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the serial port is closed",
            ))
        })
    }

    fn count_garbage(&mut self, bytes: usize) {
        self.stats.garbage_bytes += bytes as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        // CRC-16/MODBUS catalogue check value for ASCII "123456789".
        assert_eq!(crc16(b"123456789"), 0x4B37);
    }

    #[test]
    fn scan_skips_garbage_and_finds_reply() {
        let mut reply = vec![0x01, 0x04, 0x02, 0x12, 0x34];
        push_crc(&mut reply);
        let mut buf = vec![0x00, 0xFF, 0x01, 0x77];
        buf.extend_from_slice(&reply);
        assert_eq!(
            scan_reply(&buf, 0x01, 0x04, 2),
            Scan::Reply { start: 4, len: 7 }
        );
    }

    #[test]
    fn scan_reports_bad_crc_and_waits_on_partial() {
        let mut reply = vec![0x01, 0x04, 0x02, 0x12, 0x34];
        push_crc(&mut reply);
        assert_eq!(scan_reply(&reply[..5], 0x01, 0x04, 2), Scan::Incomplete);
        let mut bad = reply.clone();
        bad[3] ^= 0x01;
        assert_eq!(scan_reply(&bad, 0x01, 0x04, 2), Scan::BadCrc);
        // Another device's reply is garbage, however well formed.
        let mut other = vec![0x02, 0x04, 0x02, 0x12, 0x34];
        push_crc(&mut other);
        assert_eq!(scan_reply(&other, 0x01, 0x04, 2), Scan::Incomplete);
    }

    #[test]
    fn scan_finds_exception() {
        let mut exc = vec![0x01, 0x84, 0x02];
        push_crc(&mut exc);
        assert_eq!(
            scan_reply(&exc, 0x01, 0x04, 20),
            Scan::Exception {
                start: 0,
                code: 0x02
            }
        );
    }

    #[tokio::test]
    async fn a_line_that_never_goes_quiet_is_busy_not_a_hang() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let settings = ModbusSettings {
            response_timeout_ms: 50,
            ..ModbusSettings::new("duplex")
        };
        let mut bus = ModbusRtu::new(ours, settings);
        // Something on the line babbles without pause: whenever the driver reads, bytes
        // are waiting, so the line is never quiet for the inter-frame silence.
        let babbler = tokio::spawn(async move {
            while theirs.write_all(&[0x55; 64]).await.is_ok() {
                tokio::task::yield_now().await;
            }
        });
        let e = bus.read_input_registers(1, 0, 10).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Busy, "{e}");
        assert!(bus.stats().garbage_bytes > 0);
        babbler.abort();
    }

    #[test]
    fn silence_at_9600_is_three_and_a_half_characters() {
        let s = ModbusSettings::new("x");
        // 3.5 x 11 bits / 9,600 bit/s = 4.01 ms.
        assert_eq!(s.silence(), Duration::from_micros(4_010));
        let fast = ModbusSettings {
            baud: 115_200,
            ..ModbusSettings::new("x")
        };
        assert_eq!(fast.silence(), Duration::from_micros(1_750));
    }
}
