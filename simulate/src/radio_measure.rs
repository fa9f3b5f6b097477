//! `ghatta-sim radio-measure`: the measurements of `ghatta-sim measure` (measure.rs) in
//! real time, over serial links: three nodes on pseudo-terminal pairs, opened by path through
//! `SerialTransport` as `ghatta run` opens a modem, joined by the radio channel emulator
//! (emulator/radio.rs: one shared channel, 800 ms RTT, 9,600 bit/s, loss, corruption,
//! garbage). A pseudo-terminal cannot be reopened once its node let go of it, so every
//! leader-loss trial runs on a fresh cluster.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::emulator::radio::{ChannelConfig, RadioChannel};
use crate::measure::{Bed, Latency, Measurements, Plan, measure};
use anyhow::Context;
use ghatta::actors::{ActorHost, ActorLimits};
use ghatta::net::LinkProfile;
use ghatta::net::radio::serial::{RadioConfig, SerialTransport};
use ghatta::net::transport::{Transport, inbound_queue};
use ghatta::node::{Node, NodeBuilder};
use ghatta::raft::PeerInfo;
use ghatta::raft::timing::Timing;

/// Nodes on the channel.
const NODES: u64 = 3;

/// Arguments of `ghatta-sim radio-measure`.
#[derive(clap::Args, Debug)]
pub struct RadioMeasureArgs {
    /// Channel bit rate shared by every node, bit/s.
    #[arg(long, default_value_t = 9_600)]
    bitrate: u64,
    /// Round trip of the channel (twice its mean one-way latency), ms.
    #[arg(long, default_value_t = 800)]
    rtt_ms: u64,
    /// Spread of each packet's one-way latency, ms: uniform over `rtt_ms / 2` +/- half of it
    /// (0: fixed; the pty test's channel uses 400, the radio profile's +/-50 %).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Probability a reception is lost.
    #[arg(long, default_value_t = 0.05)]
    loss: f64,
    /// Probability a reception is corrupted.
    #[arg(long, default_value_t = 0.05)]
    corrupt: f64,
    /// Probability a reception is preceded by noise bytes.
    #[arg(long, default_value_t = 0.05)]
    garbage: f64,
    /// Idle window, s.
    #[arg(long, default_value_t = 120)]
    idle_s: u64,
    /// Proposals per latency phase.
    #[arg(long, default_value_t = 20)]
    proposals: usize,
    /// Proposals of the stream phase (one per round trip at the leader, each made without
    /// waiting for the earlier ones; 0: skip).
    #[arg(long, default_value_t = 30)]
    stream: usize,
    /// Meter reads per proposal.
    #[arg(long, default_value_t = 1)]
    inputs_per_entry: usize,
    /// Leader-loss trials (each on a fresh cluster).
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    /// Raft timing from this profile.
    #[arg(long, value_enum, default_value = "radio")]
    link_profile: crate::cli::LinkProfileArg,
    /// Seed of the channel and of the harness's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

struct PtyBed {
    _dir: tempfile::TempDir,
    _channel: RadioChannel,
    nodes: BTreeMap<u64, Node>,
    radios: BTreeMap<u64, Arc<SerialTransport>>,
    /// Bytes sent by incarnations that are gone.
    gone: BTreeMap<u64, u64>,
}

impl PtyBed {
    async fn start(args: &RadioMeasureArgs, timing: Timing, seed: u64) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
        let mut masters = Vec::new();
        let mut devices = Vec::new();
        for _ in 0..NODES {
            let (master, slave) =
                tokio_serial::SerialStream::pair().context("cannot open a pty pair")?;
            use tokio_serial::SerialPort;
            devices.push(slave.name().context("the pty has no path")?);
            drop(slave);
            masters.push(master);
        }
        let host = Arc::new(ActorHost::with_embedded(ActorLimits::default())?);
        let mut nodes = BTreeMap::new();
        let mut radios = BTreeMap::new();
        for id in 1..=NODES {
            let (tx, rx) = inbound_queue();
            let cfg = RadioConfig {
                device: devices[id as usize - 1].clone(),
                baud: 9_600.max(args.bitrate as u32),
                air_bitrate: args.bitrate,
                mtu: 100,
                peers: (1..=NODES).filter(|&p| p != id).collect(),
                rtt_ms: Some(args.rtt_ms),
            };
            let radio = SerialTransport::open(id, &cfg, tx)
                .with_context(|| format!("cannot open {}", cfg.device))?;
            let stores = ghatta::storage::open_dir(&dir.path().join(format!("node-{id}")))?;
            let node = NodeBuilder::new(id, "radio-measure")
                .timing(timing)
                .seed(seed.wrapping_mul(7_919) ^ id)
                .actor_host(host.clone())
                .start(stores, radio.clone(), rx)
                .await?;
            nodes.insert(id, node);
            radios.insert(id, radio);
        }
        let channel = RadioChannel::start(
            masters,
            ChannelConfig {
                one_way: Duration::from_millis(
                    (args.rtt_ms / 2).saturating_sub(args.jitter_ms / 2),
                ),
                jitter: Duration::from_millis(args.jitter_ms),
                bitrate_bps: args.bitrate,
                loss: args.loss,
                corrupt: args.corrupt,
                garbage: args.garbage,
                seed,
            },
        );
        let members: BTreeMap<u64, PeerInfo> = (1..=NODES)
            .map(|id| {
                (
                    id,
                    PeerInfo {
                        addr: format!("radio:{id}"),
                    },
                )
            })
            .collect();
        for n in nodes.values() {
            n.initialize(members.clone())
                .await
                .map_err(|e| anyhow::anyhow!("cannot form the cluster: {e}"))?;
        }
        Ok(PtyBed {
            _dir: dir,
            _channel: channel,
            nodes,
            radios,
            gone: BTreeMap::new(),
        })
    }

    async fn stop(&mut self) {
        for (_, n) in std::mem::take(&mut self.nodes) {
            n.shutdown().await;
        }
        for r in self.radios.values() {
            r.shutdown();
        }
    }
}

impl Bed for PtyBed {
    fn nodes(&self) -> BTreeMap<u64, Node> {
        self.nodes.clone()
    }

    fn bytes_sent(&self) -> BTreeMap<u64, u64> {
        (1..=NODES)
            .map(|id| {
                let live = self
                    .radios
                    .get(&id)
                    .map_or(0, |r| r.stats().snapshot().bytes_sent);
                (id, live + self.gone.get(&id).copied().unwrap_or(0))
            })
            .collect()
    }

    async fn crash(&mut self, id: u64) {
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
        if let Some(r) = self.radios.remove(&id) {
            r.shutdown();
            *self.gone.entry(id).or_default() += r.stats().snapshot().bytes_sent;
        }
    }

    async fn restart(&mut self, _id: u64) -> bool {
        false
    }
}

fn no_links(_: &PtyBed) -> BTreeMap<String, u64> {
    BTreeMap::new()
}

/// Runs the measurement and prints it as JSON.
pub async fn run(args: RadioMeasureArgs) -> anyhow::Result<ExitCode> {
    let profile = LinkProfile::from(args.link_profile);
    let timing = Timing::for_profile(profile);
    let base = Plan {
        rtt_ms: args.rtt_ms,
        idle: Duration::from_secs(args.idle_s),
        proposals: args.proposals,
        stream: args.stream,
        stream_gap: Duration::from_millis(args.rtt_ms),
        inputs_per_entry: args.inputs_per_entry,
        failovers: args.failovers.min(1),
        day: Duration::ZERO,
        seed: args.seed,
    };
    let wall = std::time::Instant::now();
    let mut bed = PtyBed::start(&args, timing, args.seed).await?;
    let first = measure(&mut bed, &base, timing, no_links).await;
    bed.stop().await;
    let mut m: Measurements = first?;
    // Further leader-loss trials, each on a fresh cluster.
    for trial in 1..args.failovers {
        let seed = args.seed.wrapping_add(trial as u64);
        let plan = Plan {
            idle: Duration::ZERO,
            proposals: 0,
            stream: 0,
            failovers: 1,
            seed,
            ..base.clone()
        };
        let mut bed = PtyBed::start(&args, timing, seed).await?;
        let r = measure(&mut bed, &plan, timing, no_links).await;
        bed.stop().await;
        m.failovers.extend(r?.failovers);
    }
    let commit: Vec<u64> = m.failovers.iter().filter_map(|f| f.commit_ms).collect();
    let leader: Vec<u64> = m.failovers.iter().filter_map(|f| f.new_leader_ms).collect();
    let n = m.failovers.len();
    m.failover_commit = Latency::of(commit.clone(), n - commit.len(), args.rtt_ms);
    m.failover_leader = Latency::of(leader.clone(), n - leader.len(), args.rtt_ms);
    println!(
        "{}",
        serde_json::to_string_pretty(&m).context("cannot encode the measurements")?
    );
    eprintln!("measured in {:.0} s", wall.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
