//! A user-space WAN link emulator: a TCP proxy on loopback that delays every byte by a
//! one-way latency in each direction and can cut the link (open connections are reset, new
//! ones refused) and restore it, and optionally shape each direction to a line rate (bytes
//! queue behind each other as on a 256 kbit/s satellite link). For tests and the WAN
//! benchmark. It keeps the first
//! [`CAPTURE_BYTES_MAX`] bytes of each direction, so tests can look at what crossed the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Bytes read per chunk; a chunk is delivered whole after the delay.
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks queued per direction: bounds the proxy's memory to ~4 MiB per connection.
const QUEUE_CHUNKS: usize = 256;
/// Bytes kept per direction for inspection (all connections together): a few minutes of a
/// 256 kbit/s upload, enough for every test; later bytes are carried but not kept.
pub const CAPTURE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Bytes carried in one direction: a counter and the first [`CAPTURE_BYTES_MAX`] of them.
#[derive(Debug, Default)]
pub struct Tap {
    /// Bytes carried.
    pub bytes: AtomicU64,
    captured: std::sync::Mutex<Vec<u8>>,
}

impl Tap {
    fn record(&self, b: &[u8]) {
        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        let mut c = self.captured.lock().unwrap_or_else(|p| p.into_inner());
        let room = CAPTURE_BYTES_MAX.saturating_sub(c.len());
        c.extend_from_slice(&b[..b.len().min(room)]);
    }

    /// The bytes kept so far (connections concatenated in the order their chunks arrived).
    pub fn captured(&self) -> Vec<u8> {
        self.captured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running emulator; dropping it stops it.
pub struct LinkEmulator {
    /// Connect here instead of the target.
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    /// Bytes carried towards the target.
    pub up_tap: Arc<Tap>,
    /// Bytes carried back from the target.
    pub down_tap: Arc<Tap>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinkEmulator {
    fn drop(&mut self) {
        let _ = self.up.send(false);
        self.task.abort();
    }
}

impl LinkEmulator {
    /// Proxy from a fresh loopback port to `target`, delaying each direction by `one_way`.
    pub async fn start(target: SocketAddr, one_way: Duration) -> std::io::Result<LinkEmulator> {
        Self::start_shaped(target, one_way, 0).await
    }

    /// As [`Self::start`], each direction of each connection also limited to
    /// `rate_bytes_per_s` (0: unlimited): a chunk leaves after the ones before it have been
    /// serialised at that rate, then takes `one_way` to arrive.
    pub async fn start_shaped(
        target: SocketAddr,
        one_way: Duration,
        rate_bytes_per_s: u64,
    ) -> std::io::Result<LinkEmulator> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (up, up_rx) = watch::channel(true);
        let up_tap = Arc::new(Tap::default());
        let down_tap = Arc::new(Tap::default());
        let (bu, bd) = (up_tap.clone(), down_tap.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !*up_rx.borrow() {
                    drop(client); // The link is down: the SYN "times out" as a reset.
                    continue;
                }
                let mut down = up_rx.clone();
                let (bu, bd) = (bu.clone(), bd.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = async {
                            tokio::join!(
                                pipe(cr, sw, one_way, rate_bytes_per_s, bu),
                                pipe(sr, cw, one_way, rate_bytes_per_s, bd)
                            )
                        } => {}
                        _ = down.wait_for(|u| !*u) => {}
                    }
                });
            }
        });
        Ok(LinkEmulator {
            addr,
            up,
            up_tap,
            down_tap,
            task,
        })
    }

    /// Cut the link: open connections drop, new ones are refused until [`Self::restore`].
    pub fn cut(&self) {
        let _ = self.up.send(false);
    }

    /// Restore the link.
    pub fn restore(&self) {
        let _ = self.up.send(true);
    }

    /// Bytes carried towards the target so far.
    pub fn bytes_up(&self) -> u64 {
        self.up_tap.bytes.load(Ordering::Relaxed)
    }

    /// Bytes carried back from the target so far.
    pub fn bytes_down(&self) -> u64 {
        self.down_tap.bytes.load(Ordering::Relaxed)
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    rate_bytes_per_s: u64,
    tap: Arc<Tap>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        // When the line is free again (serialisation of earlier chunks).
        let mut line_free = Instant::now();
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tap.record(&buf[..n]);
                    let mut sent = Instant::now();
                    if rate_bytes_per_s > 0 {
                        line_free = line_free.max(sent)
                            + Duration::from_secs_f64(n as f64 / rate_bytes_per_s as f64);
                        sent = line_free;
                    }
                    if tx.send((sent + delay, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
