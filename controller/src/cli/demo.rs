//! `ghatta demo`: three nodes on 127.0.0.1, each with a simulated plant of ~100 households,
//! one status line per second, a summary (or one JSON object) at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ghatta::clock::SystemClock;
use ghatta::config::{BoardConfig, NodeConfig};
use ghatta::field::FieldConfig;
use ghatta::net::LinkProfile;
use ghatta::node::Role;
use ghatta::runner::{self, Running};
use ghatta_actor_sdk as sdk;
use serde_json::json;

/// Demo arguments.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How long to run ("20s", "5m"); runs until Ctrl-C when absent.
    #[arg(long, value_parser = super::parse_duration)]
    duration: Option<Duration>,
    /// Print one JSON object at the end instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Nodes (each a plant with its households).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Customers in total, spread over the nodes.
    #[arg(long, default_value_t = 300)]
    customers: u32,
    /// Speed of the simulated plants relative to real time: 60 runs each village an hour per
    /// real minute, so meters and credit visibly move.
    #[arg(long, default_value_t = 60)]
    speed: u32,
    /// Also serve node 1's cockpit pages on this address (e.g. "0.0.0.0:8080" to open them
    /// to the LAN, where reading needs a login with node 1's admin token). Without it the
    /// pages are on node 1's admin listener, on loopback.
    #[arg(long)]
    dashboard_listen: Option<String>,
    /// Where the nodes keep their data (wiped at start).
    #[arg(long, default_value = "ghatta-demo")]
    dir: PathBuf,
    /// Upload committed records to a central (`ghatta-central --listen`), host:port.
    #[arg(long, requires_all = ["grid_key_file", "central_public_key"])]
    central: Option<String>,
    /// The grid's id at the central.
    #[arg(long, default_value_t = 1)]
    grid: u64,
    /// The grid's private key for the central (`ghatta keygen` node.key; the central lists its
    /// public half with `--grid GRID=KEY`). Every demo node uploads with it.
    #[arg(long)]
    grid_key_file: Option<PathBuf>,
    /// The central's public key (printed by `ghatta-central` at start).
    #[arg(long)]
    central_public_key: Option<String>,
    /// With --central: after the run, wait at most this long for the central to acknowledge
    /// every record before the summary ("60s").
    #[arg(long, default_value = "120s", value_parser = super::parse_duration)]
    wan_wait: Duration,
}

/// The demo's tariffs: NPR 15/kWh, a tiered tariff with the first 10 kWh free, a flat tariff.
fn tariffs() -> Vec<sdk::Input> {
    vec![
        sdk::Input::SetTariff(sdk::Tariff {
            id: 1,
            version: 1,
            kind: sdk::TariffKind::PerKwh {
                rate_paisa_per_kwh: 1_500,
            },
        }),
        sdk::Input::SetTariff(sdk::Tariff {
            id: 2,
            version: 1,
            kind: sdk::TariffKind::Tiered {
                blocks: vec![
                    sdk::TierBlock {
                        up_to_wh: 10_000,
                        rate_paisa_per_kwh: 0,
                    },
                    sdk::TierBlock {
                        up_to_wh: 50_000,
                        rate_paisa_per_kwh: 800,
                    },
                    sdk::TierBlock {
                        up_to_wh: u64::MAX,
                        rate_paisa_per_kwh: 1_200,
                    },
                ],
                period_charge_paisa: 5_000,
            },
        }),
        sdk::Input::SetTariff(sdk::Tariff {
            id: 3,
            version: 1,
            kind: sdk::TariffKind::Flat {
                bands: vec![
                    sdk::FlatBand {
                        up_to_w: 250,
                        daily_fee_paisa: 500,
                    },
                    sdk::FlatBand {
                        up_to_w: 1_000,
                        daily_fee_paisa: 1_500,
                    },
                ],
            },
        }),
    ]
}

/// Accounts: mostly prepaid per-kWh with NPR 500 credit; every tenth prepaid with no credit
/// (cut at its first charge, to show disconnection); every seventh postpaid tiered.
fn customer(id: u32, node: u64) -> sdk::Input {
    let (mode, tariff, credit_npr) = if id.is_multiple_of(7) {
        (sdk::AccountMode::Postpaid, 2, 0)
    } else if id.is_multiple_of(10) {
        (sdk::AccountMode::Prepaid, 1, 0)
    } else {
        (sdk::AccountMode::Prepaid, 1, 500)
    };
    sdk::Input::UpsertCustomer(sdk::CustomerSpec {
        id: sdk::CustomerId(id),
        node: sdk::NodeId(node),
        mode,
        tariff,
        connection_w: 250,
        opening_credit_mpaisa: credit_npr * ghatta::admin::dto::MPAISA_PER_NPR,
        token: None,
    })
}

/// Run the demo.
pub async fn run(args: DemoArgs, seed: u64) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!((1..=7).contains(&args.nodes), "--nodes must be 1 to 7");
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .map_err(|e| anyhow::anyhow!("cannot clear {}: {e}", args.dir.display()))?;
    }
    let per_node = args.customers / args.nodes as u32;
    // Throwaway keys, one pair per node, so the demo's links are sealed like a real grid's.
    let (peers, key_files) = super::loopback_peers_with_keys(&args.dir, args.nodes)?;
    // An operator's actor signing key, listed in every node's actor_signers, so
    // `ghatta actor deploy --sign-key DIR/operator.key` works against the demo.
    let operator = ghatta::actors::deploy::OperatorKey::generate()?;
    operator.write_new(&args.dir)?;
    let signer = ghatta::actors::deploy::signer_text(&operator.public());
    // The third actor is not in the binary: copy the module this build made (when run where
    // it was built) beside the key, to deploy.
    let dr_wasm = args.dir.join("demand-response.wasm");
    let dr_copied = std::fs::copy(
        ghatta::actors::embedded::DEMAND_RESPONSE_WASM_PATH,
        &dr_wasm,
    )
    .is_ok();
    let mut nodes: Vec<Running> = Vec::new();
    for id in 1..=args.nodes {
        let cfg = NodeConfig {
            id,
            cluster_name: "ghatta-demo".into(),
            data_dir: args.dir.join(format!("node-{id}")),
            raft_listen: peers[(id - 1) as usize].addr.clone(),
            admin_listen: "127.0.0.1:0".into(),
            dashboard_listen: if id == 1 {
                args.dashboard_listen.clone()
            } else {
                None
            },
            link_profile: LinkProfile::Lan,
            timing: None,
            // Node 1 alone forms the cluster; the others, started after it, join when it
            // reaches them. With every node bootstrapping, each campaigned as it came up
            // and the first leader was deposed by a later node's term, which openraft
            // reports with a WARN ("... no longer Leader") that reads as a fault.
            bootstrap: id == 1,
            peers: peers.clone(),
            actors: Default::default(),
            storage: Default::default(),
            board: BoardConfig::Sim {
                customers: per_node,
                first_customer: (id as u32 - 1) * per_node + 1,
                seed,
                speed: args.speed,
                silent_meters: Vec::new(),
            },
            field: FieldConfig::default(),
            radio: Vec::new(),
            key_file: Some(key_files[(id - 1) as usize].clone()),
            allow_unsealed: false,
            alarms: Default::default(),
            sms: None,
            wan: match (&args.central, &args.grid_key_file, &args.central_public_key) {
                (Some(central), Some(key_file), Some(central_key)) => {
                    Some(ghatta::wan::WanConfig {
                        grid: args.grid,
                        central: central.clone(),
                        key_file: key_file.clone(),
                        central_public_key: central_key.clone(),
                        // Loopback demo: no cap, so the upload keeps up with a 60x village.
                        rate_bytes_per_s: 0,
                        window_batches: ghatta::wan::client::WINDOW_BATCHES,
                    })
                }
                _ => None,
            },
            actor_signers: vec![signer.clone()],
        };
        nodes.push(runner::start(&cfg, Arc::new(SystemClock), seed ^ id).await?);
    }
    let say = |line: String| {
        if args.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    say(format!(
        "ghatta demo: {} nodes on 127.0.0.1 ({}), {} customers, data in {}",
        args.nodes,
        peers
            .iter()
            .map(|p| p.addr.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        per_node * args.nodes as u32,
        args.dir.display()
    ));
    // On stderr with --json too: a person reads it, the JSON on stdout stays one object.
    eprintln!(
        "dashboard: http://{}/",
        nodes[0].dashboard_addr.unwrap_or(nodes[0].admin_addr)
    );

    say(format!(
        "admin APIs: {}; deploy an actor with `ghatta actor deploy --admin {} --token-file {} --sign-key {} --name NAME --wasm FILE --version V`",
        nodes
            .iter()
            .map(|r| r.admin_addr.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        nodes[0].admin_addr,
        args.dir
            .join("node-1")
            .join(ghatta::admin::auth::TOKEN_FILE)
            .display(),
        args.dir
            .join(ghatta::actors::deploy::SIGNING_KEY_FILE)
            .display()
    ));

    if dr_copied {
        say(format!(
            "the demand-response actor (not compiled in) is at {}: --name demand-response --wasm {} --version 1",
            dr_wasm.display(),
            dr_wasm.display()
        ));
    }

    // Operator set-up, proposed through node 1 (forwarded to whoever leads).
    let mut setup = tariffs();
    setup.push(sdk::Input::SetBillingConfig(sdk::BillingConfig {
        utc_offset_min: 345,
        // No friendly hours in the demo, so zero-credit disconnection shows whatever the hour.
        friendly_start_min: 0,
        friendly_end_min: 0,
        disconnect_at_mpaisa: 0,
        plausible_margin_pct: sdk::PLAUSIBLE_MARGIN_PCT_DEFAULT,
    }));
    let feeders: Vec<sdk::FeederRef> = (1..=args.nodes)
        .flat_map(|n| {
            (1..=4u16).map(move |f| sdk::FeederRef {
                node: sdk::NodeId(n),
                feeder: f,
            })
        })
        .collect();
    setup.push(sdk::Input::SetBalancingConfig(sdk::BalancingConfig {
        nominal_mhz: 50_000,
        shed_below_mhz: 49_200,
        restore_above_mhz: 49_800,
        restore_margin_w: 1_500,
        restore_interval_ms: 30_000,
        priorities: feeders,
    }));
    for n in 1..=args.nodes {
        for c in 0..per_node {
            setup.push(customer((n as u32 - 1) * per_node + c + 1, n));
        }
    }
    let first = nodes[0].node.clone();
    for chunk in setup.chunks(100) {
        let encoded = chunk.iter().map(sdk::codec::encode).collect();
        first
            .propose_inputs(encoded)
            .await
            .map_err(|e| anyhow::anyhow!("demo set-up was not committed: {e}"))?;
    }

    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = super::wait_for_shutdown() => break,
        }
        let s: Vec<_> = nodes.iter().map(|r| r.node.status()).collect();
        let leader = s.iter().find(|x| x.role == Role::Leader);
        let freq = nodes
            .iter()
            .map(|r| r.field.frequency_mhz.load(Ordering::Relaxed))
            .sum::<u64>() as f64
            / nodes.len() as f64
            / 1000.0;
        let l = leader.unwrap_or(&s[0]);
        say(format!(
            "t={:>4}s leader={} term={} commit={} f={:.2}Hz customers: {} in credit / {} disconnected",
            started.elapsed().as_secs(),
            leader
                .map(|x| x.id.to_string())
                .unwrap_or_else(|| "-".into()),
            l.term,
            l.commit_index,
            freq,
            l.customers.saturating_sub(l.disconnected),
            l.disconnected
        ));
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
    }

    // Quiesce: stop the field loops' proposals, let the central catch up (its acks are
    // committed through Raft), then wait until every node applied the same index, so the
    // state hashes are comparable.
    for r in &nodes {
        r.pause_field();
    }
    let wan = if args.central.is_some() {
        Some(wan_drain(&nodes, args.wan_wait).await)
    } else {
        None
    };
    let (applied, hashes) = settle(&nodes).await;
    let s: Vec<_> = nodes.iter().map(|r| r.node.status()).collect();
    let leader = s.iter().find(|x| x.role == Role::Leader);
    let l = leader.unwrap_or(&s[0]);
    let freq_hz = nodes
        .iter()
        .map(|r| r.field.frequency_mhz.load(Ordering::Relaxed))
        .sum::<u64>() as f64
        / nodes.len() as f64
        / 1000.0;
    let equal = hashes.windows(2).all(|w| w[0] == w[1]) && applied.windows(2).all(|w| w[0] == w[1]);
    let summary = json!({
        "nodes": nodes.len(),
        "leader": leader.map(|x| x.id),
        "term": l.term,
        "commit_index": l.commit_index,
        "applied_index": applied,
        "state_hashes": hashes,
        "state_hashes_equal": equal,
        "frequency_hz": (freq_hz * 1000.0).round() / 1000.0,
        "customers": l.customers,
        "disconnected": l.disconnected,
        "outbox_records": l.outbox_len,
        "proposals_committed": nodes.iter().map(|r| r.field.proposals_committed.load(Ordering::Relaxed)).sum::<u64>(),
        "relay_actions": nodes.iter().map(|r| r.field.relay_actions.load(Ordering::Relaxed)).sum::<u64>(),
        "duration_s": started.elapsed().as_secs_f64(),
        "links_sealed": s.iter().all(|x| x.security.is_some()),
        "sealed_frames_opened": s.iter().filter_map(|x| x.security.as_ref()).map(|c| c.opened).sum::<u64>(),
        // Faults and attacks only: nothing hostile is on the demo's links, so 0 is expected.
        "sealed_frames_dropped": s.iter().filter_map(|x| x.security.as_ref()).map(|c| c.rejected()).sum::<u64>(),
        // Each node's first frames to a peer that has not heard it yet name no epoch of the
        // peer: dropped, answered with a hello, and sent again (net::secure). A few per pair
        // at start, not a fault.
        "sealed_frames_before_introduction": s.iter().filter_map(|x| x.security.as_ref()).map(|c| c.before_introduction).sum::<u64>(),
        "wan": wan,
    });
    for r in nodes {
        r.stop().await;
    }
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "summary: {} nodes, leader {}, term {}, commit index {}, state hashes {} at index {}, {} customers ({} disconnected), {} relay actions",
            summary["nodes"],
            summary["leader"],
            summary["term"],
            summary["commit_index"],
            if equal { "equal" } else { "DIFFERENT" },
            summary["applied_index"][0],
            summary["customers"],
            summary["disconnected"],
            summary["relay_actions"],
        );
        if summary["links_sealed"].as_bool() == Some(true) {
            println!(
                "links: sealed; {} frames opened, {} dropped as forged, replayed or stale; {} first frames sent again once the peers had introduced themselves (normal at start)",
                summary["sealed_frames_opened"],
                summary["sealed_frames_dropped"],
                summary["sealed_frames_before_introduction"],
            );
        }
        if let Some(w) = summary["wan"].as_object() {
            println!(
                "central: acknowledged outbox records up to {} of {} ({})",
                w["acked"],
                w["outbox_end"],
                if w["drained"].as_bool() == Some(true) {
                    "all uploaded"
                } else {
                    "NOT all uploaded"
                }
            );
        }
    }
    let wan_ok = summary["wan"]["drained"].as_bool().unwrap_or(true);
    Ok(if equal && wan_ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Wait until the central has acknowledged every outbox record on every stream (as
/// committed through Raft), at most `wait`; returns what the summary shows.
async fn wan_drain(nodes: &[Running], wait: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let sm = nodes[0].node.state_machine();
        let end = sm.status().borrow().next_out_seq;
        let acked: Vec<u64> = ghatta::wan::Stream::ALL
            .iter()
            .map(|s| sm.outbox_ack(s.id()))
            .collect();
        let drained = acked.iter().all(|&a| a >= end);
        if drained || tokio::time::Instant::now() >= deadline {
            if !drained {
                eprintln!(
                    "the central acknowledged outbox records up to {acked:?} of {end} within {wait:?}"
                );
            }
            // What the central should hold: the ledger records of the outbox.
            let ledger_records = sm
                .outbox_from(0, usize::MAX)
                .map(|v| {
                    v.iter()
                        .filter(|(_, r)| ghatta::wan::Stream::Ledger.carries(r))
                        .count()
                })
                .ok();
            return json!({
                "outbox_end": end,
                "acked": acked,
                "drained": drained,
                "ledger_records": ledger_records,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stop proposing and wait until all nodes applied the same index; return (applied, hashes).
async fn settle(nodes: &[Running]) -> (Vec<u64>, Vec<String>) {
    for r in nodes {
        r.pause_field();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s: Vec<_> = nodes.iter().map(|r| r.node.status()).collect();
        let applied: Vec<u64> = s.iter().map(|x| x.applied_index).collect();
        let done = applied.windows(2).all(|w| w[0] == w[1])
            && s.iter().all(|x| x.applied_index >= x.commit_index);
        if done || tokio::time::Instant::now() > deadline {
            return (applied, s.iter().map(|x| x.state_hash.clone()).collect());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
