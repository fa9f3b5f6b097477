//! A user-space radio channel emulator for tests and benchmarks: several serial ports (pty
//! masters, or any byte streams) on one shared channel with latency, a bit rate, loss,
//! corruption and injected garbage.
//!
//! It behaves like transparent modems on one frequency: bytes a node writes are cut into air
//! packets at 0x00 delimiters (a modem packetises its serial input; the delimiter stands in
//! for its inter-byte timeout), sent one at a time over the shared channel at the bit rate
//! (every node's transmissions queue behind each other's), and heard by every other port
//! after the one-way latency. Each receiver independently loses, corrupts (1-3 bit flips) or
//! gets noise bytes spliced into its stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use ghatta::net::radio::pacing::air_time;

/// Longest air packet: a modem sends at most this much in one transmission; a longer run
/// without a delimiter is cut here (the receiver's deframer then resyncs).
pub const AIR_PACKET_BYTES_MAX: usize = 256;
/// Longest the channel may be booked ahead: a modem's transmit buffer holds about this much
/// air time; a packet arriving to a fuller buffer is dropped (and counted), as the modem
/// would drop it.
pub const BACKLOG_MAX: Duration = Duration::from_secs(3);
/// Packets waiting for delivery per receiver; beyond it they are dropped (bounded memory).
const DELIVERY_QUEUE_PACKETS: usize = 1_024;

/// How the channel misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct ChannelConfig {
    /// One-way latency (half the RTT), the least a packet takes after its air time.
    pub one_way: Duration,
    /// Extra one-way delay per packet, uniform in `[0, jitter]`: a modem's TDM window and
    /// its own retries (SiK: a window of up to 131 ms). A receiver still gets packets in the
    /// order they were sent (a later packet waits behind an earlier, slower one).
    pub jitter: Duration,
    /// Channel bit rate shared by all senders (0: unlimited).
    pub bitrate_bps: u64,
    /// Probability a receiver misses a packet.
    pub loss: f64,
    /// Probability a receiver gets a packet with 1-3 bits flipped.
    pub corrupt: f64,
    /// Probability a receiver gets 1-16 noise bytes before a packet.
    pub garbage: f64,
    /// Seed of the channel's randomness.
    pub seed: u64,
}

/// What the channel did.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// Air packets sent by any port.
    pub packets: AtomicU64,
    /// Bytes sent by any port.
    pub bytes: AtomicU64,
    /// Receptions lost.
    pub lost: AtomicU64,
    /// Receptions corrupted.
    pub corrupted: AtomicU64,
    /// Noise bursts injected.
    pub garbage: AtomicU64,
    /// Packets dropped because the channel was booked beyond [`BACKLOG_MAX`].
    pub overflow: AtomicU64,
}

struct Channel {
    cfg: ChannelConfig,
    free_at: Instant,
    rng: StdRng,
    receivers: Vec<mpsc::Sender<(Instant, Vec<u8>)>>,
}

/// A running channel; dropping it stops it.
pub struct RadioChannel {
    /// Counters.
    pub stats: Arc<ChannelStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RadioChannel {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RadioChannel {
    /// Put `ports` on one channel.
    pub fn start<S>(ports: Vec<S>, cfg: ChannelConfig) -> RadioChannel
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let stats = Arc::new(ChannelStats::default());
        let mut tasks = Vec::new();
        let mut readers = Vec::new();
        let mut receivers = Vec::new();
        for port in ports {
            let (r, mut w) = tokio::io::split(port);
            let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(DELIVERY_QUEUE_PACKETS);
            receivers.push(tx);
            readers.push(r);
            tasks.push(tokio::spawn(async move {
                while let Some((at, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(at).await;
                    if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
                        return;
                    }
                }
            }));
        }
        let channel = Arc::new(std::sync::Mutex::new(Channel {
            cfg,
            free_at: Instant::now(),
            rng: StdRng::seed_from_u64(cfg.seed),
            receivers,
        }));
        for (i, mut r) in readers.into_iter().enumerate() {
            let (channel, stats) = (channel.clone(), stats.clone());
            tasks.push(tokio::spawn(async move {
                let mut pending: Vec<u8> = Vec::new();
                let mut buf = [0u8; 512];
                loop {
                    let n = match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    for &b in &buf[..n] {
                        let content = pending.iter().any(|&x| x != 0);
                        if b == 0 && !content {
                            // Delimiters between packets: keep one as the next packet's
                            // leading delimiter (it ends any noise the receiver heard).
                            pending.clear();
                            pending.push(0);
                            continue;
                        }
                        pending.push(b);
                        if b == 0 || pending.len() >= AIR_PACKET_BYTES_MAX {
                            transmit(&channel, &stats, i, std::mem::take(&mut pending));
                        }
                    }
                }
            }));
        }
        RadioChannel { stats, tasks }
    }
}

fn transmit(channel: &std::sync::Mutex<Channel>, stats: &ChannelStats, from: usize, pkt: Vec<u8>) {
    let Ok(mut ch) = channel.lock() else {
        return;
    };
    let now = Instant::now();
    let start = ch.free_at.max(now);
    if start > now + BACKLOG_MAX {
        stats.overflow.fetch_add(1, Ordering::Relaxed);
        return;
    }
    stats.packets.fetch_add(1, Ordering::Relaxed);
    stats.bytes.fetch_add(pkt.len() as u64, Ordering::Relaxed);
    let done = start + air_time(pkt.len(), ch.cfg.bitrate_bps);
    ch.free_at = done;
    let cfg = ch.cfg;
    for to in 0..ch.receivers.len() {
        if to == from {
            continue;
        }
        let jitter_us = cfg.jitter.as_micros() as u64;
        let extra = Duration::from_micros(if jitter_us == 0 {
            0
        } else {
            ch.rng.random_range(0..=jitter_us)
        });
        let at = done + cfg.one_way + extra;
        if ch.rng.random::<f64>() < cfg.loss {
            stats.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut bytes = Vec::with_capacity(pkt.len() + 16);
        if ch.rng.random::<f64>() < cfg.garbage {
            stats.garbage.fetch_add(1, Ordering::Relaxed);
            let n = ch.rng.random_range(1..=16);
            for _ in 0..n {
                bytes.push(ch.rng.random());
            }
        }
        let body_at = bytes.len();
        bytes.extend_from_slice(&pkt);
        if ch.rng.random::<f64>() < cfg.corrupt {
            stats.corrupted.fetch_add(1, Ordering::Relaxed);
            for _ in 0..ch.rng.random_range(1..=3) {
                let i = ch.rng.random_range(body_at..bytes.len());
                bytes[i] ^= 1 << ch.rng.random_range(0..8);
            }
        }
        // A full delivery queue loses the packet, like a receiver that fell behind.
        if ch.receivers[to].try_send((at, bytes)).is_err() {
            stats.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}
