//! `ghatta selftest`: what a technician runs after installing, on the board itself: the
//! embedded actors under wasmi with real inputs, a redb write/fsync/read cycle on the data
//! partition, a short 3-node cluster on loopback and the watchdog's health probes. One line per
//! check; the exit status is non-zero if any check failed.
//!
//! Everything it writes goes to a fresh subdirectory of the data directory, removed at the end,
//! so it is safe to run beside a running node (it uses its own free loopback ports). Timeouts
//! are generous because boards are slow, SD cards fsync slowly, and CI runs this under qemu.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use ghatta::actors::{ActorHost, ActorKind, ActorState, Effects, Status, embedded};
use ghatta::admin::dto::MPAISA_PER_NPR;
use ghatta::clock::SystemClock;
use ghatta::config::{NodeConfig, PeerConfig};
use ghatta::node::Role;
use ghatta::runner::{self, Running};
use ghatta::sd_notify::Health;
use ghatta_actor_sdk as sdk;
use redb::{Database, ReadableDatabase, TableDefinition};

/// Bytes written and read back by the storage check: a few pages, like a batch of log entries.
const STORAGE_PAYLOAD_BYTES: usize = 64 * 1024;
/// Commits in the storage check, each fsynced; their mean is the fsync time reported.
const STORAGE_COMMITS: u32 = 4;
/// The table the storage check writes (in its own scratch database, never the node's).
const SELFTEST_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("selftest");
/// Nodes in the cluster check: the smallest group with a quorum that survives one loss.
const CLUSTER_NODES: u64 = 3;
/// Simulated households per node in the cluster check: enough for the field loop to propose.
const CLUSTER_CUSTOMERS_PER_NODE: u32 = 2;
/// How often the cluster check polls the nodes' status.
const CLUSTER_POLL: Duration = Duration::from_millis(200);
/// A customer id far above any a grid uses, for the cluster check's proposal.
const SELFTEST_CUSTOMER: u32 = 4_000_000_001;
/// The health probes' bound in the watchdog check (the service's own comes from WatchdogSec).
const WATCHDOG_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// `ghatta selftest` arguments.
#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// Directory to test in (a temporary subdirectory is created there and removed). Default:
    /// the `data_dir` of --config, else the system's temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A node config to check (parse and validate) and whose `data_dir` to test.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Longest time the 3-node cluster check may take ("120s", "5m"); raise it on very slow
    /// boards or under emulation.
    #[arg(long, default_value = "120s", value_parser = super::parse_duration)]
    cluster_timeout: Duration,
}

/// Run every check, print a line for each, and fail if any failed.
pub async fn run(args: SelftestArgs, seed: u64) -> anyhow::Result<std::process::ExitCode> {
    let started = Instant::now();
    let mut report = Report::default();
    println!(
        "ghatta selftest {} ({}-{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    );

    let mut data_dir = args.data_dir.clone();
    if let Some(path) = &args.config {
        let checked = NodeConfig::load(path)
            .map(|cfg| {
                let detail = format!(
                    "{} is valid: node {} of cluster `{}`, raft on {}, data in {}",
                    path.display(),
                    cfg.id,
                    cfg.cluster_name,
                    cfg.raft_listen,
                    cfg.data_dir.display()
                );
                data_dir.get_or_insert(cfg.data_dir);
                detail
            })
            .map_err(|e| anyhow!("{e}"));
        report.record("config", checked);
    }
    let data_dir = data_dir.unwrap_or_else(std::env::temp_dir);
    let scratch = data_dir.join(format!("ghatta-selftest-{}", std::process::id()));
    println!("      scratch directory: {}", scratch.display());

    report.record("actors", check_actors_load());
    report.record("billing", check_billing());
    report.record("balancing", check_balancing());
    let scratch_ready = std::fs::create_dir_all(&scratch).with_context(|| {
        format!(
            "cannot create {}; run selftest as the service's user (sudo -u ghatta ghatta \
             selftest --config /etc/ghatta/node.toml) or pass --data-dir DIR naming a \
             writable directory on the data partition",
            scratch.display()
        )
    });
    match scratch_ready {
        Ok(()) => {
            report.record("storage", check_storage(&scratch.join("storage")));
            let cluster_dir = scratch.join("cluster");
            let cluster = check_cluster(&cluster_dir, seed, args.cluster_timeout).await;
            report.record("cluster", cluster);
            if let Err(e) = std::fs::remove_dir_all(&scratch) {
                println!(
                    "warn  could not remove {}: {e}; delete it by hand",
                    scratch.display()
                );
            }
        }
        Err(e) => {
            report.record("storage", Err(e));
            report.record(
                "cluster",
                Err(anyhow!("skipped: no writable scratch directory")),
            );
        }
    }

    let secs = started.elapsed().as_secs_f64();
    if report.failed.is_empty() {
        println!("selftest passed: {} checks in {secs:.1} s", report.passed);
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        println!(
            "selftest FAILED: {} of {} checks failed ({}) in {secs:.1} s; the lines marked FAIL \
             above say what to do",
            report.failed.len(),
            report.failed.len() + report.passed,
            report.failed.join(", ")
        );
        Ok(std::process::ExitCode::FAILURE)
    }
}

/// Tally of checks, printing each as it ends.
#[derive(Default)]
struct Report {
    passed: usize,
    failed: Vec<&'static str>,
}

impl Report {
    fn record(&mut self, name: &'static str, result: anyhow::Result<String>) {
        match result {
            Ok(detail) => {
                self.passed += 1;
                println!("ok    {name}: {detail}");
            }
            Err(e) => {
                self.failed.push(name);
                println!("FAIL  {name}: {e:#}");
            }
        }
    }
}

// ---- actors ----

fn host() -> anyhow::Result<ActorHost> {
    ActorHost::with_embedded(Default::default())
        .context("the embedded actors do not load; this binary is broken, reinstall it")
}

fn check_actors_load() -> anyhow::Result<String> {
    let t = Instant::now();
    host()?;
    Ok(format!(
        "balancing.wasm ({} bytes) and billing.wasm ({} bytes) compiled eagerly by wasmi in {} ms; \
         a wasm loop runs in constant native stack",
        embedded::BALANCING_WASM.len(),
        embedded::BILLING_WASM.len(),
        t.elapsed().as_millis()
    ))
}

/// Feeds inputs to one actor the way the state machine does, numbering log indexes.
struct Feeder {
    host: ActorHost,
    state: ActorState,
    log_index: u64,
}

impl Feeder {
    fn new() -> anyhow::Result<Feeder> {
        Ok(Feeder {
            host: host()?,
            state: ActorState::default(),
            log_index: 0,
        })
    }

    /// Deliver one input at a log time; returns the status and decoded outputs.
    fn deliver(
        &mut self,
        kind: ActorKind,
        at_ms: u64,
        input: sdk::Input,
    ) -> anyhow::Result<(Status, Vec<sdk::Output>)> {
        self.log_index += 1;
        let delivery = sdk::Delivery {
            ctx: sdk::Context {
                log_index: self.log_index,
                log_time_ms: at_ms,
                origin: sdk::NodeId(1),
            },
            input,
        };
        let (status, effects): (Status, Effects) =
            self.host
                .deliver(kind, &mut self.state, &sdk::codec::encode(&delivery));
        let outputs = effects
            .outputs
            .iter()
            .map(|o| {
                sdk::codec::decode::<sdk::Output>(o)
                    .ok_or_else(|| anyhow!("{} emitted an undecodable output", kind.name()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((status, outputs))
    }

    /// Deliver and require `Handled`, naming the step on failure.
    fn handled(
        &mut self,
        kind: ActorKind,
        at_ms: u64,
        step: &str,
        input: sdk::Input,
    ) -> anyhow::Result<Vec<sdk::Output>> {
        let (status, outputs) = self.deliver(kind, at_ms, input)?;
        ensure!(
            status == Status::Handled,
            "{step}: {} answered {status:?}, expected Handled",
            kind.name()
        );
        Ok(outputs)
    }
}

/// Log time of the actor checks: a fixed instant, so the check is the same on every run.
const CHECK_TIME_MS: u64 = 1_767_225_600_000;

fn check_billing() -> anyhow::Result<String> {
    let b = ActorKind::Billing;
    let mut f = Feeder::new()?;
    let customer = sdk::CustomerId(1);
    let rate_paisa_per_kwh = 1_500;
    f.handled(
        b,
        CHECK_TIME_MS,
        "SetTariff",
        sdk::Input::SetTariff(sdk::Tariff {
            id: 1,
            version: 1,
            kind: sdk::TariffKind::PerKwh { rate_paisa_per_kwh },
        }),
    )?;
    let opening = 100 * MPAISA_PER_NPR;
    f.handled(
        b,
        CHECK_TIME_MS,
        "UpsertCustomer",
        sdk::Input::UpsertCustomer(sdk::CustomerSpec {
            id: customer,
            node: sdk::NodeId(1),
            mode: sdk::AccountMode::Prepaid,
            tariff: 1,
            connection_w: 250,
            opening_credit_mpaisa: opening,
            token: None,
        }),
    )?;
    let read = |total_wh| {
        sdk::Input::MeterRead(sdk::MeterRead {
            customer,
            total_wh,
            read_at_ms: CHECK_TIME_MS,
        })
    };
    f.handled(b, CHECK_TIME_MS + 1_000, "first MeterRead", read(1_000))?;
    let used_wh = 2_000;
    let out = f.handled(
        b,
        CHECK_TIME_MS + 2_000,
        "second MeterRead",
        read(1_000 + used_wh),
    )?;
    // Wh times paisa per kWh is exactly milli-paisa (actors/sdk messages.rs).
    let charge = used_wh as i64 * i64::from(rate_paisa_per_kwh);
    let charged = out.iter().any(|o| {
        matches!(o, sdk::Output::Ledger(l) if l.customer == customer
            && l.balance_after_mpaisa == opening - charge
            && l.kind.charge().is_some_and(|(energy_wh, amount_mpaisa, _)|
                energy_wh == used_wh && amount_mpaisa == charge))
    });
    ensure!(
        charged,
        "the meter read did not produce the expected charge of {used_wh} Wh = {charge} mpaisa; \
         outputs: {out:?}"
    );
    let top_up = sdk::Input::TopUp(sdk::TopUp {
        customer,
        token_id: 42,
        amount_mpaisa: 50 * MPAISA_PER_NPR,
    });
    let out = f.handled(b, CHECK_TIME_MS + 3_000, "TopUp", top_up.clone())?;
    let credited = out.iter().any(|o| {
        matches!(o, sdk::Output::Ledger(l) if l.customer == customer
            && l.balance_after_mpaisa == opening - charge + 50 * MPAISA_PER_NPR
            && matches!(l.kind, sdk::LedgerKind::OperatorCredit { ref_id: 42, .. }))
    });
    ensure!(
        credited,
        "the top-up produced no ledger record with the expected balance; outputs: {out:?}"
    );
    let (status, _) = f.deliver(b, CHECK_TIME_MS + 4_000, top_up)?;
    ensure!(
        status == Status::Rejected(sdk::RejectReason::Replayed as i32),
        "a replayed top-up token was answered {status:?}, expected Rejected(Replayed)"
    );
    Ok(format!(
        "tariff, prepaid customer, 2 meter reads (charged {used_wh} Wh = NPR {}), top-up \
         credited, replayed token refused",
        charge as f64 / MPAISA_PER_NPR as f64
    ))
}

fn check_balancing() -> anyhow::Result<String> {
    let k = ActorKind::Balancing;
    let mut f = Feeder::new()?;
    let node = sdk::NodeId(1);
    let feeder = |n: u16| sdk::FeederRef { node, feeder: n };
    f.handled(
        k,
        CHECK_TIME_MS,
        "SetBalancingConfig",
        sdk::Input::SetBalancingConfig(sdk::BalancingConfig {
            nominal_mhz: 50_000,
            shed_below_mhz: 49_200,
            restore_above_mhz: 49_800,
            restore_margin_w: 1_500,
            restore_interval_ms: 30_000,
            priorities: vec![feeder(1), feeder(2)],
        }),
    )?;
    let telemetry = |frequency_mhz, generation_w| {
        sdk::Input::Telemetry(sdk::Telemetry {
            node,
            frequency_mhz,
            voltage_dv: 2_300,
            generation_w,
            ballast_w: 0,
            ballast_capacity_w: 10_000,
            feeders: vec![
                sdk::FeederLoad {
                    feeder: 1,
                    load_w: 6_000,
                    closed: true,
                },
                sdk::FeederLoad {
                    feeder: 2,
                    load_w: 4_000,
                    closed: true,
                },
            ],
        })
    };
    // 50 Hz with 5 kW to spare: the spare goes to ballast.
    let out = f.handled(
        k,
        CHECK_TIME_MS + 1_000,
        "Telemetry",
        telemetry(50_000, 15_000),
    )?;
    ensure!(
        out.iter().any(
            |o| matches!(o, sdk::Output::BallastSetpoint { node: n, setpoint_w } if *n == node && *setpoint_w > 0)
        ),
        "telemetry at 50 Hz with spare generation gave no ballast set-point; outputs: {out:?}"
    );
    // 48.9 Hz and generation short of the load: the lowest-priority feeder (2) is shed.
    let out = f.handled(
        k,
        CHECK_TIME_MS + 2_000,
        "Telemetry under frequency",
        telemetry(48_900, 8_000),
    )?;
    let shed = out.iter().any(|o| {
        matches!(o, sdk::Output::Relay(r) if r.node == node && !r.closed
            && r.relay == sdk::RelayId::Feeder(2))
    });
    ensure!(
        shed,
        "telemetry at 48.9 Hz with generation short gave no shed of feeder 2 (the lowest \
         priority); outputs: {out:?}"
    );
    Ok(
        "telemetry at 50 Hz sets ballast; at 48.9 Hz with generation short sheds the \
        lowest-priority feeder"
            .into(),
    )
}

// ---- storage ----

fn check_storage(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join("selftest.redb");
    let payload: Vec<u8> = (0..STORAGE_PAYLOAD_BYTES)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut fsync_total = Duration::ZERO;
    {
        let db = Database::create(&file).with_context(|| {
            format!(
                "cannot create a database in {}; is the data partition mounted read-write \
                 and not full?",
                dir.display()
            )
        })?;
        for i in 0..STORAGE_COMMITS {
            let t = Instant::now();
            let txn = db
                .begin_write()
                .context("cannot begin a write transaction")?;
            {
                let mut table = txn.open_table(SELFTEST_TABLE)?;
                table.insert(u64::from(i), payload.as_slice())?;
            }
            // redb's default durability fsyncs on commit: the cost the Raft log pays per entry.
            txn.commit().with_context(|| {
                format!(
                    "commit (fsync) to {} failed; the storage may be failing",
                    file.display()
                )
            })?;
            fsync_total += t.elapsed();
        }
    }
    // Reopen, so the data read back comes through the file, not the writer's cache.
    let db = Database::open(&file).with_context(|| format!("cannot reopen {}", file.display()))?;
    let txn = db.begin_read()?;
    let table = txn.open_table(SELFTEST_TABLE)?;
    for i in 0..STORAGE_COMMITS {
        let value = table
            .get(u64::from(i))?
            .ok_or_else(|| anyhow!("record {i} written to {} is missing", file.display()))?;
        ensure!(
            value.value() == payload.as_slice(),
            "record {i} read back from {} differs from what was written; the storage is \
             corrupting data: replace the SD card or disk",
            file.display()
        );
    }
    drop(table);
    drop(txn);
    drop(db);
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(format!(
        "{STORAGE_COMMITS} commits of {} KiB written, fsynced and read back in {}; mean commit \
         {} ms",
        STORAGE_PAYLOAD_BYTES / 1024,
        dir.display(),
        (fsync_total / STORAGE_COMMITS).as_millis()
    ))
}

// ---- cluster ----

/// A node config for the cluster check, written as TOML and parsed like an operator's, so
/// settings added to the schema later take their defaults here too.
fn node_config(
    id: u64,
    dir: &Path,
    peers: &[PeerConfig],
    key_file: &Path,
    seed: u64,
) -> anyhow::Result<NodeConfig> {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let own = peers
        .iter()
        .find(|p| p.id == id)
        .map(|p| p.addr.clone())
        .ok_or_else(|| anyhow!("node {id} is not among the peers"))?;
    let key_file = key_file
        .to_str()
        .ok_or_else(|| anyhow!("{} is not valid UTF-8", key_file.display()))?;
    let data_dir = dir.join(format!("node-{id}"));
    let data_dir = data_dir
        .to_str()
        .ok_or_else(|| anyhow!("{} is not valid UTF-8", data_dir.display()))?;
    let peer_list = peers
        .iter()
        .map(|p| {
            let key = p
                .public_key
                .as_deref()
                .map(|k| format!(", public_key = {}", quote(k)))
                .unwrap_or_default();
            format!("{{ id = {}, addr = {}{key} }}", p.id, quote(&p.addr))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let first_customer = (id as u32 - 1) * CLUSTER_CUSTOMERS_PER_NODE + 1;
    let text = format!(
        "id = {id}\n\
         cluster_name = \"ghatta-selftest\"\n\
         data_dir = {}\n\
         raft_listen = {}\n\
         admin_listen = \"127.0.0.1:0\"\n\
         link_profile = \"lan\"\n\
         bootstrap = true\n\
         key_file = {}\n\
         peers = [{peer_list}]\n\
         [board]\n\
         kind = \"sim\"\n\
         customers = {CLUSTER_CUSTOMERS_PER_NODE}\n\
         first_customer = {first_customer}\n\
         seed = {seed}\n",
        quote(data_dir),
        quote(&own),
        quote(key_file),
    );
    NodeConfig::parse(&text, "selftest node config").map_err(|e| anyhow!("{e}"))
}

async fn check_cluster(dir: &Path, seed: u64, timeout: Duration) -> anyhow::Result<String> {
    let mut nodes: Vec<Running> = Vec::new();
    let result = tokio::time::timeout(timeout, cluster_steps(dir, seed, &mut nodes)).await;
    for r in nodes {
        r.stop().await;
    }
    let outcome = match result {
        Ok(r) => r,
        Err(_) => Err(anyhow!(
            "did not finish within {} s; on a very slow board retry with --cluster-timeout 5m",
            timeout.as_secs()
        )),
    };
    if let Err(e) = std::fs::remove_dir_all(dir)
        && dir.exists()
    {
        println!("warn  could not remove {}: {e}", dir.display());
    }
    outcome
}

async fn cluster_steps(dir: &Path, seed: u64, nodes: &mut Vec<Running>) -> anyhow::Result<String> {
    let t0 = Instant::now();
    // Throwaway keys, so the check runs the links sealed, as a board with keys does.
    let (peers, key_files) = super::loopback_peers_with_keys(dir, CLUSTER_NODES)
        .context("cannot make the check's keys")?;
    for (id, key_file) in (1..=CLUSTER_NODES).zip(&key_files) {
        let cfg = node_config(id, dir, &peers, key_file, seed)?;
        let running = runner::start(&cfg, Arc::new(SystemClock), seed ^ id)
            .await
            .with_context(|| format!("node {id} did not start"))?;
        nodes.push(running);
    }

    // A leader every node agrees on.
    let leader = loop {
        let s: Vec<_> = nodes.iter().map(|r| r.node.status()).collect();
        let agreed = s[0].leader.filter(|l| {
            s.iter().all(|x| x.leader == Some(*l))
                && s.iter().any(|x| x.id == *l && x.role == Role::Leader)
        });
        if let Some(l) = agreed {
            break l;
        }
        tokio::time::sleep(CLUSTER_POLL).await;
    };
    let elected_s = t0.elapsed().as_secs_f64();

    // A proposal through a follower, forwarded to the leader and committed.
    let follower = nodes
        .iter()
        .find(|r| r.node.id() != leader)
        .ok_or_else(|| anyhow!("no follower in a {CLUSTER_NODES}-node cluster"))?;
    let follower_id = follower.node.id();
    let inputs = [
        sdk::Input::SetTariff(sdk::Tariff {
            id: 1,
            version: 1,
            kind: sdk::TariffKind::PerKwh {
                rate_paisa_per_kwh: 1_500,
            },
        }),
        sdk::Input::UpsertCustomer(sdk::CustomerSpec {
            id: sdk::CustomerId(SELFTEST_CUSTOMER),
            node: sdk::NodeId(follower_id),
            mode: sdk::AccountMode::Postpaid,
            tariff: 1,
            connection_w: 250,
            opening_credit_mpaisa: 0,
            token: None,
        }),
    ];
    let receipt = follower
        .node
        .propose_inputs(inputs.iter().map(sdk::codec::encode).collect())
        .await
        .map_err(|e| anyhow!("a proposal through follower {follower_id} was not committed: {e}"))?;
    ensure!(
        receipt.handled as usize == inputs.len() && receipt.trapped == 0,
        "the proposal committed at index {} but the actors handled {} of {} inputs ({} \
         rejected, {} trapped)",
        receipt.index,
        receipt.handled,
        inputs.len(),
        receipt.rejected,
        receipt.trapped
    );

    // Quiesce the field loops, then every node must apply the same index to the same hash.
    for r in nodes.iter() {
        r.pause_field();
    }
    let (index, hash) = loop {
        let s: Vec<_> = nodes.iter().map(|r| r.node.status()).collect();
        let same_index = s.iter().all(|x| x.applied_index == s[0].applied_index);
        let caught_up = s
            .iter()
            .all(|x| x.applied_index >= receipt.index && x.applied_index >= x.commit_index);
        if same_index && caught_up {
            if s.iter().any(|x| x.state_hash != s[0].state_hash) {
                let hashes: Vec<String> = s
                    .iter()
                    .map(|x| format!("node {}: {}", x.id, x.state_hash))
                    .collect();
                bail!(
                    "state hashes differ at index {}: {}; replicas diverged, report this with \
                     the node logs",
                    s[0].applied_index,
                    hashes.join(", ")
                );
            }
            break (s[0].applied_index, s[0].state_hash.clone());
        }
        tokio::time::sleep(CLUSTER_POLL).await;
    };

    // Every frame went sealed and came through the opener; none was refused.
    let mut opened = 0;
    for r in nodes.iter() {
        let sec = r.node.status().security.ok_or_else(|| {
            anyhow!(
                "node {} runs without sealed links although it has a key",
                r.node.id()
            )
        })?;
        ensure!(
            sec.forged + sec.unknown_sender + sec.unsealed + sec.truncated == 0,
            "node {}: sealed frames refused on loopback ({sec:?}); the keys do not match",
            r.node.id()
        );
        opened += sec.opened;
    }
    ensure!(opened > 0, "no sealed frame was opened");

    // The watchdog's probes pass on a live node and fail once it has stopped.
    let mut health = Health::new(Some(nodes[0].field.clone()), WATCHDOG_PROBE_TIMEOUT);
    health
        .check(&nodes[0].node)
        .await
        .map_err(|e| anyhow!("watchdog health probe failed on a live node: {e}"))?;
    let stopped = nodes.pop().ok_or_else(|| anyhow!("no node to stop"))?;
    let stopped_node = stopped.node.clone();
    stopped.stop().await;
    let mut health = Health::new(None, WATCHDOG_PROBE_TIMEOUT);
    ensure!(
        health.check(&stopped_node).await.is_err(),
        "the watchdog health probe still passes on a stopped node; systemd would not restart \
         a dead node"
    );

    Ok(format!(
        "{CLUSTER_NODES} nodes on loopback with sealed links ({opened} frames opened), leader \
         {leader} in {elected_s:.1} s, proposal via follower {follower_id} committed at index \
         {}, equal state hashes at index {index} ({}...), watchdog probes pass live and fail \
         stopped, {:.1} s",
        receipt.index,
        &hash[..hash.len().min(12)],
        t0.elapsed().as_secs_f64()
    ))
}
