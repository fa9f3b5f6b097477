//! `MultiTransport`: one node, several links (TCP over Wi-Fi, one or more radios); each frame
//! to a peer goes over the most preferred path that has recently carried a frame *from*
//! that peer.
//!
//! Policy, per peer:
//! - paths are ranked by the order they were given (TCP first: it is faster and does not
//!   share a slow channel);
//! - a path is *fresh* for a peer when a frame from that peer, addressed to us, arrived on it
//!   within `fresh` (default [`FRESH_DEFAULT`]);
//! - a frame goes over the best fresh path; while that is not the best path, one frame every
//!   `probe_interval` also goes over each better path, so when Wi-Fi comes back the peer
//!   hears us on it, answers on it, and both switch back;
//! - when no path is fresh (start-up, or two followers that never talk), the frame goes
//!   over every path that reaches the peer: a vote must not be lost to a guess.
//!
//! Freshness is read from the frame header (sender and receiver ids, the same in plain and
//! sealed frames) before anything verifies the frame, so a forger can at worst steer our
//! choice of path, not inject anything the layers above would accept.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use crate::net::secure::claimed_route;
use crate::net::transport::{InboundRx, InboundTx, Transport};

/// A path is fresh this long after it last carried a frame from the peer: three radio-profile
/// heartbeats (1 s each), ten Wi-Fi ones, so one or two lost heartbeats do not flip paths.
pub const FRESH_DEFAULT: Duration = Duration::from_secs(3);
/// How often a better but stale path is probed with a copy of a frame: a few seconds costs
/// little on the better path and switches back within one probe after Wi-Fi returns.
pub const PROBE_INTERVAL_DEFAULT: Duration = Duration::from_secs(2);

/// Frames remembered (by fingerprint and path) until the sealing layer says they opened: the
/// opener takes them in arrival order within milliseconds, so a few hundred is more than is
/// ever waiting, and what falls out only misses one freshness mark.
pub const AWAITING_OPEN_FRAMES: usize = 256;

/// Path selection settings.
#[derive(Debug, Clone, Copy)]
pub struct MultiConfig {
    /// See [`FRESH_DEFAULT`].
    pub fresh: Duration,
    /// See [`PROBE_INTERVAL_DEFAULT`].
    pub probe_interval: Duration,
    /// Mark a path fresh only for frames the sealing layer above opened
    /// ([`Transport::frame_opened`]), not for the sender a frame's header claims: a host that
    /// spoofs "from node 3" on the Wi-Fi then cannot keep frames off the radio. On whenever
    /// the links are sealed; an unsealed node can only go by the claim.
    pub verified: bool,
}

impl Default for MultiConfig {
    fn default() -> Self {
        MultiConfig {
            fresh: FRESH_DEFAULT,
            probe_interval: PROBE_INTERVAL_DEFAULT,
            verified: false,
        }
    }
}

/// A cheap identity of a received frame: its length, its first 64 bytes (a sealed frame's
/// header holds the sender's epoch and counter, unique per frame) and its last 16 (the tag).
fn fingerprint(frame: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    frame.len().hash(&mut h);
    frame[..frame.len().min(64)].hash(&mut h);
    frame[frame.len().saturating_sub(16)..].hash(&mut h);
    h.finish()
}

/// One link given to [`MultiTransport::start`].
pub struct Path {
    /// Name in counters and logs ("tcp", "radio:/dev/ttyUSB0").
    pub name: String,
    /// The link.
    pub transport: Arc<dyn Transport>,
    /// Peers it reaches (`None`: every peer, as TCP does).
    pub reaches: Option<BTreeSet<u64>>,
    /// The queue the link delivers received frames into (made with `inbound_queue`).
    pub inbound: InboundRx,
}

/// Counters of one path.
#[derive(Debug, Default)]
pub struct PathStats {
    /// Frames sent over it (probes and floods included).
    pub frames_sent: AtomicU64,
    /// Frames received over it.
    pub frames_received: AtomicU64,
    /// Copies sent to probe it while a worse path carried the traffic.
    pub probes: AtomicU64,
    /// Times it became the path to some peer.
    pub switches_to: AtomicU64,
}

/// A copy of one path's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct PathStatsSnapshot {
    pub name: String,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub probes: u64,
    pub switches_to: u64,
}

struct PathState {
    name: String,
    transport: Arc<dyn Transport>,
    reaches: Option<BTreeSet<u64>>,
    stats: Arc<PathStats>,
}

#[derive(Debug, Default)]
struct PeerState {
    heard: BTreeMap<usize, Instant>,
    current: Option<usize>,
    last_probe: Option<Instant>,
}

/// Several links behind one [`Transport`].
pub struct MultiTransport {
    cfg: MultiConfig,
    paths: Vec<PathState>,
    peers: Arc<Mutex<BTreeMap<u64, PeerState>>>,
    /// With `cfg.verified`: (fingerprint, path) of frames not yet reported opened.
    awaiting: Arc<Mutex<VecDeque<(u64, usize)>>>,
    forwarders: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for MultiTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.paths.iter().map(|p| p.name.as_str()).collect();
        f.debug_struct("MultiTransport")
            .field("paths", &names)
            .finish_non_exhaustive()
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl MultiTransport {
    /// Combine `paths` (best first) for node `me`; every frame any of them receives goes on
    /// to `inbound`.
    pub fn start(
        me: u64,
        cfg: MultiConfig,
        paths: Vec<Path>,
        inbound: InboundTx,
    ) -> Arc<MultiTransport> {
        let peers: Arc<Mutex<BTreeMap<u64, PeerState>>> = Arc::default();
        let awaiting: Arc<Mutex<VecDeque<(u64, usize)>>> = Arc::default();
        let mut states = Vec::new();
        let mut forwarders = Vec::new();
        for (i, p) in paths.into_iter().enumerate() {
            let stats = Arc::new(PathStats::default());
            let (peers, stats2, inbound) = (peers.clone(), stats.clone(), inbound.clone());
            let awaiting = awaiting.clone();
            let verified = cfg.verified;
            let mut rx = p.inbound;
            forwarders.push(tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if let Some((from, to)) = claimed_route(&bytes)
                        && to == me
                    {
                        bump(&stats2.frames_received);
                        if verified {
                            if let Ok(mut a) = awaiting.lock() {
                                if a.len() >= AWAITING_OPEN_FRAMES {
                                    a.pop_front();
                                }
                                a.push_back((fingerprint(&bytes), i));
                            }
                        } else if let Ok(mut peers) = peers.lock() {
                            peers
                                .entry(from)
                                .or_default()
                                .heard
                                .insert(i, Instant::now());
                        }
                    }
                    // Whatever it is, the RPC layer verifies (and counts) it.
                    let _ = inbound.try_send(bytes);
                }
            }));
            states.push(PathState {
                name: p.name,
                transport: p.transport,
                reaches: p.reaches,
                stats,
            });
        }
        Arc::new(MultiTransport {
            cfg,
            paths: states,
            peers,
            awaiting,
            forwarders: Mutex::new(forwarders),
        })
    }

    /// Counters per path, best first.
    pub fn path_stats(&self) -> Vec<PathStatsSnapshot> {
        self.paths
            .iter()
            .map(|p| {
                let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
                PathStatsSnapshot {
                    name: p.name.clone(),
                    frames_sent: g(&p.stats.frames_sent),
                    frames_received: g(&p.stats.frames_received),
                    probes: g(&p.stats.probes),
                    switches_to: g(&p.stats.switches_to),
                }
            })
            .collect()
    }

    /// The path now used for `peer`, by name (`None` before the first choice or when
    /// flooding).
    pub fn current_path(&self, peer: u64) -> Option<String> {
        let peers = self.peers.lock().ok()?;
        let i = peers.get(&peer)?.current?;
        Some(self.paths[i].name.clone())
    }

    fn reaches(&self, i: usize, peer: u64) -> bool {
        self.paths[i]
            .reaches
            .as_ref()
            .is_none_or(|r| r.contains(&peer))
    }

    /// Which paths get this frame: (path, is a probe).
    fn choose(&self, to: u64, now: Instant) -> Vec<(usize, bool)> {
        let candidates: Vec<usize> = (0..self.paths.len())
            .filter(|&i| self.reaches(i, to))
            .collect();
        let Ok(mut peers) = self.peers.lock() else {
            return candidates.into_iter().map(|i| (i, false)).collect();
        };
        let st = peers.entry(to).or_default();
        let fresh = candidates.iter().copied().find(|i| {
            st.heard
                .get(i)
                .is_some_and(|&t| now.duration_since(t) < self.cfg.fresh)
        });
        let Some(best) = fresh else {
            st.current = None;
            return candidates.into_iter().map(|i| (i, false)).collect();
        };
        if st.current != Some(best) {
            st.current = Some(best);
            bump(&self.paths[best].stats.switches_to);
            tracing::info!(peer = to, path = %self.paths[best].name, "link path chosen");
        }
        let mut out = vec![(best, false)];
        let better: Vec<usize> = candidates.iter().copied().filter(|&i| i < best).collect();
        if !better.is_empty()
            && st
                .last_probe
                .is_none_or(|t| now.duration_since(t) >= self.cfg.probe_interval)
        {
            st.last_probe = Some(now);
            out.extend(better.into_iter().map(|i| (i, true)));
        }
        out
    }
}

impl Transport for MultiTransport {
    fn radios(&self) -> Vec<super::RadioLinkSnapshot> {
        self.paths
            .iter()
            .flat_map(|p| p.transport.radios())
            .collect()
    }

    /// The bit rate of the path now carrying traffic to `peer`.
    fn bitrate_bps(&self, peer: u64) -> Option<u64> {
        let i = self.peers.lock().ok()?.get(&peer)?.current?;
        self.paths[i].transport.bitrate_bps(peer)
    }

    fn frame_opened(&self, from: u64, frame: &[u8]) {
        if !self.cfg.verified {
            return;
        }
        let f = fingerprint(frame);
        let path = self.awaiting.lock().ok().and_then(|mut a| {
            let at = a.iter().position(|&(g, _)| g == f)?;
            a.remove(at).map(|(_, i)| i)
        });
        if let Some(i) = path
            && let Ok(mut peers) = self.peers.lock()
        {
            peers
                .entry(from)
                .or_default()
                .heard
                .insert(i, Instant::now());
        }
    }

    fn send(&self, to: u64, frame: Vec<u8>) {
        let chosen = self.choose(to, Instant::now());
        let n = chosen.len();
        for (k, (i, probe)) in chosen.into_iter().enumerate() {
            let p = &self.paths[i];
            bump(&p.stats.frames_sent);
            if probe {
                bump(&p.stats.probes);
            }
            if k + 1 == n {
                p.transport.send(to, frame);
                return;
            }
            p.transport.send(to, frame.clone());
        }
    }

    fn set_peer_addr(&self, peer: u64, addr: &str) {
        for p in &self.paths {
            p.transport.set_peer_addr(peer, addr);
        }
    }

    fn shutdown(&self) {
        for p in &self.paths {
            p.transport.shutdown();
        }
        if let Ok(mut f) = self.forwarders.lock() {
            for t in f.drain(..) {
                t.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::transport::inbound_queue;
    use ghatta_proto::frame;

    /// Records what it is given.
    #[derive(Default)]
    struct Sink(Mutex<Vec<u64>>);

    impl Transport for Sink {
        fn send(&self, to: u64, _frame: Vec<u8>) {
            self.0.lock().unwrap().push(to);
        }
    }

    /// Node 1 with a TCP path (reaches everyone) and a radio path (reaches node 2).
    struct Bench {
        m: Arc<MultiTransport>,
        tcp: Arc<Sink>,
        radio: Arc<Sink>,
        tcp_tx: InboundTx,
        radio_tx: InboundTx,
        rx: InboundRx,
    }

    fn bench(cfg: MultiConfig) -> Bench {
        let (tcp, radio) = (Arc::new(Sink::default()), Arc::new(Sink::default()));
        let (tcp_tx, tcp_rx) = inbound_queue();
        let (radio_tx, radio_rx) = inbound_queue();
        let (tx, rx) = inbound_queue();
        let m = MultiTransport::start(
            1,
            cfg,
            vec![
                Path {
                    name: "tcp".into(),
                    transport: tcp.clone(),
                    reaches: None,
                    inbound: tcp_rx,
                },
                Path {
                    name: "radio".into(),
                    transport: radio.clone(),
                    reaches: Some([2].into()),
                    inbound: radio_rx,
                },
            ],
            tx,
        );
        Bench {
            m,
            tcp,
            radio,
            tcp_tx,
            radio_tx,
            rx,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn frames_follow_the_best_fresh_path_and_flood_when_none_is() {
        let Bench {
            m,
            tcp,
            radio,
            tcp_tx,
            radio_tx,
            mut rx,
        } = bench(MultiConfig::default());
        let sent = |s: &Sink| s.0.lock().unwrap().len();
        // Nothing heard yet: both paths that reach node 2; only TCP reaches node 3.
        m.send(2, vec![1]);
        m.send(3, vec![1]);
        assert_eq!((sent(&tcp), sent(&radio)), (2, 1));
        // Node 2 heard on the radio only: the radio carries its frames, TCP gets a probe.
        radio_tx.send(frame::encode(2, 1, b"hb")).await.unwrap();
        rx.recv().await.unwrap();
        m.send(2, vec![1]);
        m.send(2, vec![1]);
        assert_eq!((sent(&tcp), sent(&radio)), (3, 3));
        assert_eq!(m.current_path(2).as_deref(), Some("radio"));
        // Heard on TCP again: back to TCP.
        tcp_tx.send(frame::encode(2, 1, b"hb")).await.unwrap();
        rx.recv().await.unwrap();
        m.send(2, vec![1]);
        assert_eq!((sent(&tcp), sent(&radio)), (4, 3));
        // Silence past the freshness window: flood again.
        tokio::time::sleep(FRESH_DEFAULT).await;
        m.send(2, vec![1]);
        assert_eq!((sent(&tcp), sent(&radio)), (5, 4));
        let s = m.path_stats();
        assert_eq!((s[0].probes, s[0].switches_to, s[1].switches_to), (1, 1, 1));
        // A frame for someone else does not count as hearing its sender.
        tcp_tx.send(frame::encode(3, 9, b"x")).await.unwrap();
        rx.recv().await.unwrap();
        assert_eq!(m.path_stats()[0].frames_received, 1);
    }

    /// Sealed, a path is fresh only for frames that opened: frames that merely claim to come
    /// from node 2 (a spoofing host on the Wi-Fi) do not pull its traffic onto that path.
    #[tokio::test(start_paused = true)]
    async fn with_verified_freshness_only_opened_frames_make_a_path_fresh() {
        let Bench {
            m,
            tcp_tx,
            radio_tx,
            mut rx,
            ..
        } = bench(MultiConfig {
            verified: true,
            ..MultiConfig::default()
        });
        // Node 2 is really heard on the radio: its frame opened.
        let real = frame::encode(2, 1, b"sealed heartbeat");
        radio_tx.send(real.clone()).await.unwrap();
        let got = rx.recv().await.unwrap();
        m.frame_opened(2, &got);
        assert_eq!(m.current_path(2), None, "no choice is made before sending");
        m.send(2, vec![1]);
        assert_eq!(m.current_path(2).as_deref(), Some("radio"));
        // A spoofer on TCP claims to be node 2; its frames never open.
        for k in 0..5u8 {
            tcp_tx.send(frame::encode(2, 1, &[k; 20])).await.unwrap();
            rx.recv().await.unwrap();
        }
        m.send(2, vec![1]);
        assert_eq!(
            m.current_path(2).as_deref(),
            Some("radio"),
            "a claimed header moved the traffic"
        );
        // Unverified (unsealed) mode still goes by the claim, as before.
        assert!(!MultiConfig::default().verified);
    }
}
