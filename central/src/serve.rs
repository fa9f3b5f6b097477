//! One grid connection over any ordered byte stream (a TCP connection, or the simulator's WAN
//! link model): the handshake within [`HANDSHAKE_TIMEOUT`], then batches in and acks out, a
//! batch at least every [`IDLE_TIMEOUT`]; and the TCP accept loop in front of it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ghatta_proto::wan::{self as proto, Msg, channel};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::backend::Store;
use crate::error::ServeError;
use crate::store::{CentralStore, Inner};
use crate::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS};

/// The TCP front: accept, bound the connections, hand each to [`CentralStore::serve`].
pub(crate) async fn accept_loop(listener: TcpListener, store: CentralStore) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "central accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "refusing grid connection: {MAX_CONNECTIONS} already open");
            continue;
        };
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = sock.set_nodelay(true) {
                tracing::info!(%peer, error = %e, "grid connection closed before it was served");
                return;
            }
            let (rd, wr) = sock.into_split();
            store.serve(rd, wr, &peer.to_string()).await;
            drop(permit);
        });
    }
}

/// One grid connection over any byte stream: handshake, then batches in, acks out.
pub(crate) async fn serve_conn<R, W>(
    rd: &mut R,
    wr: &mut W,
    inner: &Arc<Inner>,
) -> Result<(), ServeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let handshake = channel::accept(
        &mut *rd,
        &mut *wr,
        &inner.secret,
        &inner.grids,
        &inner.replays,
    );
    let Ok(accepted) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await else {
        inner.stats.handshake_timeouts.fetch_add(1, Relaxed);
        return Err(proto::ProtoError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no WAN handshake within {HANDSHAKE_TIMEOUT:?}"),
        ))
        .into());
    };
    let channel::Accepted {
        grid,
        key,
        mut sealer,
        mut opener,
    } = accepted.map_err(proto::ProtoError::from)?;
    inner.stats.handshakes_ok.fetch_add(1, Relaxed);
    tracing::debug!(grid, %key, "grid authenticated");
    loop {
        // Dropping a read cut off mid-frame is fine: the connection is closed with it.
        let Ok(frame) = tokio::time::timeout(IDLE_TIMEOUT, opener.read_frame(rd)).await else {
            inner.stats.idle_closed.fetch_add(1, Relaxed);
            tracing::info!(grid, "grid connection idle for {IDLE_TIMEOUT:?}; closed");
            return Ok(());
        };
        let frame = frame.map_err(proto::ProtoError::from)?;
        let Msg::Batch { grid, body } = proto::decode(&frame, grid)? else {
            return Err(proto::ProtoError::Body("a grid sent an ack, not a batch".into()).into());
        };
        // The ack is written only after the store's commit returned.
        let ack = inner.backend.ingest(grid, body).await?;
        sealer
            .write_frame(wr, &proto::encode_ack(grid, &ack)?)
            .await
            .map_err(proto::ProtoError::from)?;
        inner.stats.batches_acked.fetch_add(1, Relaxed);
    }
}
