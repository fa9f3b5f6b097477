//! `ghatta bench`: committed actor messages per second on a 3-node loopback cluster with
//! durable (fsynced) redb and batched proposals, commit latency p50/p99, and the ratio of wasmi
//! apply time to the same actor logic compiled natively.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ghatta::actors::{ActorHost, ActorKind, ActorLimits, ActorState};
use ghatta::net::tcp::TcpTransport;
use ghatta::net::transport::{Transport, inbound_queue};
use ghatta::node::{NodeBuilder, Role};
use ghatta::observe::CommitTimings;
use ghatta::raft::PeerInfo;
use ghatta_actor_sdk::{self as sdk, Actor, MemHost};
use serde_json::json;

/// Bench arguments.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// How long to drive the cluster.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    duration: Duration,
    /// Actor messages per proposal.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Proposals in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Deliveries for the wasmi/native comparison.
    #[arg(long, default_value_t = 20_000)]
    deliveries: usize,
    /// Customers in the billing state.
    #[arg(long, default_value_t = 300)]
    customers: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Also report where each node's commits took their time (log appends, fsyncs, applied
    /// batches, actor deliveries; `observe::CommitTimings`).
    #[arg(long)]
    timings: bool,
    /// Measure only the billing actor's apply time per meter read, per operator credit and
    /// per OpenPAYGO Token (under wasmi, no cluster), then exit.
    #[arg(long)]
    billing_apply: bool,
    /// With --billing-apply: the billing module to measure instead of the embedded one (an
    /// older build, for a before/after comparison; it gets no token inputs, which it cannot
    /// decode).
    #[arg(long)]
    billing_wasm: Option<std::path::PathBuf>,
}

/// Deliveries per measured kind in `--billing-apply`.
const BILLING_APPLY_DELIVERIES: u64 = 3_000;
/// Accounts `--billing-apply` spreads its deliveries over.
const BILLING_APPLY_CUSTOMERS: u32 = 300;

/// An encoded delivery to the billing actor. `old_spec`: encode an `UpsertCustomer` as a build
/// from before token keys reads it (the spec without its trailing `token` field, which as
/// `None` is one zero byte at the end of the delivery).
fn billing_delivery(i: u64, input: sdk::Input, old_spec: bool) -> Vec<u8> {
    let upsert_without_token =
        old_spec && matches!(&input, sdk::Input::UpsertCustomer(s) if s.token.is_none());
    let mut bytes = sdk::codec::encode(&sdk::Delivery {
        ctx: sdk::Context {
            log_index: i,
            log_time_ms: 1_700_000_000_000 + i * 1_000,
            origin: sdk::NodeId(1),
        },
        input,
    });
    if upsert_without_token {
        bytes.pop();
    }
    bytes
}

/// Mean µs per delivery of `inputs` to `host`'s billing actor, each starting at log index `i0`.
fn time_billing(
    host: &ActorHost,
    state: &mut ActorState,
    i0: u64,
    inputs: Vec<sdk::Input>,
    old_spec: bool,
) -> anyhow::Result<f64> {
    let n = inputs.len().max(1);
    let bytes: Vec<Vec<u8>> = inputs
        .into_iter()
        .enumerate()
        .map(|(k, input)| billing_delivery(i0 + k as u64, input, old_spec))
        .collect();
    let t = Instant::now();
    for b in &bytes {
        let (status, _) = host.deliver(ActorKind::Billing, state, b);
        anyhow::ensure!(
            status == ghatta::actors::Status::Handled,
            "billing answered {status:?} during the benchmark"
        );
    }
    Ok(t.elapsed().as_nanos() as f64 / n as f64 / 1e3)
}

/// Resolution of [`fuel_needed`]'s bisection, fuel.
const FUEL_RESOLUTION: u64 = 100;

/// The least fuel (within [`FUEL_RESOLUTION`]) billing needs for `bytes` in `state`, found by
/// bisection: the host counts no fuel, it only traps when it runs out.
fn fuel_needed(module: &[u8], state: &ActorState, bytes: &[u8]) -> anyhow::Result<f64> {
    let (mut lo, mut hi) = (0u64, ActorLimits::default().fuel_per_delivery);
    while lo + FUEL_RESOLUTION < hi {
        let mid = lo + (hi - lo) / 2;
        let limits = ActorLimits {
            fuel_per_delivery: mid,
            ..ActorLimits::default()
        };
        let host = ActorHost::new(limits, &[(ActorKind::Billing, module)])?;
        let mut s = state.clone();
        match host.deliver(ActorKind::Billing, &mut s, bytes).0 {
            ghatta::actors::Status::Trapped(_) => lo = mid,
            _ => hi = mid,
        }
    }
    Ok(hi as f64)
}

/// `ghatta bench --billing-apply`: the billing actor's apply time per input kind (µs), and
/// the fuel of single deliveries.
fn billing_apply(
    wasm: Option<&std::path::Path>,
) -> anyhow::Result<Vec<(&'static str, f64, &'static str)>> {
    let module = match wasm {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("cannot read the billing module {}", path.display()))?,
        None => ghatta::actors::embedded::BILLING_WASM.to_vec(),
    };
    let host = ActorHost::new(ActorLimits::default(), &[(ActorKind::Billing, &module)])?;
    let us = "µs per delivery";
    let old = wasm.is_some();
    let mut state = ActorState::default();
    let key = |c: u32| {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&c.to_le_bytes());
        k[8] = 0x5a;
        k
    };
    let mut setup = setup(BILLING_APPLY_CUSTOMERS);
    if !old {
        for s in setup.iter_mut() {
            if let sdk::Input::UpsertCustomer(spec) = s {
                spec.token = Some(sdk::TokenKey {
                    secret_key: key(spec.id.0),
                    starting_code: 100_000_000 + spec.id.0,
                    unit_mpaisa: 100_000,
                });
            }
        }
    }
    time_billing(&host, &mut state, 1, setup, old)?;
    let mut i = 10_000u64;
    let mut results = Vec::new();
    let n = BILLING_APPLY_DELIVERIES;
    let reads = |from: u64| -> Vec<sdk::Input> {
        (from..from + n)
            .map(|k| {
                sdk::Input::MeterRead(sdk::MeterRead {
                    customer: sdk::CustomerId((k % u64::from(BILLING_APPLY_CUSTOMERS)) as u32 + 1),
                    total_wh: 1_000 + k,
                    read_at_ms: 0,
                })
            })
            .collect()
    };
    results.push((
        "meter read",
        time_billing(&host, &mut state, i, reads(0), old)?,
        us,
    ));
    i += n;
    let credits = (0..n)
        .map(|k| {
            sdk::Input::TopUp(sdk::TopUp {
                customer: sdk::CustomerId((k % u64::from(BILLING_APPLY_CUSTOMERS)) as u32 + 1),
                token_id: 1 + k,
                amount_mpaisa: 100_000,
            })
        })
        .collect();
    results.push((
        "operator credit (amount)",
        time_billing(&host, &mut state, i, credits, old)?,
        us,
    ));
    i += n;
    if !old {
        // Tokens walk the chain from count 0 (as the reference decoder): their cost grows with
        // the account's count. Every account takes its add-credit tokens in order, 2 counts each.
        let rounds = n / u64::from(BILLING_APPLY_CUSTOMERS);
        for round in 0..rounds {
            let tokens: Vec<sdk::Input> = (1..=BILLING_APPLY_CUSTOMERS)
                .map(|c| {
                    let count = 2 * (round as u32 + 1);
                    let code = ghatta_billing::opaygo::encode(&key(c), 100_000_000 + c, 5, count);
                    sdk::Input::TokenTopUp(sdk::TokenTopUp {
                        customer: sdk::CustomerId(c),
                        code,
                    })
                })
                .collect();
            let t = time_billing(&host, &mut state, i, tokens, old)?;
            i += u64::from(BILLING_APPLY_CUSTOMERS);
            if round == 0 {
                results.push(("token at count 2", t, us));
            } else if round + 1 == rounds {
                results.push(("token, last round (count 20)", t, us));
            }
        }
        // One account far along: 500 tokens, then the cost of one more.
        let c = 1u32;
        let start = 2 * (rounds as u32 + 1);
        let walk: Vec<sdk::Input> = (0..500u32)
            .map(|k| {
                sdk::Input::TokenTopUp(sdk::TokenTopUp {
                    customer: sdk::CustomerId(c),
                    code: ghatta_billing::opaygo::encode(
                        &key(c),
                        100_000_000 + c,
                        5,
                        start + 2 * k,
                    ),
                })
            })
            .collect();
        let t = time_billing(&host, &mut state, i, walk, old)?;
        i += 1_000;
        results.push(("token, counts 22-1020 (mean)", t, us));
        let token = |c: u32, count: u32| {
            let code = ghatta_billing::opaygo::encode(&key(c), 100_000_000 + c, 5, count);
            let input = sdk::Input::TokenTopUp(sdk::TokenTopUp {
                customer: sdk::CustomerId(c),
                code,
            });
            billing_delivery(i, input, old)
        };
        let near = token(2, 2 * (rounds as u32 + 1));
        let far = token(1, start + 1_000);
        results.push((
            "fuel: token at count 22",
            fuel_needed(&module, &state, &near)?,
            "fuel",
        ));
        results.push((
            "fuel: token at count 1022",
            fuel_needed(&module, &state, &far)?,
            "fuel",
        ));
    }
    let read = billing_delivery(
        i,
        sdk::Input::MeterRead(sdk::MeterRead {
            // Customer 3 read 3,702 Wh last (in the first pass of reads): 98 Wh more.
            customer: sdk::CustomerId(3),
            total_wh: 3_800,
            read_at_ms: 0,
        }),
        old,
    );
    results.push((
        "fuel: meter read",
        fuel_needed(&module, &state, &read)?,
        "fuel",
    ));
    let credit = billing_delivery(
        i,
        sdk::Input::TopUp(sdk::TopUp {
            customer: sdk::CustomerId(3),
            token_id: 999_999,
            amount_mpaisa: 100_000,
        }),
        old,
    );
    results.push((
        "fuel: operator credit",
        fuel_needed(&module, &state, &credit)?,
        "fuel",
    ));
    results.push((
        "meter read (after the tokens)",
        time_billing(&host, &mut state, i + 1, reads(n), old)?,
        us,
    ));
    results.push(("module size", module.len() as f64, "bytes"));
    Ok(results)
}

fn setup(customers: u32) -> Vec<sdk::Input> {
    let mut v = vec![sdk::Input::SetTariff(sdk::Tariff {
        id: 1,
        version: 1,
        kind: sdk::TariffKind::PerKwh {
            rate_paisa_per_kwh: 1_500,
        },
    })];
    for id in 1..=customers {
        v.push(sdk::Input::UpsertCustomer(sdk::CustomerSpec {
            id: sdk::CustomerId(id),
            node: sdk::NodeId(1),
            mode: sdk::AccountMode::Postpaid,
            tariff: 1,
            connection_w: 250,
            opening_credit_mpaisa: 0,
            token: None,
        }));
    }
    v
}

/// The message mix of a field batch: one telemetry report per ten meter reads.
fn message(i: u64, customers: u32) -> sdk::Input {
    if i.is_multiple_of(11) {
        sdk::Input::Telemetry(sdk::Telemetry {
            node: sdk::NodeId(1 + i % 3),
            frequency_mhz: 49_950 + (i % 100) as u32,
            voltage_dv: 2_300,
            generation_w: 30_000,
            ballast_w: 4_000,
            ballast_capacity_w: 30_000,
            feeders: (1..=4)
                .map(|f| sdk::FeederLoad {
                    feeder: f,
                    load_w: 6_000,
                    closed: true,
                })
                .collect(),
        })
    } else {
        sdk::Input::MeterRead(sdk::MeterRead {
            customer: sdk::CustomerId((i % u64::from(customers)) as u32 + 1),
            total_wh: 1_000 + i,
            read_at_ms: 0,
        })
    }
}

fn route(input: &sdk::Input) -> ActorKind {
    ActorKind::for_input(input).unwrap_or(ActorKind::Billing)
}

/// ns per delivery: under wasmi with warm instances, with a fresh instance each, natively;
/// and the fixed cost of a trivial delivery, warm and fresh.
struct WasmVsNative {
    warm: f64,
    fresh: f64,
    native: f64,
    fixed_warm: f64,
    fixed_fresh: f64,
}

/// Time `n` deliveries under wasmi (warm instances, then fresh ones) and natively.
fn wasm_vs_native(n: usize, customers: u32) -> anyhow::Result<WasmVsNative> {
    let host = ActorHost::with_embedded(ActorLimits::default())?;
    let fresh = ActorHost::with_embedded(ActorLimits::default())?.with_fresh_instances();
    let mut state = ActorState::default();
    let (mut bal, mut bill) = (MemHost::default(), MemHost::default());
    let ctx = |i: u64| sdk::Context {
        log_index: i,
        log_time_ms: 1_700_000_000_000 + i * 1_000,
        origin: sdk::NodeId(1),
    };
    for (i, input) in setup(customers).into_iter().enumerate() {
        let d = sdk::Delivery {
            ctx: ctx(i as u64),
            input,
        };
        let _ = host.deliver(route(&d.input), &mut state, &sdk::codec::encode(&d));
        ghatta_billing::Billing::handle(&mut bill, &d);
    }
    let deliveries: Vec<(ActorKind, sdk::Delivery, Vec<u8>)> = (0..n as u64)
        .map(|i| {
            let d = sdk::Delivery {
                ctx: ctx(10_000 + i),
                input: message(i, customers),
            };
            let bytes = sdk::codec::encode(&d);
            (route(&d.input), d, bytes)
        })
        .collect();
    // Fixed cost of a delivery (instance, input copy, a trivial handle): a Noop.
    let noop = sdk::codec::encode(&sdk::Delivery {
        ctx: ctx(1),
        input: sdk::Input::Noop,
    });
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    let mut timed = Vec::new();
    for host in [&host, &fresh] {
        let mut state = state.clone();
        let t = Instant::now();
        for (kind, _, bytes) in &deliveries {
            let (status, _) = host.deliver(*kind, &mut state, bytes);
            anyhow::ensure!(
                !matches!(status, ghatta::actors::Status::Trapped(_)),
                "an actor trapped during the benchmark"
            );
        }
        let wasm = t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            let _ = host.deliver(ActorKind::Billing, &mut state, &noop);
        }
        timed.push((per(wasm), per(t.elapsed())));
    }
    let t = Instant::now();
    for (kind, d, bytes) in &deliveries {
        // The native path pays the same decode the wasm guest does.
        let d2: sdk::Delivery = sdk::codec::decode(bytes).unwrap_or_else(|| d.clone());
        match kind {
            ActorKind::Balancing => ghatta_balancing::Balancing::handle(&mut bal, &d2),
            ActorKind::Billing => ghatta_billing::Billing::handle(&mut bill, &d2),
            // Shipped by deployment, not linked natively: the bench makes no input for it.
            ActorKind::DemandResponse => continue,
        };
        bal.outputs.clear();
        bill.outputs.clear();
    }
    Ok(WasmVsNative {
        warm: timed[0].0,
        fresh: timed[1].0,
        native: per(t.elapsed()),
        fixed_warm: timed[0].1,
        fixed_fresh: timed[1].1,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Run the benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.billing_apply {
        let wasm = args.billing_wasm.clone();
        let results = tokio::task::spawn_blocking(move || billing_apply(wasm.as_deref())).await??;
        if args.json {
            let obj: serde_json::Map<String, serde_json::Value> = results
                .iter()
                .map(|(k, v, _)| ((*k).to_string(), json!(v)))
                .collect();
            println!("{}", serde_json::Value::Object(obj));
        } else {
            for (what, v, unit) in results {
                println!("{what:<40} {v:>12.1} {unit}");
            }
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        args.batch > 0 && args.concurrency > 0 && args.customers > 0,
        "batch, concurrency and customers must be positive"
    );
    let wvn = tokio::task::spawn_blocking({
        let (n, c) = (args.deliveries, args.customers);
        move || wasm_vs_native(n, c)
    })
    .await??;

    // A 3-node cluster on loopback with file-backed, fsynced redb.
    let tmp = tempfile::tempdir()?;
    let mut peers = BTreeMap::new();
    let mut listeners = Vec::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        peers.insert(
            id,
            PeerInfo {
                addr: l.local_addr()?.to_string(),
            },
        );
        listeners.push((id, l));
    }
    let mut nodes = Vec::new();
    let mut timings = Vec::new();
    for (id, listener) in listeners {
        let (tx, rx) = inbound_queue();
        let transport = TcpTransport::start(listener, tx);
        for (p, info) in &peers {
            if *p != id {
                transport.set_peer_addr(*p, &info.addr);
            }
        }
        let stores = ghatta::storage::open_dir(&tmp.path().join(format!("node-{id}")))?;
        let mut builder = NodeBuilder::new(id, "bench").initialize(peers.clone());
        if args.timings {
            let t = Arc::new(CommitTimings::default());
            builder = builder.commit_timings(t.clone());
            timings.push((id, t));
        }
        let node = builder.start(stores, transport, rx).await?;
        nodes.push(node);
    }
    let leader = loop {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            break n.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for chunk in setup(args.customers).chunks(200) {
        leader
            .propose_inputs(chunk.iter().map(sdk::codec::encode).collect())
            .await
            .map_err(|e| anyhow::anyhow!("setup: {e}"))?;
    }

    // The setup's commits are not the benchmark's.
    let before: Vec<Vec<(&str, u64)>> = timings.iter().map(|(_, t)| t.snapshot()).collect();
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (leader, batch, customers) = (leader.clone(), args.batch, args.customers);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut committed = 0u64;
            let mut i = w as u64 * 1_000_000;
            while Instant::now() < deadline {
                let inputs: Vec<Vec<u8>> = (0..batch)
                    .map(|k| sdk::codec::encode(&message(i + k as u64, customers)))
                    .collect();
                i += batch as u64;
                let t = Instant::now();
                if let Ok(r) = leader.propose_inputs(inputs).await {
                    lat.push(t.elapsed());
                    committed += u64::from(r.handled + r.rejected + r.trapped);
                }
            }
            (committed, lat)
        }));
    }
    let mut committed = 0u64;
    let mut lat = Vec::new();
    for w in workers {
        let (c, l) = w.await?;
        committed += c;
        lat.extend(l);
    }
    let elapsed = started.elapsed();
    let leader_id = leader.status().id;
    let breakdown: Vec<serde_json::Value> = timings
        .iter()
        .zip(&before)
        .map(|((id, t), b)| {
            let counters: serde_json::Map<String, serde_json::Value> = t
                .snapshot()
                .into_iter()
                .zip(b)
                .map(|((k, v), (_, v0))| (k.to_string(), json!(v.saturating_sub(*v0))))
                .collect();
            json!({ "node": id, "leader": *id == leader_id, "counters": counters })
        })
        .collect();
    lat.sort();
    for n in &nodes {
        n.shutdown().await;
    }
    let rate = committed as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let (wasm_ns, native_ns) = (wvn.warm, wvn.native);
    let ratio = wasm_ns / native_ns.max(1.0);
    if args.json {
        println!(
            "{}",
            json!({
                "committed_messages": committed,
                "seconds": elapsed.as_secs_f64(),
                "messages_per_s": rate,
                "proposals": lat.len(),
                "batch": args.batch,
                "concurrency": args.concurrency,
                "commit_latency_ms": { "p50": p50.as_secs_f64() * 1e3, "p99": p99.as_secs_f64() * 1e3 },
                "apply_ns_per_message": {
                    "wasmi": wasm_ns, "native": native_ns, "ratio": ratio,
                    "wasmi_fresh_instances": wvn.fresh,
                    "fixed_warm": wvn.fixed_warm, "fixed_fresh": wvn.fixed_fresh,
                },
                "timings": breakdown,
            })
        );
    } else {
        println!("| metric | value |");
        println!("|---|---|");
        println!(
            "| committed actor messages/s (3 nodes, fsynced redb, batch {}, {} in flight) | {:.0} |",
            args.batch, args.concurrency, rate
        );
        println!(
            "| proposals committed | {} ({} messages in {:.1} s) |",
            lat.len(),
            committed,
            elapsed.as_secs_f64()
        );
        println!(
            "| commit latency p50 / p99 (per batch) | {:.1} ms / {:.1} ms |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        println!(
            "| apply time per message: wasmi / native | {:.1} µs / {:.2} µs |",
            wasm_ns / 1e3,
            native_ns / 1e3
        );
        println!("| wasmi / native ratio | {ratio:.1}x |");
        println!(
            "| wasmi with a fresh instance per delivery | {:.1} µs |",
            wvn.fresh / 1e3
        );
        println!(
            "| fixed cost of a trivial delivery: warm / fresh instance | {:.1} µs / {:.1} µs |",
            wvn.fixed_warm / 1e3,
            wvn.fixed_fresh / 1e3
        );
        for node in &breakdown {
            println!("| timings | {node} |");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
