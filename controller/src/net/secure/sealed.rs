//! [`SealedTransport`]: any [`Transport`] with sealing on send, and the opener between the
//! link's inbound queue and the RPC dispatcher.
//!
//! The RPC layer keeps speaking plain frames: on send the plain frame's payload is sealed for
//! its receiver; on receive an opened payload is framed again as a plain frame and queued for
//! the dispatcher, which verifies it as before. Nothing that did not open reaches it.

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::seal::{Opened, SecureLink};
use super::{SealStats, SealStatsSnapshot};
use crate::net::transport::{InboundRx, InboundTx, Transport, inbound_queue};
use ghatta_proto::frame;

/// A transport whose every frame is sealed, and whose inbound frames are opened.
pub struct SealedTransport<T: Transport + ?Sized> {
    inner: Arc<T>,
    link: Arc<SecureLink>,
    opener: Mutex<Option<JoinHandle<()>>>,
    /// Peers already warned about (a member added without its key would otherwise log a
    /// warning per heartbeat).
    warned: Mutex<std::collections::BTreeSet<u64>>,
}

impl<T: Transport + ?Sized> std::fmt::Debug for SealedTransport<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedTransport")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl<T: Transport + ?Sized> SealedTransport<T> {
    /// Wrap `inner`, whose received frames arrive on `raw`. Returns the transport and the
    /// queue of opened frames to give the node (`NodeBuilder::start`'s `inbound`). Call inside a tokio
    /// runtime: the opener runs as a task until `raw` closes or the transport shuts down.
    pub fn start(inner: Arc<T>, raw: InboundRx, link: Arc<SecureLink>) -> (Arc<Self>, InboundRx) {
        let (tx, rx) = inbound_queue();
        let t = Arc::new(SealedTransport {
            inner: inner.clone(),
            link: link.clone(),
            opener: Mutex::new(None),
            warned: Mutex::new(Default::default()),
        });
        let task = tokio::spawn(open_loop(link, inner, raw, tx));
        if let Ok(mut o) = t.opener.lock() {
            *o = Some(task);
        }
        (t, rx)
    }

    /// The keys, epoch and counters.
    pub fn link(&self) -> &Arc<SecureLink> {
        &self.link
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &Arc<T> {
        &self.inner
    }
}

async fn open_loop<T: Transport + ?Sized>(
    link: Arc<SecureLink>,
    inner: Arc<T>,
    mut raw: InboundRx,
    out: InboundTx,
) {
    while let Some(bytes) = raw.recv().await {
        let opened = link.open(&bytes);
        // An authentic frame may have told us the sender's epoch for the first time: what we
        // sent it before could not open there, so send it again.
        let authentic_from = match &opened {
            Ok(Opened::Message { from, .. }) | Ok(Opened::Hello { from }) => Some(*from),
            Err(r) => r.hello_to(),
        };
        if let Ok(Opened::Message { from, .. } | Opened::Hello { from }) = &opened {
            inner.frame_opened(*from, &bytes);
        }
        if let Some(peer) = authentic_from {
            for payload in link.take_resend(peer) {
                if let Ok(sealed) = link.seal(peer, &payload) {
                    inner.send(peer, sealed);
                }
            }
        }
        match opened {
            Ok(Opened::Message { from, to, payload }) => {
                if out.send(frame::encode(from, to, &payload)).await.is_err() {
                    return;
                }
            }
            Ok(Opened::Hello { .. }) => {}
            Err(r) => {
                tracing::debug!(reason = ?r, "sealed frame dropped");
                if let Some(peer) = r.hello_to()
                    && link.hello_due(peer)
                    && let Ok(hello) = link.seal(peer, &[])
                {
                    link.count_hello_sent();
                    inner.send(peer, hello);
                }
            }
        }
    }
}

impl<T: Transport + ?Sized> Transport for SealedTransport<T> {
    fn send(&self, to: u64, plain: Vec<u8>) {
        // The RPC layer hands over a plain frame it just built: take its payload.
        let f = match frame::decode(&plain) {
            Ok(f) if f.to == to && f.from == self.link.me() => f,
            _ => {
                SealStats::bump(&self.link.stats().seal_failed);
                tracing::error!(to, "refusing to seal a malformed frame from the RPC layer");
                return;
            }
        };
        match self.link.seal(to, &f.payload) {
            Ok(sealed) => self.inner.send(to, sealed),
            Err(e) => {
                let first = self.warned.lock().map(|mut w| w.insert(to)).unwrap_or(true);
                if first {
                    tracing::warn!(to, error = %e, "frames to node {to} are not sent (counted in seal_failed)");
                } else {
                    tracing::debug!(to, error = %e, "frame not sent");
                }
            }
        }
    }

    fn bitrate_bps(&self, peer: u64) -> Option<u64> {
        self.inner.bitrate_bps(peer)
    }

    fn set_peer_addr(&self, peer: u64, addr: &str) {
        self.inner.set_peer_addr(peer, addr);
    }

    fn shutdown(&self) {
        if let Ok(mut o) = self.opener.lock()
            && let Some(t) = o.take()
        {
            t.abort();
        }
        self.inner.shutdown();
    }

    fn security(&self) -> Option<SealStatsSnapshot> {
        Some(self.link.snapshot())
    }

    fn radios(&self) -> Vec<crate::net::radio::RadioLinkSnapshot> {
        self.inner.radios()
    }

    fn seals_to(&self, peer: u64) -> Option<bool> {
        Some(self.link.knows(peer))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use super::*;
    use crate::net::secure::{BootEpoch, PublicKey, SecretKey};

    /// A transport that delivers into the peers' raw queues directly.
    #[derive(Default)]
    struct Wire {
        queues: StdMutex<Vec<(u64, InboundTx)>>,
    }

    impl Transport for Wire {
        fn send(&self, to: u64, frame: Vec<u8>) {
            let q = self.queues.lock().unwrap();
            if let Some((_, tx)) = q.iter().find(|(id, _)| *id == to) {
                let _ = tx.try_send(frame);
            }
        }
    }

    #[tokio::test]
    async fn two_sealed_nodes_exchange_frames_after_one_hello() {
        let wire = Arc::new(Wire::default());
        let keys: Vec<SecretKey> = (1..=2u8).map(|i| SecretKey::from_bytes([i; 32])).collect();
        let pubs: Vec<(u64, PublicKey)> = vec![(1, keys[0].public()), (2, keys[1].public())];
        let mut ends = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let id = i as u64 + 1;
            let (raw_tx, raw_rx) = inbound_queue();
            wire.queues.lock().unwrap().push((id, raw_tx));
            let link = Arc::new(
                SecureLink::new(id, "c", k, pubs.clone(), BootEpoch::in_memory(1)).unwrap(),
            );
            ends.push(SealedTransport::start(wire.clone(), raw_rx, link));
        }
        // The first frame names no epoch of node 2: dropped there and answered by a hello,
        // which tells node 1 node 2's epoch, so node 1 sends the frame again.
        ends[0].0.send(2, frame::encode(1, 2, b"first"));
        let got = tokio::time::timeout(Duration::from_secs(2), ends[1].1.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame::decode(&got).unwrap().payload, b"first");
        ends[0].0.send(2, frame::encode(1, 2, b"second"));
        let got = tokio::time::timeout(Duration::from_secs(2), ends[1].1.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame::decode(&got).unwrap().payload, b"second");
        let s2 = ends[1].0.security().unwrap();
        assert_eq!(
            (
                s2.before_introduction,
                s2.rejected(),
                s2.hellos_sent,
                s2.opened
            ),
            (1, 0, 1, 2)
        );
        let s1 = ends[0].0.security().unwrap();
        assert_eq!((s1.hellos_received, s1.sealed), (1, 3));
        // A frame the RPC layer did not build for this node is not sealed.
        ends[0].0.send(2, frame::encode(7, 2, b"spoof"));
        assert_eq!(ends[0].0.security().unwrap().seal_failed, 1);
    }
}
