//! A user-space WAN link emulator: a TCP proxy on loopback that delays every byte by a
//! one-way latency in each direction and can cut the link (open connections are reset, new
//! ones refused) and restore it. For tests and the WAN benchmark; the bandwidth cap is the
//! uploader's own token bucket, so the emulator does not shape rate.

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

/// A running emulator; dropping it stops it.
pub struct LinkEmulator {
    /// Connect here instead of the target.
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    /// Bytes carried towards the target.
    pub bytes_up: Arc<AtomicU64>,
    /// Bytes carried back from the target.
    pub bytes_down: Arc<AtomicU64>,
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
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (up, up_rx) = watch::channel(true);
        let bytes_up = Arc::new(AtomicU64::new(0));
        let bytes_down = Arc::new(AtomicU64::new(0));
        let (bu, bd) = (bytes_up.clone(), bytes_down.clone());
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
                            tokio::join!(pipe(cr, sw, one_way, bu), pipe(sr, cw, one_way, bd))
                        } => {}
                        _ = down.wait_for(|u| !*u) => {}
                    }
                });
            }
        });
        Ok(LinkEmulator {
            addr,
            up,
            bytes_up,
            bytes_down,
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
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    counter: Arc<AtomicU64>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
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
