//! Talking to peers: the messages between nodes (`wire`), request/response over frames
//! (correlation ids, deadlines, the inbound dispatcher: this file), and openraft's network on
//! top of it (`network`: append, vote, chunked snapshots, per-peer pacing and probes;
//! `pipeline`: several appends in flight once the match point is known). It sits above
//! `net` (links) and `raft` (the types the messages carry); the node answers peers in
//! `node/handler.rs`.
//!
//! Every received frame is verified (CRC, header, addressed to us, decodable) before anything
//! looks at it; a bad frame is dropped and counted, never answered.

pub mod network;
pub mod pipeline;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use ghatta_proto::{codec, frame};

use self::wire::{Request, Response, WireBody, WireMessage};
use crate::net::transport::{InboundRx, LinkStats, Transport};

/// Calls awaiting a response at once. Raft keeps one or two in flight per peer; forwarded
/// proposals add a few. The cap turns a runaway caller into errors instead of memory growth.
pub const MAX_PENDING_CALLS: usize = 4096;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No response before the deadline.
    #[error("no response from node {peer} within {deadline:?}")]
    Timeout {
        /// The peer.
        peer: u64,
        /// The deadline.
        deadline: Duration,
    },
    /// Too many calls in flight.
    #[error("too many calls in flight ({MAX_PENDING_CALLS})")]
    Overloaded,
    /// The request could not be encoded.
    #[error("cannot encode request: {0}")]
    Encode(String),
    /// The peer answered with a response of the wrong kind.
    #[error("node {peer} answered with an unexpected response")]
    Unexpected {
        /// The peer.
        peer: u64,
    },
}

/// Handles requests from peers.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request from `from`.
    fn handle(&self, from: u64, req: Request) -> impl Future<Output = Response> + Send;
}

/// The RPC endpoint of one node.
pub struct Rpc {
    me: u64,
    transport: Arc<dyn Transport>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    next_id: AtomicU64,
    stats: Arc<LinkStats>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// An endpoint for node `me` over `transport`.
    pub fn new(me: u64, transport: Arc<dyn Transport>) -> Arc<Self> {
        Arc::new(Rpc {
            me,
            transport,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stats: Arc::default(),
        })
    }

    /// This node's id.
    pub fn me(&self) -> u64 {
        self.me
    }

    /// The transport (to register peer addresses).
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Frame-layer counters (accepted, rejected).
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    fn send(&self, to: u64, msg: &WireMessage) -> Result<(), RpcError> {
        let payload = codec::encode(msg).map_err(|e| RpcError::Encode(e.to_string()))?;
        let bytes = frame::encode(self.me, to, &payload);
        LinkStats::add(&self.stats.frames_sent, 1);
        LinkStats::add(&self.stats.bytes_sent, bytes.len() as u64);
        self.transport.send(to, bytes);
        Ok(())
    }

    /// Send `req` to `to` and wait for its response until `deadline`.
    pub async fn call(
        &self,
        to: u64,
        req: Request,
        deadline: Duration,
    ) -> Result<Response, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().map_err(|_| RpcError::Overloaded)?;
            if p.len() >= MAX_PENDING_CALLS {
                return Err(RpcError::Overloaded);
            }
            p.insert(id, tx);
        }
        let sent = self.send(
            to,
            &WireMessage {
                id,
                body: WireBody::Request(req),
            },
        );
        let result = match sent {
            Err(e) => Err(e),
            Ok(()) => match tokio::time::timeout(deadline, rx).await {
                Ok(Ok(resp)) => Ok(resp),
                _ => Err(RpcError::Timeout { peer: to, deadline }),
            },
        };
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        result
    }

    /// Run the inbound dispatcher until the queue closes: verify frames, complete calls,
    /// and answer requests (each on its own task so a slow handler never blocks the link).
    pub async fn dispatch<H: Handler>(self: Arc<Self>, mut inbound: InboundRx, handler: Arc<H>) {
        while let Some(bytes) = inbound.recv().await {
            let Some((from, msg)) = self.verify(&bytes) else {
                continue;
            };
            match msg.body {
                WireBody::Response(resp) => {
                    let waiter = self.pending.lock().ok().and_then(|mut p| p.remove(&msg.id));
                    if let Some(tx) = waiter {
                        let _ = tx.send(resp);
                    }
                }
                WireBody::Request(req) => {
                    let (me, handler, id) = (self.clone(), handler.clone(), msg.id);
                    tokio::spawn(async move {
                        let resp = handler.handle(from, req).await;
                        if let Err(e) = me.send(
                            from,
                            &WireMessage {
                                id,
                                body: WireBody::Response(resp),
                            },
                        ) {
                            tracing::warn!(to = from, error = %e, "cannot send response");
                        }
                    });
                }
            }
        }
    }

    /// Decode and check one received frame; count and drop anything wrong.
    fn verify(&self, bytes: &[u8]) -> Option<(u64, WireMessage)> {
        let f = match frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "frame rejected");
                LinkStats::add(&self.stats.rejected, 1);
                return None;
            }
        };
        if f.to != self.me {
            LinkStats::add(&self.stats.rejected, 1);
            return None;
        }
        match codec::decode::<WireMessage>(&f.payload) {
            Ok(m) => {
                LinkStats::add(&self.stats.frames_received, 1);
                LinkStats::add(&self.stats.bytes_received, bytes.len() as u64);
                Some((f.from, m))
            }
            Err(e) => {
                tracing::debug!(from = f.from, error = %e, "undecodable message rejected");
                LinkStats::add(&self.stats.rejected, 1);
                None
            }
        }
    }
}
