//! WAN resync in simulated time, through the sim crate's WAN link model (`ghatta_sim::wan`):
//! real `Node`s on SimNet and SimDisk (`simulate::measure::SimBed`), the real uploader
//! (`Uploader::spawn_via` with a connector over the link model) and the real central
//! (`CentralStore::serve`), all on the simulator's one paused-clock runtime.
//!
//! What is simulated and what is not:
//! - Seven days of records, not seven days of plant time: 168 rounds of meter reads for 300
//!   customers (one read each per round, plus telemetry), proposed through Raft as the field
//!   loop would, with every node's wall clock stepped one hour before each round (a clock
//!   step, as `SimClock` applies for clock faults), so each round's log time lies in its own
//!   hour and the state machine closes an hour of energy records (`Stream::Energy`) at every
//!   round. Between rounds the world runs 30 simulated seconds (Raft, the uploader retrying
//!   against the dead link), not an hour: a simulated plant day costs minutes of CPU.
//! - The WAN is down for the whole accumulation and comes back for the resync: 800 ms RTT
//!   (400 ms ± 50 ms each way), 256 kbit/s each way, and drops during the resync that break
//!   live connections and refuse connects: one of 4 s, 4 s after the uploader reconnected,
//!   and random ones from the seed (up periods of 6 s mean, down periods of 2 s mean). TCP's
//!   retransmission below the byte stream is not modelled packet by packet: the link is an
//!   ordered, reliable pipe that breaks.
//! - The central's redb lives in a temporary directory on the real disk: its ingest runs on
//!   tokio's blocking pool, and a pending `spawn_blocking` holds the paused clock (tokio's
//!   test-util inhibits auto-advance while one runs), so simulated time does not jump while it
//!   fsyncs. The `_on_postgres` variants store in a fresh database of the test server
//!   (`tests/it/pg.rs`): each query runs on a runtime with I/O from a blocking task of the
//!   simulator's (`PgStore::on_runtime`), so simulated time stands still while it answers too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ghatta::clock::Clock;
use ghatta::node::{Node, Role};
use ghatta::state::OutboxRecord;
use ghatta::wan::connector::Connector;
use ghatta::wan::{Stream, Uploader, UploaderConfig};
use ghatta_actor_sdk as sdk;
use ghatta_central::CentralStore;
use ghatta_sim::scenario::Scenario;
use ghatta_sim::time::DriftClock;
use ghatta_sim::wan::{WanLink, WanLinkConfig, WanListener};
use ghatta_simulate::central::SimWanConnector;
use ghatta_simulate::measure::{Bed, SimBed};
use ghatta_simulate::world::CALENDAR_START_UNIX_MS;
use tokio::time::{Duration, Instant};

use crate::harness::{field_batch, setup_inputs};
use crate::wan::{
    GRID, central_secret, check_exact_against, cursor, energy_hours, grid_secret, outbox, records,
    wait_synced,
};

/// One hour of log time, ms.
const HOUR_MS: i64 = 3_600_000;

/// A central (its redb in a temporary directory) at the far end of a satellite link made from
/// `seed`, serving every connection the link delivers.
struct SimCentral {
    store: CentralStore,
    link: WanLink,
    _dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

/// With `database`, the central stores in that PostgreSQL database instead of redb.
async fn sim_central(seed: u64, database: Option<String>) -> SimCentral {
    let dir = tempfile::tempdir().expect("tempdir");
    let grids = BTreeMap::from([(GRID, vec![grid_secret().public()])]);
    let store = match database {
        None => CentralStore::open(
            dir.path(),
            central_secret(),
            grids,
            ghatta_central::BACKFILL_AFTER_MS_DEFAULT,
        )
        .expect("central opens"),
        // The simulator's runtime has no I/O: the store's queries run on one that has.
        Some(url) => CentralStore::with_backend(
            ghatta_central::Backend::Postgres(
                crate::pg::on_io(async move {
                    ghatta_central::PgStore::connect(
                        &url,
                        ghatta_central::BACKFILL_AFTER_MS_DEFAULT,
                    )
                    .await
                })
                .await
                .expect("the central connects to PostgreSQL")
                .on_runtime(crate::pg::io_runtime()),
            ),
            central_secret(),
            grids,
        ),
    };
    let (link, listener) = WanLink::new(WanLinkConfig::satellite(), seed).expect("link");
    SimCentral {
        _task: serve_central(store.clone(), listener),
        store,
        link,
        _dir: dir,
    }
}

/// Serve every connection the link delivers.
fn serve_central(store: CentralStore, mut listener: WanListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Some((rd, wr)) = listener.accept().await {
            n += 1;
            let store = store.clone();
            tokio::spawn(async move { store.serve(rd, wr, &format!("sim-wan#{n}")).await });
        }
    })
}

/// Real nodes on LAN links (the grid's own Wi-Fi is not what is tested here).
async fn grid(nodes: u32, seed: u64) -> SimBed {
    let scenario = Scenario::parse(
        &format!(
            "name = \"wan-sim\"\nduration_s = 60\n[nodes]\ncount = {nodes}\n[links.default]\npreset = \"lan\"\n"
        ),
        "wan_sim.rs",
    )
    .expect("scenario parses");
    let timing = ghatta_simulate::timing_for(&scenario.default_link());
    SimBed::start(&scenario, seed, timing)
        .await
        .expect("sim nodes start")
}

/// The node every running node follows, once one leads.
async fn leader(bed: &SimBed, within: Duration) -> Node {
    let deadline = Instant::now() + within;
    loop {
        if let Some(n) = bed
            .nodes()
            .values()
            .find(|n| n.status().role == Role::Leader)
        {
            return n.clone();
        }
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One node leading a grid of 20 customers, a central at the end of a satellite link from
/// `seed`, and the real uploader to it.
async fn one_node_uploading(seed: u64) -> (SimBed, Node, SimCentral, Uploader) {
    let bed = grid(1, seed).await;
    let node = leader(&bed, Duration::from_secs(60)).await;
    node.propose_inputs(setup_inputs(20))
        .await
        .expect("setup commits");
    let sim = sim_central(seed, None).await;
    let up = Uploader::spawn_via(
        node.clone(),
        uploader_cfg(),
        Arc::new(SimWanConnector(sim.link.clone())),
    );
    (bed, node, sim, up)
}

/// Propose `rounds` of meter reads for `customers`, round `r` one second into hour `r` of log
/// time (every node's clock stepped forward to it, so whichever node leads stamps that hour),
/// with `gap` of simulated time between rounds. Returns the clock offset it left.
async fn hourly_rounds(
    bed: &SimBed,
    rounds: std::ops::Range<u64>,
    customers: u32,
    gap: Duration,
    mut offset_ms: i64,
) -> i64 {
    let per_round = (customers as usize * 10).div_ceil(9);
    for round in rounds {
        let clocks: Vec<_> = bed
            .nodes()
            .keys()
            .map(|id| bed.clock(*id).expect("clock"))
            .collect();
        let now = clocks[0].now_ms() as i64;
        let target = (CALENDAR_START_UNIX_MS + round * HOUR_MS as u64 + 1_000) as i64;
        assert!(
            target > now,
            "round {round}: the gap outran an hour of log time"
        );
        offset_ms += target - now;
        for c in &clocks {
            c.set(DriftClock {
                drift_ppm: 0,
                offset_ms,
            });
        }
        let node = leader(bed, Duration::from_secs(60)).await;
        node.propose_inputs(field_batch(round, per_round, customers, node.id()))
            .await
            .expect("field batch commits");
        tokio::time::sleep(gap).await;
    }
    offset_ms
}

/// The grid's outbox records: `before` (read before the upload, when nothing was
/// acknowledged and so nothing pruned) and whatever `node` added after it since.
fn grid_records(before: &[(u64, OutboxRecord)], node: &Node) -> Vec<(u64, OutboxRecord)> {
    let from = before.last().map_or(0, |(s, _)| s + 1);
    let mut all = before.to_vec();
    all.extend(
        node.state_machine()
            .outbox_from(from, usize::MAX)
            .expect("outbox reads"),
    );
    all
}

fn client_backoff_max() -> Duration {
    ghatta::wan::client::BACKOFF_MAX
}

fn uploader_cfg() -> UploaderConfig {
    let mut cfg = UploaderConfig::new(GRID, grid_secret(), central_secret().public(), "sim");
    cfg.rate_bytes_per_s = 32_000; // 256 kbit/s, the link's rate
    cfg
}

/// The central's hourly customer energy equals the grid's ledger charges of the closed hours
/// to the Wh (the open last hour has no record yet), and every closed hour is there.
async fn check_energy_hours(
    grid_outbox: &[(u64, OutboxRecord)],
    central: &CentralStore,
    hours: u64,
) {
    let rows = energy_hours(central).await;
    let closed_end = rows
        .iter()
        .map(|r| r.hour_start_ms)
        .max()
        .expect("energy hours")
        + HOUR_MS as u64;
    let customer_wh: u64 = rows
        .iter()
        .filter(|r| r.kind == "customer")
        .map(|r| r.energy_wh)
        .sum();
    let mut ledger_wh = 0;
    for (_, r) in grid_outbox {
        if let Some(sdk::Output::Ledger(l)) = sdk::codec::decode::<sdk::Output>(&r.output)
            && let Some((energy_wh, _, _)) = l.kind.charge()
            && r.time_ms < closed_end
        {
            ledger_wh += energy_wh;
        }
    }
    assert_eq!(
        customer_wh, ledger_wh,
        "hourly customer energy at the central vs the grid's charges"
    );
    let distinct: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.hour_start_ms).collect();
    assert_eq!(
        distinct.len() as u64,
        hours,
        "one set of records per closed hour"
    );
}

/// A grid offline for 7 days of log time (168 hourly rounds x 300 customers) reconnects over
/// an 800 ms RTT, 256 kbit/s satellite link that drops at random during the resync: every
/// record (ledger, events, hourly energy) reaches the central exactly once and in order per
/// stream, the central's totals and balances equal the grid's ledger to the Wh, and the
/// hourly energy of the closed hours equals the charges. Prints simulated and wall time, bytes
/// and bytes per record (`WAN_SIM_ROUNDS` and `WAN_SIM_CUSTOMERS` change the size;
/// `WAN_SIM_DROPS=0` keeps the link up through the resync, to measure bytes per record without
/// the resends drops cause).
#[test]
fn wan_sim_seven_days_offline_resync_over_800ms_256kbit_with_drops() {
    seven_days_offline(None);
}

/// As [`wan_sim_seven_days_offline_resync_over_800ms_256kbit_with_drops`], the central on
/// PostgreSQL.
#[test]
fn wan_sim_seven_days_offline_resync_on_postgres() {
    crate::pg::variant("wan_sim_seven_days_offline_on_postgres", |url| {
        seven_days_offline(Some(url))
    });
}

/// The seven-days test with the central on redb, or on a fresh database of the PostgreSQL
/// server `pg` names.
fn seven_days_offline(pg: Option<String>) {
    let seed = 1407;
    let rounds: u64 = std::env::var("WAN_SIM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(168);
    let customers: u32 = std::env::var("WAN_SIM_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let drops = std::env::var("WAN_SIM_DROPS").map_or(true, |v| v != "0");
    let rt = ghatta_sim::time::seeded_runtime(seed).expect("runtime");
    rt.block_on(ghatta::raft::Runtime::scope(seed, async move {
        let mut bed = grid(1, seed).await;
        let node = leader(&bed, Duration::from_secs(60)).await;
        node.propose_inputs(setup_inputs(customers))
            .await
            .expect("setup commits");
        let database = crate::pg::database_off_runtime(&pg, "ghatta_wan_sim_days").await;
        let sim = sim_central(seed, database).await;
        let (central, link) = (&sim.store, &sim.link);
        link.set_down();
        let up = Uploader::spawn_via(
            node.clone(),
            uploader_cfg(),
            Arc::new(SimWanConnector(link.clone())),
        );

        let t_acc = Instant::now();
        hourly_rounds(&bed, 1..rounds + 1, customers, Duration::from_secs(30), 0).await;
        let offline_s = t_acc.elapsed().as_secs();
        let refused = link.stats().refused;
        assert!(refused > 0, "the uploader kept trying while the WAN was down");
        assert_eq!(link.stats().connects, 0);
        for s in Stream::ALL {
            assert_eq!(cursor(central, s.id()).await, 0);
        }

        // The link comes back, and drops at random while the resync runs.
        let before_upload = outbox(&node);
        let before = link.stats();
        let errors_before = up.stats.session_errors.load(Relaxed);
        let outages_before = link.outages_started();
        let t0 = Instant::now();
        let wall = std::time::Instant::now();
        link.set_up();
        if drops {
            link.start_random_outages(6_000, 2_000).expect("valid means");
        }
        // The uploader's backoff reached its 60 s cap during the outage: its next attempt
        // comes within a minute. One drop surely lands mid-resync, 4 s after it connected;
        // the seed's random ones come on top.
        while link.stats().connects == before.connects {
            assert!(
                t0.elapsed() < client_backoff_max() + Duration::from_secs(30),
                "no connection within the backoff cap of the link's return"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reconnect_s = t0.elapsed().as_secs_f64();
        if drops {
            link.add_outage(Duration::from_secs(4), Duration::from_secs(4));
        }
        wait_synced(&node, central, Duration::from_secs(3_600)).await;
        let sim_s = t0.elapsed().as_secs_f64();
        let wall_s = wall.elapsed().as_secs_f64();
        let st = link.stats();
        let mut per_stream: Vec<usize> = Vec::new();
        for s in Stream::ALL {
            per_stream.push(records(central, s.id()).await.len());
        }
        let records: usize = per_stream.iter().sum();
        let errors = up.stats.session_errors.load(Relaxed) - errors_before;
        let up_bytes = st.bytes_up - before.bytes_up;
        let down_bytes = st.bytes_down - before.bytes_down;
        println!(
            "wan-sim-resync: {records} records ({per_stream:?} per stream {:?}) from {rounds} hourly rounds x {customers} customers, offline {offline_s} s simulated; first connect {reconnect_s:.1} s after the link returned (the uploader's backoff); synced {sim_s:.1} s simulated after the link returned ({:.1} s after the first connect), {wall_s:.1} s wall; {} drops broke {} connections, {} connects refused, {errors} failed sessions; {up_bytes} B up, {down_bytes} B down, {:.2} B/record up, {} batches",
            Stream::ALL,
            sim_s - reconnect_s,
            link.outages_started() - outages_before,
            st.broken - before.broken,
            st.refused - before.refused,
            up_bytes as f64 / records.max(1) as f64,
            up.stats.batches_sent.load(Relaxed),
        );
        assert!(
            !drops || (st.broken > before.broken && errors >= 1),
            "the drops must break sessions mid-resync (broken {}, session errors {errors})",
            st.broken - before.broken
        );
        let expected = grid_records(&before_upload, &node);
        let ledger = check_exact_against(&expected, central).await;
        assert!(
            ledger >= (rounds as usize) * customers as usize,
            "one charge per customer per round at least: {ledger}"
        );
        check_energy_hours(&expected, central, rounds - 1).await;
        println!(
            "wan-sim-resync: the grid keeps {} of its {} outbox records (acknowledged ones older than a day pruned)",
            outbox(&node).len(),
            expected.len()
        );
        drop(up);
        bed.stop().await;
    }));
}

/// Issue 25: a grid offline for nine days folds what is older than its week of detail
/// (`ghatta::state::fold`). When its WAN returns, the real uploader sends the folded days with
/// the detail, through drops that make it resend, and the central's totals equal what the
/// meter reads charged (counted here from the inputs alone): the fleet view's sums (energy
/// billed, revenue) and energy per day (the closed hours). A folded day left out of a total
/// loses two days of charges; one counted twice adds them again.
#[test]
fn wan_sim_a_grid_that_folded_offline_adds_up_at_the_central() {
    folded_offline(None);
}

/// As [`wan_sim_a_grid_that_folded_offline_adds_up_at_the_central`], the central on
/// PostgreSQL.
#[test]
fn wan_sim_a_grid_that_folded_offline_adds_up_on_postgres() {
    crate::pg::variant("wan_sim_folded_on_postgres", |url| {
        folded_offline(Some(url))
    });
}

/// The folded-offline test with the central on redb, or on a fresh database of the
/// PostgreSQL server `pg` names.
fn folded_offline(pg: Option<String>) {
    use ghatta_central::{Store, TimeRange};
    const CUSTOMERS: u32 = 4;
    /// The setup's tariff (`setup_inputs`), mpaisa per Wh: 1,500 paisa per kWh.
    const MPAISA_PER_WH: i64 = 1_500;
    let seed = 1409;
    // Two days past the node's week of detail, so whole local days fold.
    let rounds = 24 * (ghatta::state::fold::OUTBOX_DETAIL_DAYS + 2);
    let rt = ghatta_sim::time::seeded_runtime(seed).expect("runtime");
    rt.block_on(ghatta::raft::Runtime::scope(seed, async move {
        let mut bed = grid(1, seed).await;
        let node = leader(&bed, Duration::from_secs(60)).await;
        node.propose_inputs(setup_inputs(CUSTOMERS))
            .await
            .expect("setup commits");
        let database = crate::pg::database_off_runtime(&pg, "ghatta_wan_sim_folded").await;
        let sim = sim_central(seed, database).await;
        let (central, link) = (&sim.store, &sim.link);
        link.set_down();
        let up = Uploader::spawn_via(
            node.clone(),
            uploader_cfg(),
            Arc::new(SimWanConnector(link.clone())),
        );
        hourly_rounds(&bed, 1..rounds + 1, CUSTOMERS, Duration::from_secs(5), 0).await;
        let before_upload = outbox(&node);
        let folded_days = before_upload
            .iter()
            .filter(|(_, r)| {
                matches!(
                    sdk::codec::decode::<sdk::Output>(&r.output),
                    Some(sdk::Output::Folded(f)) if f.totals.charged_wh > 0
                )
            })
            .count();
        assert!(
            folded_days > 0,
            "nine days offline folded no customer's day"
        );

        let connects = link.stats().connects;
        link.set_up();
        link.start_random_outages(6_000, 2_000)
            .expect("valid means");
        // One drop surely lands mid-resync, 2 s after the uploader reconnected.
        let t0 = Instant::now();
        while link.stats().connects == connects {
            assert!(
                t0.elapsed() < client_backoff_max() + Duration::from_secs(30),
                "no connection within the backoff cap of the link's return"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        link.add_outage(Duration::from_secs(2), Duration::from_secs(4));
        wait_synced(&node, central, Duration::from_secs(3_600)).await;
        assert!(
            link.stats().broken > 0,
            "the drops must break a session mid-resync, so records are resent"
        );
        check_exact_against(&grid_records(&before_upload, &node), central).await;

        // What the reads charged: each customer's last register less its first (the
        // baseline), through the last closed hour and through the last round.
        let per_round = (CUSTOMERS as usize * 10).div_ceil(9); // as `hourly_rounds`
        let (mut first, mut last) = (BTreeMap::new(), BTreeMap::new());
        let mut closed_wh = 0;
        for round in 1..=rounds {
            if round == rounds {
                closed_wh = last.iter().map(|(c, l)| l - first[c]).sum::<u64>();
            }
            for bytes in field_batch(round, per_round, CUSTOMERS, node.id()) {
                if let Some(sdk::Input::MeterRead(m)) = sdk::codec::decode::<sdk::Input>(&bytes) {
                    first.entry(m.customer.0).or_insert(m.total_wh);
                    last.insert(m.customer.0, m.total_wh);
                }
            }
        }
        let charged_wh: u64 = last.iter().map(|(c, l)| l - first[c]).sum();
        assert!(closed_wh > 0 && charged_wh > closed_wh);
        let b = central.backend();
        assert_eq!(
            b.ledger_sums(GRID, TimeRange::ALL).await.expect("sums"),
            (charged_wh, charged_wh as i64 * MPAISA_PER_WH),
            "the central's energy billed and revenue against the reads ({folded_days} folded days)"
        );
        let days = b.energy_per_day(GRID).await.expect("days");
        assert_eq!(
            days.iter().map(|d| d.1).sum::<u64>(),
            closed_wh,
            "the central's energy per day against the reads of the closed hours: {days:?}"
        );
        assert_eq!(
            days.len() as u64,
            ghatta::state::fold::OUTBOX_DETAIL_DAYS + 3,
            "nine days of hours from a local morning span ten local days: {days:?}"
        );
        drop(up);
        bed.stop().await;
    }));
}

/// The uploading leader of a 3-node grid crashes (process and disks, as `SimBed::crash` does)
/// with batches in flight on the simulated satellite link (800 ms RTT, 256 kbit/s): the new
/// leader's uploader resumes from the committed cursor, the central drops whatever arrives
/// twice, and it ends with every record exactly once, in order, totals equal to the ledger.
#[test]
fn wan_sim_leader_crash_mid_batch_new_leader_resumes() {
    leader_crash_mid_batch(None);
}

/// As [`wan_sim_leader_crash_mid_batch_new_leader_resumes`], the central on PostgreSQL.
#[test]
fn wan_sim_leader_crash_mid_batch_new_leader_resumes_on_postgres() {
    crate::pg::variant("wan_sim_leader_crash_on_postgres", |url| {
        leader_crash_mid_batch(Some(url))
    });
}

/// The simulated leader-crash test with the central on redb, or on a fresh database of the
/// PostgreSQL server `pg` names.
fn leader_crash_mid_batch(pg: Option<String>) {
    let seed = 1408;
    let rt = ghatta_sim::time::seeded_runtime(seed).expect("runtime");
    rt.block_on(ghatta::raft::Runtime::scope(seed, async move {
        let mut bed = grid(3, seed).await;
        let first = leader(&bed, Duration::from_secs(60)).await;
        first
            .propose_inputs(setup_inputs(100))
            .await
            .expect("setup commits");
        hourly_rounds(&bed, 1..25, 100, Duration::from_secs(5), 0).await;
        let before_upload = outbox(&first);
        let database = crate::pg::database_off_runtime(&pg, "ghatta_wan_sim_crash").await;
        let sim = sim_central(seed, database).await;
        let (central, link) = (&sim.store, &sim.link);
        let mut cfg = uploader_cfg();
        // Small batches, so a window of them is in flight when the leader dies.
        cfg.max_batch_raw_bytes = 4 * 1024;
        let connector: Arc<dyn Connector> = Arc::new(SimWanConnector(link.clone()));
        // Every node runs an uploader, as `ghatta run` with `[wan]` does; only the leader's
        // uploads.
        let mut uploaders: BTreeMap<u64, Uploader> = bed
            .nodes()
            .into_iter()
            .map(|(id, n)| (id, Uploader::spawn_via(n, cfg.clone(), connector.clone())))
            .collect();
        let leader_id = first.id();
        let end = first.state_machine().status().borrow().next_out_seq;
        // Crash once an ack is committed and at least two batches are unacknowledged.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let sent = uploaders[&leader_id].stats.batches_sent.load(Relaxed);
            let in_flight = sent.saturating_sub(central.stats().batches_acked);
            if first.state_machine().outbox_ack(Stream::Ledger.id()) > 0 && in_flight >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "no ack committed with batches in flight");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let at_central = cursor(central, Stream::Ledger.id()).await;
        assert!(
            at_central < end,
            "the crash must land before the end ({at_central} of {end})"
        );
        let committed = first.state_machine().outbox_ack(Stream::Ledger.id());
        drop(first);
        uploaders.remove(&leader_id);
        bed.crash(leader_id).await;
        let t_crash = Instant::now();

        let node = leader(&bed, Duration::from_secs(120)).await;
        assert_ne!(node.id(), leader_id, "a survivor leads");
        let failover_s = t_crash.elapsed().as_secs_f64();
        wait_synced(&node, central, Duration::from_secs(3_600)).await;
        let sent: u64 = uploaders
            .values()
            .map(|u| u.stats.records_sent.load(Relaxed))
            .sum();
        println!(
            "wan-sim-crash: leader {leader_id} crashed with ledger cursor {committed} committed, {at_central} at the central, outbox end {end}; new leader {} after {failover_s:.1} s simulated; the uploaders sent {sent} records in all; resync done {:.1} s after the crash",
            node.id(),
            t_crash.elapsed().as_secs_f64()
        );
        check_exact_against(&grid_records(&before_upload, &node), central).await;
        drop(uploaders);
        bed.stop().await;
    }));
}

/// A quiet grid: once everything is acknowledged and nothing new comes for
/// `SESSION_IDLE_CLOSE` (10 minutes), an uploader hangs up by itself, before the central's
/// 15-minute idle timeout would cut it off and count an error; it stays off the link while
/// there is nothing to send, and connects again when records come.
#[test]
fn wan_sim_a_quiet_grid_hangs_up_and_reconnects_when_records_come() {
    let seed = 1409;
    let rt = ghatta_sim::time::seeded_runtime(seed).expect("runtime");
    rt.block_on(ghatta::raft::Runtime::scope(seed, async move {
        let (mut bed, node, sim, up) = one_node_uploading(seed).await;
        let (central, link) = (&sim.store, &sim.link);
        let offset = hourly_rounds(&bed, 1..3, 20, Duration::from_secs(30), 0).await;
        wait_synced(&node, central, Duration::from_secs(600)).await;

        tokio::time::sleep(Duration::from_secs(40 * 60)).await;
        let hung_up = up.stats.sessions_idle_closed.load(Relaxed);
        let quiet = link.stats();
        println!(
            "quiet grid: {hung_up} idle sessions closed by the uploader, {} connects, central idle closes {}",
            quiet.connects,
            central.stats().idle_closed
        );
        assert!(hung_up >= 1, "no uploader session hung up in 40 quiet minutes");
        assert_eq!(
            central.stats().idle_closed,
            0,
            "the central had to cut off an idle grid"
        );
        assert_eq!(up.stats.session_errors.load(Relaxed), 0);
        // Off the link while quiet: ten more minutes, no new connection.
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        assert_eq!(link.stats().connects, quiet.connects, "reconnected with nothing to send");

        hourly_rounds(&bed, 3..4, 20, Duration::from_secs(1), offset).await;
        wait_synced(&node, central, Duration::from_secs(600)).await;
        assert!(
            link.stats().connects > quiet.connects,
            "the new records came over a new connection"
        );
        drop(up);
        bed.stop().await;
    }));
}

/// Regression: while the outbox grew by records one stream does not carry (every meter read
/// adds ledger lines, which the events and energy streams skip), each of those streams sent a
/// batch of no records at every look (`POLL_INTERVAL`) to move its cursor, each answered and
/// committed through Raft as an `OutboxAck`. Thirty simulated minutes of a field batch every
/// 5 s: the cursor-only batches are at most one per stream per
/// `client::CURSOR_ONLY_EVERY`, and every cursor still reaches the outbox's end.
#[test]
fn wan_sim_records_of_other_streams_cost_a_bounded_number_of_cursor_only_batches() {
    let seed = 1411;
    let rt = ghatta_sim::time::seeded_runtime(seed).expect("runtime");
    rt.block_on(ghatta::raft::Runtime::scope(seed, async move {
        let (mut bed, node, sim, up) = one_node_uploading(seed).await;
        let central = &sim.store;
        wait_synced(&node, central, Duration::from_secs(600)).await;
        let before = up.stats.cursor_only_batches_sent.load(Relaxed);
        let acks_before: u64 = Stream::ALL
            .iter()
            .map(|s| node.state_machine().outbox_ack(s.id()))
            .sum();
        let minutes = 30u64;
        let every = Duration::from_secs(5);
        let batches = minutes * 60 / every.as_secs();
        let started = Instant::now();
        for round in 1..=batches {
            node.propose_inputs(field_batch(round, 10, 20, node.id()))
                .await
                .expect("field batch commits");
            tokio::time::sleep_until(started + every * round as u32).await;
        }
        wait_synced(&node, central, Duration::from_secs(600)).await;
        let cursor_only = up.stats.cursor_only_batches_sent.load(Relaxed) - before;
        let acks_after: u64 = Stream::ALL
            .iter()
            .map(|s| node.state_machine().outbox_ack(s.id()))
            .sum();
        println!(
            "wan-sim-cursor-only: {batches} field batches in {minutes} simulated minutes: \
             {cursor_only} batches of no record, {} batches in all, {} records sent",
            up.stats.batches_sent.load(Relaxed),
            up.stats.records_sent.load(Relaxed),
        );
        assert!(acks_after > acks_before);
        let streams = Stream::ALL.len() as u64;
        let bound = streams * (minutes * 60 / ghatta::wan::client::CURSOR_ONLY_EVERY.as_secs() + 2);
        assert!(
            cursor_only <= bound,
            "{cursor_only} cursor-only batches in {minutes} minutes, over {bound}"
        );
        drop(up);
        bed.stop().await;
    }));
}
