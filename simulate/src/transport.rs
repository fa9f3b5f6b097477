//! `SimTransport`: the node's [`Transport`] over the simulator's `SimNet`, running the
//! node's own radio link layer (`net::radio::link::LinkDriver`: addressing, fragmentation to
//! the link's MTU, pacing at the link's bit rate, selective-repeat ARQ, small frames ahead of
//! bulk data) on every link with an MTU.
//!
//! One transport per node *incarnation*: when the world crashes a node it clears the
//! incarnation's `alive` flag, so tasks the dead process left behind (a proposal retry loop,
//! say) can no longer put anything on the air.
//!
//! `SimNet` carries datagrams, so packets go without COBS; each directed link has its own
//! bandwidth, so the driver paces per peer (a serial radio paces its one shared channel).
//! Links without an MTU (0: unlimited) carry frames whole, as before. The policy itself is
//! stated in `net::radio`.
//!
//! [`node_links`] puts the node's real sealing layer (`net::secure`) over a `SimTransport` when the
//! scenario's links are sealed, with keys derived from the world seed.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ghatta_sim::net::{Endpoint, NodeId, SimNet};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use ghatta::net::radio::link::{DriverConfig, LinkDriver, LinkParams, MTU_BYTES_MIN, RadioStats};
use ghatta::net::radio::pacing::air_time;
use ghatta::net::secure::{BootEpoch, SealStats, SealedTransport, SecretKey, SecureLink};
use ghatta::net::transport::{InboundRx, InboundTx, Transport};
use ghatta_proto::frame::FRAME_MAGIC;

/// Message ids of one incarnation start at its number times this, so a restarted node never
/// reuses ids its peers remember as completed (they remember 256; an incarnation would have
/// to send 16 M fragmented frames to run into the next one's ids).
const MESSAGE_IDS_PER_INCARNATION: u32 = 1 << 24;

/// Counters of the transport, kept per node across incarnations.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// The radio link layer's counters (fragments, repeats, CRC rejections, ...).
    pub radio: Arc<RadioStats>,
    /// Frames handed to the network whole on links without an MTU.
    pub frames_unlimited: AtomicU64,
    /// Frames given up before the link layer: sent by a dead incarnation.
    pub frames_dropped: AtomicU64,
    /// Received frames the node's inbound queue had no room for.
    pub inbound_full: AtomicU64,
    /// Incarnations started (numbers each one's message ids).
    incarnations: AtomicU32,
}

impl TransportStats {
    /// Incarnations started so far, the running one included (1 for a first start).
    pub fn incarnations(&self) -> u32 {
        self.incarnations.load(Ordering::Relaxed)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One incarnation's transport.
#[derive(Debug)]
pub struct SimTransport {
    me: NodeId,
    net: SimNet,
    alive: Arc<AtomicBool>,
    driver: Mutex<LinkDriver>,
    wake: Notify,
    stats: Arc<TransportStats>,
}

impl SimTransport {
    /// Starts a transport for node `me`: frames received on `endpoint` go (reassembled) into
    /// `inbound`. Returns the transport and its tasks (receive pump, link driver), which the
    /// world aborts when the incarnation dies.
    pub fn start(
        me: NodeId,
        net: SimNet,
        endpoint: Endpoint,
        inbound: InboundTx,
        alive: Arc<AtomicBool>,
        stats: Arc<TransportStats>,
    ) -> (Arc<SimTransport>, Vec<JoinHandle<()>>) {
        let incarnation = stats.incarnations.fetch_add(1, Ordering::Relaxed);
        let defaults = LinkParams {
            mtu_bytes: MTU_BYTES_MIN,
            bitrate_bps: 0,
            round_timeout: Duration::from_secs(1),
        };
        let driver = LinkDriver::new(
            DriverConfig {
                me,
                defaults,
                shared_medium: false,
                cobs: false,
                first_message_id: incarnation.wrapping_mul(MESSAGE_IDS_PER_INCARNATION),
                receive_limit_bytes: ghatta_sim::link::MTU_BYTES_MAX as usize,
            },
            stats.radio.clone(),
        );
        let t = Arc::new(SimTransport {
            me,
            net,
            alive,
            driver: Mutex::new(driver),
            wake: Notify::new(),
            stats,
        });
        let pump = tokio::spawn(pump(t.clone(), endpoint, inbound));
        let driver = tokio::spawn(transmit(t.clone()));
        (t, vec![pump, driver])
    }

    fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// The link-layer parameters of the link to `peer`, from its current model (scenarios
    /// change links while running), or `None` for a link without an MTU.
    fn params(&self, peer: NodeId) -> Option<LinkParams> {
        let m = self.net.link_model(self.me, peer);
        (m.mtu_bytes != 0).then(|| LinkParams {
            // A link too small for any fragment header is used at the smallest workable size
            // (SimNet then drops and counts what exceeds its MTU, as a radio would).
            mtu_bytes: (m.mtu_bytes as usize).max(MTU_BYTES_MIN),
            bitrate_bps: m.bandwidth_bps,
            round_timeout: round_trip(&m),
        })
    }

    /// Sends a frame now: through the link layer, or whole on a link without an MTU.
    fn dispatch(&self, to: NodeId, frame: Vec<u8>) {
        if !self.alive() {
            bump(&self.stats.frames_dropped);
            return;
        }
        let Some(params) = self.params(to) else {
            bump(&self.stats.frames_unlimited);
            self.net.send(self.me, to, frame);
            return;
        };
        if let Ok(mut d) = self.driver.lock() {
            d.set_peer(to, params);
            d.send(to, frame, Instant::now());
        }
        self.wake.notify_one();
    }
}

impl Transport for SimTransport {
    fn send(&self, to: u64, frame: Vec<u8>) {
        self.dispatch(to, frame);
    }

    /// The bit rate the link driver paces the link to `peer` at (links with an MTU).
    fn bitrate_bps(&self, peer: u64) -> Option<u64> {
        self.params(peer)
            .map(|p| p.bitrate_bps)
            .filter(|&bps| bps > 0)
    }
}

/// Puts the driver's packets on the air as its pacers allow.
async fn transmit(t: Arc<SimTransport>) {
    loop {
        let (batch, wake) = {
            let Ok(mut d) = t.driver.lock() else {
                return;
            };
            let now = Instant::now();
            let mut batch = Vec::new();
            while let Some(o) = d.poll_transmit(now) {
                batch.push(o);
            }
            (batch, d.next_wake(now))
        };
        if !batch.is_empty() {
            if t.alive() {
                for o in batch {
                    t.net.send(t.me, o.to, o.bytes);
                }
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = t.wake.notified() => {}
            _ = sleep_until_opt(wake) => {}
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long to wait for a round's bitmap: a round trip at the link's latency plus the tail a
/// bitmap may take each way (three mean jitters, or one half-width of a uniform spread), as a
/// real driver is configured with.
fn round_trip(m: &ghatta_sim::link::LinkModel) -> Duration {
    // A uniform spread is bounded by its half-width; an exponential tail is not.
    let tail = if m.jitter_uniform { 1 } else { 3 } * m.jitter_ms;
    let one_way = (m.latency_ms + tail).min(m.latency_cap_ms.max(m.latency_ms));
    Duration::from_millis(2 * u64::from(one_way)) + air_time(64, m.bandwidth_bps)
}

/// Moves frames from the network endpoint into the node's inbound queue, through the link
/// layer for packets (which reassembles fragments and queues bitmaps).
async fn pump(t: Arc<SimTransport>, mut endpoint: Endpoint, inbound: InboundTx) {
    while let Some((from, bytes)) = endpoint.recv().await {
        if !t.alive() {
            return;
        }
        let frame = if bytes.first() == Some(&FRAME_MAGIC) {
            // A whole frame from a link without an MTU; the frame layer verifies it.
            Some(bytes)
        } else {
            // Bitmaps this packet calls for go back over the link to `from`.
            let params = t.params(from);
            let got = match t.driver.lock() {
                Ok(mut d) => {
                    if let Some(p) = params {
                        d.set_peer(from, p);
                    }
                    d.receive(&bytes, Instant::now()).map(|x| x.1)
                }
                Err(_) => None,
            };
            // A bitmap may be waiting to go out.
            t.wake.notify_one();
            got
        };
        // A full queue drops, as a kernel drops datagrams nobody reads.
        if let Some(frame) = frame
            && inbound.try_send(frame).is_err()
        {
            bump(&t.stats.inbound_full);
        }
    }
}

/// Node `id`'s key pair in a sealed run: derived from the world seed, so a seed replays.
pub fn sim_secret(seed: u64, id: NodeId) -> SecretKey {
    let mut bytes = [0u8; 32];
    let mut x = seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for chunk in bytes.chunks_mut(8) {
        // splitmix64: distinct words whatever the seed.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    SecretKey::from_bytes(bytes)
}

/// Node `id`'s key pair after `generation` board replacements (`replace_node`): generation 0
/// is [`sim_secret`], each later one a new key from the same seed, so a seed still replays.
pub fn sim_secret_of(seed: u64, id: NodeId, generation: u32) -> SecretKey {
    if generation == 0 {
        return sim_secret(seed, id);
    }
    // Another stream of splitmix64 per generation (an odd multiplier keeps them apart).
    sim_secret(
        seed ^ u64::from(generation).wrapping_mul(0xd6e8_feb8_6659_fd93),
        id,
    )
}

/// How a simulated node's links are sealed (scenario `[links] sealed`): keys from `seed` for
/// every one of `members`, bound to `cluster`.
#[derive(Clone, Copy)]
pub struct SealWith<'a> {
    /// The world seed the key pairs derive from.
    pub seed: u64,
    /// Every node of the cluster.
    pub members: &'a [NodeId],
    /// The cluster name the pair keys are bound to.
    pub cluster: &'a str,
    /// Key generations ([`sim_secret_of`]) of nodes whose board was replaced; a node not
    /// listed has generation 0.
    pub key_gens: &'a [(NodeId, u32)],
}

/// A node incarnation's links as the node sees them: its transport, the queue of frames it
/// receives, and the opener's counters when sealed.
pub struct NodeLinks {
    /// What the node sends through.
    pub transport: Arc<dyn Transport>,
    /// What it receives (opened frames when sealed).
    pub inbound: InboundRx,
    /// The opener's counters (sealed links only).
    pub seal_stats: Option<Arc<SealStats>>,
}

/// Node `me`'s links over `plain`: as they are, or, with `seal`, sealed as `ghatta run` does
/// with a key file: every member's public key listed, per-pair AEAD keys bound to the
/// cluster, and the boot epoch taken from `stats`' incarnation count (on a board the epoch is
/// a counter fsynced before first use, so no crash or power cut repeats one).
///
/// # Errors
/// When the keys cannot be derived (a weak derived key is the only way, and names the peer).
pub fn node_links(
    me: NodeId,
    plain: Arc<SimTransport>,
    raw: InboundRx,
    stats: &TransportStats,
    seal: Option<SealWith<'_>>,
) -> anyhow::Result<NodeLinks> {
    let Some(SealWith {
        seed,
        members,
        cluster,
        key_gens,
    }) = seal
    else {
        return Ok(NodeLinks {
            transport: plain,
            inbound: raw,
            seal_stats: None,
        });
    };
    let epoch = BootEpoch::in_memory(stats.incarnations());
    let key = |id: NodeId| {
        let generation = key_gens.iter().find(|(n, _)| *n == id).map_or(0, |g| g.1);
        sim_secret_of(seed, id, generation)
    };
    let peers = members.iter().map(|&p| (p, key(p).public()));
    let link = SecureLink::new(me, cluster, &key(me), peers, epoch)
        .map_err(|e| anyhow::anyhow!("node {me}: cannot key the sealed links: {e}"))?;
    let (sealed, inbound) = SealedTransport::start(plain, raw, Arc::new(link));
    Ok(NodeLinks {
        seal_stats: Some(sealed.link().stats().clone()),
        transport: sealed,
        inbound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghatta::net::transport::inbound_queue;
    use ghatta_sim::link::LinkModel;

    /// The simulator's radio links run the node's link layer: a frame twenty times the MTU
    /// crosses a lossy SiK link whole, once, and the driver's counters show the ARQ at work.
    #[tokio::test(start_paused = true)]
    async fn a_large_frame_crosses_a_lossy_small_mtu_link_through_the_node_link_layer() {
        let model = LinkModel {
            loss: 0.3,
            ..LinkModel::radio_sik()
        };
        let net = SimNet::new(7, model);
        let stats1 = Arc::new(TransportStats::default());
        let stats2 = Arc::new(TransportStats::default());
        let (tx1, _rx1) = inbound_queue();
        let (tx2, mut rx2) = inbound_queue();
        let alive = Arc::new(AtomicBool::new(true));
        let (t1, _tasks1) = SimTransport::start(
            1,
            net.clone(),
            net.endpoint(1),
            tx1,
            alive.clone(),
            stats1.clone(),
        );
        let (_t2, _tasks2) =
            SimTransport::start(2, net.clone(), net.endpoint(2), tx2, alive, stats2.clone());
        let frame: Vec<u8> = (0..(20 * model.mtu_bytes)).map(|i| i as u8).collect();
        t1.send(2, frame.clone());
        let got = tokio::time::timeout(Duration::from_secs(60), rx2.recv())
            .await
            .expect("delivered within a minute")
            .expect("queue open");
        assert_eq!(got, frame);
        let s = stats1.radio.snapshot();
        assert_eq!(s.frames_fragmented, 1, "{s:?}");
        assert!(
            s.fragments_repeated > 0,
            "30 % loss over 20+ fragments: {s:?}"
        );
        assert_eq!(stats2.radio.snapshot().frames_reassembled, 1);
        assert!(
            tokio::time::timeout(Duration::from_secs(30), rx2.recv())
                .await
                .is_err(),
            "delivered once"
        );
    }
}
