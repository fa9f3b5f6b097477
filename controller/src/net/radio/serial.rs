//! `SerialTransport`: the node's [`Transport`] over a transparent radio modem on a serial
//! port (tokio-serial), running the radio link layer ([`LinkDriver`]) on the byte stream.
//!
//! One task reads the port, splits packets at COBS delimiters and hands them to the driver;
//! another takes paced packets from the driver and writes them. A port opened by path is
//! reopened after an IO error (a USB modem unplugged and plugged back), every
//! [`REOPEN_DELAY`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use super::cobs::{Deframed, Deframer};
use super::link::{DriverConfig, LinkDriver, LinkParams, MTU_BYTES_MIN, RadioStats};
use crate::net::LinkProfile;
use crate::net::transport::{InboundTx, Transport};

/// Bytes read from the port at once: a few packets; the deframer bounds what is kept.
const READ_CHUNK_BYTES: usize = 512;
/// Wait before reopening a port that failed: long enough not to spin on a missing device,
/// short against the radio profile's 6 s election timeout.
pub const REOPEN_DELAY: Duration = Duration::from_secs(2);
/// Largest MTU accepted in config: SiK carries at most 252 bytes per air packet and XBee
/// 100 (DOMAIN.md), so a larger value is a typo that would make every packet too big to send.
pub const RADIO_MTU_BYTES_MAX: usize = 252;
/// Slowest air rate accepted: LoRa's lowest, 0.3 kbit/s (DOMAIN.md).
pub const AIR_BITRATE_BPS_MIN: u64 = 300;
/// Fastest air rate accepted: SiK's highest, 250 kbit/s (DOMAIN.md).
pub const AIR_BITRATE_BPS_MAX: u64 = 250_000;
/// Serial rates a UART offers.
pub const BAUD_RATES: [u32; 8] = [1_200, 2_400, 4_800, 9_600, 19_200, 38_400, 57_600, 115_200];

fn default_baud() -> u32 {
    57_600
}
fn default_air_bitrate() -> u64 {
    64_000
}
fn default_mtu() -> usize {
    100
}

/// One radio modem (`[[radio]]` in node.toml).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadioConfig {
    /// Serial device, e.g. "/dev/ttyUSB0".
    pub device: String,
    /// Serial line rate, bit/s (SiK default 57,600).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Air rate of the modem, bit/s (SiK default 64,000); the pacer holds to the lower of
    /// this and the line rate.
    #[serde(default = "default_air_bitrate")]
    pub air_bitrate: u64,
    /// Largest packet the modem carries in one transmission, bytes (XBee: 100).
    #[serde(default = "default_mtu")]
    pub mtu: usize,
    /// Nodes reachable on this channel.
    pub peers: Vec<u64>,
    /// Round trip of the channel, ms (default: the radio profile's 800 ms).
    #[serde(default)]
    pub rtt_ms: Option<u64>,
}

impl RadioConfig {
    /// Check the settings for node `me`; errors are (key under `radio[i]`, problem and fix).
    pub fn validate(&self, me: u64) -> Result<(), (String, String)> {
        if self.device.trim().is_empty() {
            return Err((
                "device".into(),
                "is empty; name the modem's serial port, e.g. \"/dev/ttyUSB0\"".into(),
            ));
        }
        if !BAUD_RATES.contains(&self.baud) {
            return Err((
                "baud".into(),
                format!(
                    "{} is not a serial rate; use one of {BAUD_RATES:?} (the modem's SERIAL_SPEED)",
                    self.baud
                ),
            ));
        }
        if !(AIR_BITRATE_BPS_MIN..=AIR_BITRATE_BPS_MAX).contains(&self.air_bitrate) {
            return Err((
                "air_bitrate".into(),
                format!(
                    "{} bit/s is outside {AIR_BITRATE_BPS_MIN}..={AIR_BITRATE_BPS_MAX}; set the modem's air rate (SiK AIR_SPEED, in bit/s)",
                    self.air_bitrate
                ),
            ));
        }
        if !(MTU_BYTES_MIN..=RADIO_MTU_BYTES_MAX).contains(&self.mtu) {
            return Err((
                "mtu".into(),
                format!(
                    "{} bytes is outside {MTU_BYTES_MIN}..={RADIO_MTU_BYTES_MAX}; use the modem's payload size (XBee 100, SiK up to 252)",
                    self.mtu
                ),
            ));
        }
        if self.peers.is_empty() {
            return Err((
                "peers".into(),
                "is empty; list the node ids reachable on this channel, e.g. [2, 3]".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, &p) in self.peers.iter().enumerate() {
            if p == 0 || p == me || !seen.insert(p) {
                return Err((
                    format!("peers[{i}]"),
                    format!("{p} is 0, this node's own id, or listed twice; list other nodes once"),
                ));
            }
        }
        if self.rtt_ms == Some(0) {
            return Err((
                "rtt_ms".into(),
                "must be more than 0; leave it out for the radio profile's 800 ms".into(),
            ));
        }
        Ok(())
    }

    /// The driver's link parameters for this radio.
    pub fn link_params(&self) -> LinkParams {
        // 8N1: ten bits on the line per byte.
        let line_bps = u64::from(self.baud) * 8 / 10;
        let bitrate_bps = self.air_bitrate.min(line_bps);
        let rtt = Duration::from_millis(self.rtt_ms.unwrap_or(LinkProfile::Radio.rtt_ms()));
        LinkParams {
            mtu_bytes: self.mtu,
            bitrate_bps,
            // A round's bitmap may queue behind a few packets at the peer: allow four.
            round_timeout: rtt
                + super::pacing::air_time(4 * super::cobs::framed_len_max(self.mtu), bitrate_bps),
        }
    }
}

/// A radio port that would not open.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open radio device {device} at {baud} bit/s: {error}; check [[radio]] device in node.toml, that the modem is plugged in, and that this user may open it (group dialout)"
)]
pub struct RadioOpenError {
    /// The device path.
    pub device: String,
    /// The line rate.
    pub baud: u32,
    /// What the OS said.
    pub error: String,
}

struct Shared {
    device: String,
    peers: BTreeSet<u64>,
    mtu: usize,
    /// What the pacer holds to: the lower of the air rate and the line rate.
    bitrate_bps: u64,
    driver: Mutex<LinkDriver>,
    wake: Notify,
    stats: Arc<RadioStats>,
}

/// The serial radio transport of one node.
pub struct SerialTransport {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SerialTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialTransport")
            .field("device", &self.shared.device)
            .finish_non_exhaustive()
    }
}

fn open_port(cfg: &RadioConfig) -> Result<tokio_serial::SerialStream, RadioOpenError> {
    use tokio_serial::SerialPortBuilderExt;
    tokio_serial::new(&cfg.device, cfg.baud)
        .open_native_async()
        .map_err(|e| RadioOpenError {
            device: cfg.device.clone(),
            baud: cfg.baud,
            error: e.to_string(),
        })
}

impl SerialTransport {
    fn shared(me: u64, cfg: &RadioConfig) -> Arc<Shared> {
        let stats = Arc::new(RadioStats::default());
        let driver = LinkDriver::new(
            DriverConfig {
                me,
                defaults: cfg.link_params(),
                shared_medium: true,
                cobs: true,
                first_message_id: rand::random(),
                receive_limit_bytes: cfg.mtu,
            },
            stats.clone(),
        );
        Arc::new(Shared {
            device: cfg.device.clone(),
            peers: cfg.peers.iter().copied().collect(),
            mtu: cfg.mtu,
            bitrate_bps: cfg.link_params().bitrate_bps,
            driver: Mutex::new(driver),
            wake: Notify::new(),
            stats,
        })
    }

    /// Open `cfg.device` for node `me`; frames received go to `inbound`. The port is
    /// reopened if it fails later.
    pub fn open(
        me: u64,
        cfg: &RadioConfig,
        inbound: InboundTx,
    ) -> Result<Arc<SerialTransport>, RadioOpenError> {
        let port = open_port(cfg)?;
        let shared = Self::shared(me, cfg);
        let (s, cfg) = (shared.clone(), cfg.clone());
        let task = tokio::spawn(async move {
            let mut port = Some(port);
            loop {
                let p = match port.take() {
                    Some(p) => p,
                    None => match open_port(&cfg) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(error = %e, "radio port still unavailable");
                            tokio::time::sleep(REOPEN_DELAY).await;
                            continue;
                        }
                    },
                };
                let e = run_io(s.clone(), p, inbound.clone()).await;
                tracing::warn!(device = %cfg.device, error = %e, "radio port failed; reopening in {REOPEN_DELAY:?}");
                tokio::time::sleep(REOPEN_DELAY).await;
            }
        });
        Ok(Arc::new(SerialTransport {
            shared,
            task: Mutex::new(Some(task)),
        }))
    }

    /// Run on an already open byte stream (a pty in tests, any `AsyncRead + AsyncWrite`);
    /// `cfg.device` only names it in logs. Not reopened when it fails.
    pub fn start<S>(me: u64, cfg: &RadioConfig, stream: S, inbound: InboundTx) -> Arc<Self>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let shared = Self::shared(me, cfg);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let device = s.device.clone();
            let e = run_io(s, stream, inbound).await;
            tracing::warn!(%device, error = %e, "radio stream failed");
        });
        Arc::new(SerialTransport {
            shared,
            task: Mutex::new(Some(task)),
        })
    }

    /// Link-layer counters.
    pub fn stats(&self) -> &Arc<RadioStats> {
        &self.shared.stats
    }

    /// Nodes reachable on this radio.
    pub fn peers(&self) -> &BTreeSet<u64> {
        &self.shared.peers
    }
}

impl Transport for SerialTransport {
    fn radios(&self) -> Vec<super::RadioLinkSnapshot> {
        vec![super::RadioLinkSnapshot {
            device: self.shared.device.clone(),
            counters: self.shared.stats.snapshot(),
        }]
    }

    fn bitrate_bps(&self, peer: u64) -> Option<u64> {
        self.shared
            .peers
            .contains(&peer)
            .then_some(self.shared.bitrate_bps)
    }

    fn send(&self, to: u64, frame: Vec<u8>) {
        if !self.shared.peers.contains(&to) {
            count_dropped(&self.shared.stats);
            return;
        }
        if let Ok(mut d) = self.shared.driver.lock() {
            d.send(to, frame, Instant::now());
        }
        self.shared.wake.notify_one();
    }

    fn shutdown(&self) {
        if let Ok(mut t) = self.task.lock()
            && let Some(t) = t.take()
        {
            t.abort();
        }
    }
}

impl Drop for SerialTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Count a frame given up outside the driver (no route on this radio, inbound queue full).
fn count_dropped(s: &RadioStats) {
    s.frames_dropped
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Run the reader and the writer on `stream` until either fails; returns the error.
async fn run_io<S>(shared: Arc<Shared>, stream: S, inbound: InboundTx) -> std::io::Error
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    let reader = read_loop(shared.clone(), r, inbound);
    let writer = write_loop(shared, w);
    tokio::select! {
        e = reader => e,
        e = writer => e,
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut r: R,
    inbound: InboundTx,
) -> std::io::Error {
    let mut deframer = Deframer::new(shared.mtu);
    let mut buf = [0u8; READ_CHUNK_BYTES];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => return std::io::ErrorKind::UnexpectedEof.into(),
            Ok(n) => n,
            Err(e) => return e,
        };
        shared
            .stats
            .bytes_received
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        let mut frames = Vec::new();
        {
            let Ok(mut d) = shared.driver.lock() else {
                return std::io::Error::other("radio driver lock poisoned");
            };
            let now = Instant::now();
            deframer.push(&buf[..n], |x| match x {
                Deframed::Packet(p) => {
                    if let Some(f) = d.receive(&p, now) {
                        frames.push(f);
                    }
                }
                Deframed::Invalid(_) | Deframed::Oversize => {
                    shared
                        .stats
                        .malformed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        // A bitmap may have been queued.
        shared.wake.notify_one();
        for (_, frame) in frames {
            // A full queue drops, as a kernel drops datagrams nobody reads.
            if inbound.try_send(frame).is_err() {
                count_dropped(&shared.stats);
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut w: W) -> std::io::Error {
    loop {
        let (batch, wake) = {
            let Ok(mut d) = shared.driver.lock() else {
                return std::io::Error::other("radio driver lock poisoned");
            };
            let now = Instant::now();
            let mut batch = Vec::new();
            while let Some(o) = d.poll_transmit(now) {
                batch.push(o.bytes);
            }
            (batch, d.next_wake(now))
        };
        if batch.is_empty() {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = sleep_until_opt(wake) => {}
            }
            continue;
        }
        for b in batch {
            if let Err(e) = w.write_all(&b).await {
                return e;
            }
        }
        if let Err(e) = w.flush().await {
            return e;
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::transport::inbound_queue;

    /// Issue 26: `link.rejected` stayed 0 through garbage on the radio, and nothing showed
    /// the radio's own counters: garbage is dropped here, below the frame layer, and is
    /// reported through `Transport::radios` (`radio` in `ghatta status`).
    #[tokio::test]
    async fn garbage_on_the_line_shows_in_the_radio_counters() {
        let (node_end, mut far_end) = tokio::io::duplex(4096);
        let cfg = RadioConfig {
            device: "test-radio".into(),
            baud: 57_600,
            air_bitrate: 64_000,
            mtu: 100,
            peers: vec![2],
            rtt_ms: None,
        };
        let (tx, _rx) = inbound_queue();
        let t: Arc<dyn Transport> = SerialTransport::start(1, &cfg, node_end, tx);
        assert_eq!(t.radios()[0].counters.malformed, 0);
        far_end
            .write_all(b"\x01\x02garbage\x00\xff\xfe\xfd\x07\x00noise that is no packet\x00")
            .await
            .expect("write to the line");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = t.radios();
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0].device, "test-radio");
            let c = &r[0].counters;
            if c.malformed + c.crc_rejected >= 2 {
                assert_eq!(c.packets_received, 0, "{c:?}");
                break;
            }
            assert!(Instant::now() < deadline, "garbage not counted: {c:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
