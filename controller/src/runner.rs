//! Starting a node on real resources (file-backed redb, TCP and serial radios, the system
//! clock, a board): shared by `ghatta run` and `ghatta demo`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ghatta_hal::{AnyBoard, LinuxBoard, ReplayBoard, SimBoard, SimBoardState, SimFault};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{BoardConfig, NodeConfig};
use crate::field::{self, CustomerMap, FieldStats};
use crate::journal::Journal;
use crate::net::radio::multi::{MultiConfig, MultiTransport, Path};
use crate::net::radio::serial::SerialTransport;
use crate::net::tcp::TcpTransport;
use crate::net::transport::{Transport, inbound_queue};
use crate::node::{Node, NodeBuilder};
use crate::raft::PeerInfo;

/// How often the simulated board's physics advance.
pub const SIM_BOARD_STEP: Duration = Duration::from_millis(100);

/// Why a node did not start from its config; each says which config key or resource, and
/// what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// No `key_file` and no `allow_unsealed = true`.
    #[error(
        "config key key_file is not set: the links would be neither authenticated nor encrypted, and anyone who reaches raft_listen could vote, credit accounts or remove members; run `ghatta keygen --out /etc/ghatta/keys`, set key_file and every peer's public_key (or, on an isolated test bench only, set allow_unsealed = true)"
    )]
    Unsealed,
    /// `[board]` names a device that is missing or unusable.
    #[error("cannot open the board: config key board.{}: {}: {}", .0.device, .0.kind, .0.detail)]
    Board(ghatta_hal::HalError),
    /// `[board]`'s recordings did not open.
    #[error("cannot open the board's recordings (config keys board.grid, board.meters): {}: {}: {}", .0.device, .0.kind, .0.detail)]
    Recordings(ghatta_hal::HalError),
    /// A radio modem did not open.
    #[error("config key radio[{index}].device: {source}")]
    Radio {
        /// Which `[[radio]]`.
        index: usize,
        /// Why.
        source: crate::net::radio::serial::RadioOpenError,
    },
    /// `raft_listen` could not bind.
    #[error(
        "cannot listen on raft_listen {addr}: {error}; is another node or another program using that port? (change raft_listen or stop it)"
    )]
    Listen {
        /// The address.
        addr: String,
        /// Why (in the message, not a `source`: an error chain would print it twice).
        error: std::io::Error,
    },
    /// The node's databases did not open.
    #[error(transparent)]
    Store(#[from] crate::storage::OpenError),
    /// The field journal did not open.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The config is inconsistent (keys, peers).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Sealing could not be set up.
    #[error(transparent)]
    Seal(#[from] crate::net::secure::SealSetupError),
    /// `[wan]`'s keys did not load.
    #[error(transparent)]
    Wan(#[from] crate::wan::config::WanKeyError),
    /// The node did not start.
    #[error(transparent)]
    Node(#[from] crate::node::StartError),
    /// The admin API could not start.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
}

/// A node started by [`start`], with its background tasks.
pub struct Running {
    /// The node.
    pub node: Node,
    /// Field loop counters.
    pub field: Arc<FieldStats>,
    /// The admin address actually bound.
    pub admin_addr: std::net::SocketAddr,
    /// The dashboard's address actually bound (`dashboard_listen`), if any.
    pub dashboard_addr: Option<std::net::SocketAddr>,
    /// The simulated board, when the node runs on one.
    pub sim_board: Option<SimBoard>,
    /// The field journal (meter reads waiting, telemetry history, relay events).
    pub journal: Journal,
    /// The WAN uploader (`[wan]`): uploads while this node leads, idles otherwise.
    pub uploader: Option<crate::wan::Uploader>,
    field_task: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop the field loop (no more samples or proposals); Raft keeps running.
    pub fn pause_field(&self) {
        if let Some(t) = &self.field_task {
            t.abort();
        }
    }

    /// Stop the node and its tasks.
    pub async fn stop(mut self) {
        // The uploader first: it proposes through the node.
        self.uploader = None;
        self.pause_field();
        for t in &self.tasks {
            t.abort();
        }
        self.node.shutdown().await;
    }
}

/// Open the board `[board]` names. A missing or unusable device is an error naming the
/// config key (`board.relays.gpiochip`, `board.modbus.port`, ...), the device and what to do.
fn open_board(cfg: &NodeConfig) -> Result<AnyBoard, RunError> {
    match &cfg.board {
        BoardConfig::Sim {
            customers,
            seed,
            first_customer,
            silent_meters,
            ..
        } => {
            let mut state = SimBoardState::demo(*customers, *seed ^ cfg.id);
            let map = CustomerMap {
                first_customer: *first_customer,
            };
            for board_id in silent_meters.iter().filter_map(|c| map.to_board(*c)) {
                state
                    .faults
                    .meters
                    .insert(board_id, SimFault::always(ghatta_hal::ErrorKind::Timeout));
            }
            Ok(AnyBoard::Sim(SimBoard::new(state)))
        }
        BoardConfig::Replay { grid, meters } => ReplayBoard::open(grid, meters.as_deref())
            .map(|b| AnyBoard::Replay(Box::new(b)))
            .map_err(RunError::Recordings),
        BoardConfig::Linux(linux) => LinuxBoard::open(linux)
            .map(|b| AnyBoard::Linux(Box::new(b)))
            .map_err(RunError::Board),
    }
}

/// Start a node from its configuration. Call inside `raft::Runtime::scope`.
pub async fn start(
    cfg: &NodeConfig,
    clock: Arc<dyn Clock>,
    seed: u64,
) -> Result<Running, RunError> {
    // Sealed or nothing: a forgotten key must stop the node, not open the grid.
    if cfg.key_file.is_none() && !cfg.allow_unsealed {
        return Err(RunError::Unsealed);
    }
    // The board first: a config naming a device that is not there must stop the node before
    // it binds ports or joins the cluster.
    let board = open_board(cfg)?;
    // Read the WAN key before anything binds, so a missing key file stops the start cleanly.
    let wan = cfg.wan.as_ref().map(|w| w.uploader_config()).transpose()?;
    // Radios next, for the same reason: a modem that is not there stops the start.
    let mut radios = Vec::new();
    for (i, r) in cfg.radio.iter().enumerate() {
        let (tx, rx) = inbound_queue();
        let radio = SerialTransport::open(cfg.id, r, tx)
            .map_err(|source| RunError::Radio { index: i, source })?;
        radios.push(Path {
            name: format!("radio:{}", r.device),
            transport: radio,
            reaches: Some(r.peers.iter().copied().collect()),
            inbound: rx,
        });
    }
    // Both ports before the data directory: a port another program holds must stop the start
    // before Raft bootstraps and writes a database a later, corrected start would find.
    let listener = tokio::net::TcpListener::bind(&cfg.raft_listen)
        .await
        .map_err(|error| RunError::Listen {
            addr: cfg.raft_listen.clone(),
            error,
        })?;
    let admin = crate::admin::bind(&cfg.admin_listen).await?;
    let dashboard = match &cfg.dashboard_listen {
        Some(addr) => Some(crate::admin::bind_key("dashboard_listen", addr).await?),
        None => None,
    };
    let cache_bytes = cfg.storage.cache_bytes();
    let stores = crate::storage::open_dir_cached(&cfg.data_dir, cache_bytes)?;
    let journal = Journal::open_dir_cached(&cfg.data_dir, cfg.field.journal.clone(), cache_bytes)?;
    let (tx, rx) = inbound_queue();
    let transport: Arc<dyn Transport> = if radios.is_empty() {
        TcpTransport::start(listener, tx)
    } else {
        // TCP first (preferred while it carries traffic), then each radio; sealing (below)
        // wraps them all, so every path carries sealed frames.
        let (tcp_tx, tcp_rx) = inbound_queue();
        let mut paths = vec![Path {
            name: "tcp".into(),
            transport: TcpTransport::start(listener, tcp_tx),
            reaches: None,
            inbound: tcp_rx,
        }];
        paths.extend(radios);
        // Sealed, a path is fresh only for frames that opened (a spoofed header on one
        // link cannot keep traffic off another).
        let multi = MultiConfig {
            verified: cfg.key_file.is_some(),
            ..MultiConfig::default()
        };
        MultiTransport::start(cfg.id, multi, paths, tx)
    };
    // Seal every frame on every link below (net/secure) when the node has a key.
    let (transport, rx) = match &cfg.key_file {
        Some(key_file) => {
            let link = crate::net::secure::link_from_files(
                cfg.id,
                &cfg.cluster_name,
                key_file,
                &cfg.data_dir,
                cfg.peer_keys()?,
            )?;
            let (t, rx) = crate::net::secure::SealedTransport::start(transport, rx, Arc::new(link));
            (t as Arc<dyn Transport>, rx)
        }
        None => {
            tracing::warn!(
                "node {}: allow_unsealed = true and no key_file: frames on the links are neither authenticated nor encrypted, and anyone who reaches raft_listen can vote; run `ghatta keygen --out DIR`, set key_file and every peer's public_key",
                cfg.id
            );
            (transport as Arc<dyn Transport>, rx)
        }
    };
    for p in cfg.peers.iter().filter(|p| p.id != cfg.id) {
        transport.set_peer_addr(p.id, &p.addr);
    }
    let mut builder = NodeBuilder::new(cfg.id, cfg.cluster_name.clone())
        .timing(cfg.timing())
        .actor_limits(cfg.actors.clone())
        .actor_signers(cfg.actor_signer_keys())
        .seed(seed)
        .clock(clock);
    if cfg.bootstrap {
        let members: BTreeMap<u64, PeerInfo> = cfg
            .peers
            .iter()
            .map(|p| {
                (
                    p.id,
                    PeerInfo {
                        addr: p.addr.clone(),
                    },
                )
            })
            .collect();
        builder = builder.initialize(members);
    }
    let node = builder.start(stores, transport, rx).await?;
    let admin_auth = crate::admin::auth::AdminAuth::load_or_create(&cfg.data_dir)?;
    let admin_addr = admin
        .local_addr()
        .map_err(|error| crate::admin::AdminError::Listen {
            key: "admin_listen",
            addr: cfg.admin_listen.clone(),
            error,
        })?;
    let dashboard_addr = dashboard.as_ref().and_then(|d| d.local_addr().ok());
    let mut tasks = Vec::new();
    let n = node.clone();
    let stats = Arc::new(FieldStats::default());
    // Nothing has failed yet: `status` before the loop's first sample says healthy.
    stats
        .grid_healthy
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let field_view = crate::admin::FieldView(Some(stats.clone()));
    let alarm_board = crate::notify::AlarmBoard::default();
    let alarm_reports = crate::notify::report::ReportQueue::default();
    let mut notifiers: Vec<Arc<dyn crate::notify::Notifier>> = Vec::new();
    if let Some(sms) = &cfg.sms {
        // A modem that cannot be opened stops nothing but its messages: the grid runs on.
        match crate::notify::sms::open(sms) {
            Ok(port) => {
                let (n, task) = crate::notify::SmsNotifier::spawn(
                    sms.clone(),
                    port,
                    cfg.id,
                    node.clock().clone(),
                    Some(Arc::new(crate::admin::accounts::Balances(
                        node.state_machine().clone(),
                    ))),
                );
                notifiers.push(Arc::new(n));
                tasks.push(task);
            }
            Err(e) => tracing::error!("{e}; alarms are not sent by SMS"),
        }
    }
    tasks.push(crate::notify::spawn(
        // Checked when node.toml was loaded; a config built in code falls back to defaults.
        crate::notify::AlarmRules::new(&cfg.alarms).unwrap_or_else(|e| {
            tracing::error!("{e}; the rules run at their default levels");
            crate::notify::AlarmRules::defaults()
        }),
        stats.clone(),
        Some(crate::notify::host::NodeGauges::new(
            node.clone(),
            cfg.data_dir.clone(),
            wan.is_some(),
        )),
        node.clock().clone(),
        alarm_board.clone(),
        notifiers,
        Some(alarm_reports.clone()),
    ));
    tasks.push(crate::notify::report::spawn(
        node.clone(),
        alarm_reports,
        crate::notify::EVALUATE_INTERVAL,
    ));
    let cockpit = crate::admin::cockpit::Cockpit::with_store(&cfg.data_dir, node.clock().now_ms())
        .with_alarms(alarm_board);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = crate::admin::serve_with_field(
            std::iter::once(admin).chain(dashboard).collect(),
            n,
            admin_auth,
            field_view,
            cockpit,
        )
        .await
        {
            tracing::error!(error = %e, "admin API stopped");
        }
    }));
    let uploader = wan.map(|w| crate::wan::Uploader::spawn(node.clone(), w));
    // The simulated board's physics advance on their own task; its customers are numbered
    // from `first_customer` and its plant may run `speed` times faster than real time.
    let mut field_cfg = cfg.field.clone().for_link(cfg.link_profile);
    let mut customers = CustomerMap::identity();
    let mut sim_board = None;
    if let (
        AnyBoard::Sim(board),
        BoardConfig::Sim {
            first_customer,
            speed,
            ..
        },
    ) = (&board, &cfg.board)
    {
        let speed = u64::from((*speed).max(1));
        let plant_step_ms = SIM_BOARD_STEP.as_millis() as u64 * speed;
        let stepper = board.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = tokio::time::interval(SIM_BOARD_STEP);
            loop {
                t.tick().await;
                stepper.step(plant_step_ms);
            }
        }));
        // The meter journaling interval is plant time: a village running `speed` times
        // faster than real time is billed as often per plant hour as a real one.
        field_cfg.meter_journal_interval_ms =
            (field_cfg.meter_journal_interval_ms / speed).max(field_cfg.meter_interval_ms);
        customers = CustomerMap {
            first_customer: *first_customer,
        };
        sim_board = Some(board.clone());
    }
    let field_task = Some(tokio::spawn(field::run_with(
        node.clone(),
        board,
        journal.clone(),
        field_cfg,
        customers,
        stats.clone(),
    )));
    Ok(Running {
        node,
        field: stats,
        admin_addr,
        dashboard_addr,
        sim_board,
        journal,
        uploader,
        field_task,
        tasks,
    })
}
