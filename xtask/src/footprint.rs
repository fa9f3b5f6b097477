//! `cargo xtask footprint`: the resident memory of a running node, measured the way a board
//! sees it. Starts three `ghatta run` processes (one node each, simulated boards on loopback,
//! optionally under a runner such as qemu-user), loads the demo's set-up through the admin API
//! (three tariffs, billing and balancing settings, 300 customers), lets the field loops run,
//! and samples `VmRSS`, `VmHWM` and `Threads` from each process's `/proc/PID/status`.
//!
//! One process per node, not the in-process demo divided by three: on a board the node is a
//! process of its own, with its own copy of the runtime, allocator arenas and code pages.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};

/// Nodes started: the 3-node demo's shape.
const NODES: u64 = 3;
/// Customers per node (the demo's 300 in total).
const CUSTOMERS_PER_NODE: u32 = 100;
/// Plant time per real second, as in `ghatta demo`, so meters move and billing works.
const SIM_SPEED: u32 = 60;
/// How long to wait for a leader and a working admin API (qemu on a loaded machine is slow).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);
/// Between two samples of /proc.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a progress line is printed, s.
const PROGRESS_EVERY_S: u64 = 10;
/// Bound on one admin API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest admin API response read.
const HTTP_RESPONSE_MAX_BYTES: u64 = 1024 * 1024;

pub const USAGE: &str = "\
usage: cargo xtask footprint --binary PATH [--runner CMD] [--seconds N] [--curve-every S]
                         [--cache-kib K]

Starts three `ghatta run` processes on loopback (simulated boards, 100 customers each), loads the
demo's tariffs and customers through the admin API, runs N seconds (default 60) and prints each
process's VmRSS, VmHWM and thread count. --runner runs the binary under a command, e.g.
--runner \"qemu-aarch64 -L /usr/aarch64-linux-gnu\" (the figures then include qemu's own memory).
--curve-every S also prints each node's VmRSS every S seconds as a table (the curve over a long
run: where resident memory levels off). --cache-kib K writes `[storage] cache_kib = K` into each
node's config (default: the node's own default).
";

#[derive(Debug)]
pub struct FootprintArgs {
    binary: PathBuf,
    runner: Vec<String>,
    seconds: u64,
    /// Seconds between two rows of the printed curve; `None`: no curve.
    curve_every_s: Option<u64>,
    /// `[storage] cache_kib` for every node; `None`: the node's default.
    cache_kib: Option<u32>,
}

pub fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<FootprintArgs> {
    let mut binary = None;
    let mut runner = Vec::new();
    let mut seconds = 60;
    let mut curve_every_s = None;
    let mut cache_kib = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| anyhow!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--binary" => binary = Some(PathBuf::from(value("--binary")?)),
            "--runner" => {
                runner = value("--runner")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            }
            "--seconds" => {
                seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| anyhow!("--seconds: {e}"))?
            }
            "--curve-every" => {
                let s: u64 = value("--curve-every")?
                    .parse()
                    .map_err(|e| anyhow!("--curve-every: {e}"))?;
                ensure!(s > 0, "--curve-every must be at least 1 second");
                curve_every_s = Some(s);
            }
            "--cache-kib" => {
                cache_kib = Some(
                    value("--cache-kib")?
                        .parse()
                        .map_err(|e| anyhow!("--cache-kib: {e}"))?,
                );
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    let binary = binary.ok_or_else(|| anyhow!("--binary is required\n{USAGE}"))?;
    Ok(FootprintArgs {
        binary,
        runner,
        seconds,
        curve_every_s,
        cache_kib,
    })
}

/// One node's process and where to reach it.
struct NodeProc {
    id: u64,
    child: Child,
    admin: SocketAddr,
}

/// Per-process figures, KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    /// Anonymous memory: heap, stacks, wasm linear memory, redb's cache.
    anon_kib: u64,
    /// File-backed pages: the binary's code and data as far as touched (shared, reclaimable).
    file_kib: u64,
    threads: u64,
}

pub fn run(args: FootprintArgs) -> anyhow::Result<()> {
    let binary = fs::canonicalize(&args.binary)
        .with_context(|| format!("cannot find the binary {}", args.binary.display()))?;
    let dir = std::env::temp_dir().join(format!("ghatta-footprint-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut nodes = Vec::new();
    let result = measure(&args, &binary, &dir, &mut nodes);
    for n in &mut nodes {
        // SIGTERM, the way systemd stops a node; SIGKILL if it does not go.
        let _ = Command::new("kill")
            .args(["-TERM", &n.child.id().to_string()])
            .status();
    }
    for n in &mut nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(n.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
    // On failure the directory stays: the error names a node's log in it.
    if result.is_ok() {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

/// The node's binary, under the runner if one is given.
fn command(args: &FootprintArgs, binary: &Path) -> Command {
    match args.runner.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(binary);
            c
        }
        None => Command::new(binary),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn measure(
    args: &FootprintArgs,
    binary: &Path,
    dir: &Path,
    nodes: &mut Vec<NodeProc>,
) -> anyhow::Result<()> {
    let mut raft = Vec::new();
    let mut admin = Vec::new();
    for _ in 0..NODES {
        raft.push(free_port()?);
        admin.push(free_port()?);
    }
    // Sealed links, as on a board (`ghatta run` refuses to start without keys): one key pair
    // per node from the binary's own `keygen`.
    let mut public_keys = Vec::new();
    for id in 1..=NODES {
        let keys = dir.join(format!("keys-{id}"));
        let mut cmd = command(args, binary);
        cmd.arg("keygen").arg("--out").arg(&keys);
        let status = cmd
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {cmd:?}"))?;
        ensure!(status.success(), "{cmd:?} failed ({status})");
        let public = fs::read_to_string(keys.join("node.pub"))
            .with_context(|| format!("cannot read {}", keys.join("node.pub").display()))?;
        // The file's comment lines say what it is for; the key is the one line that is not.
        let key = public
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| anyhow!("{} holds no key", keys.join("node.pub").display()))?;
        public_keys.push(key.to_string());
    }
    let peers = (1..=NODES)
        .map(|id| {
            format!(
                "{{ id = {id}, addr = \"127.0.0.1:{}\", public_key = \"{}\" }}",
                raft[id as usize - 1],
                public_keys[id as usize - 1]
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    for id in 1..=NODES {
        let i = id as usize - 1;
        let cfg = dir.join(format!("node-{id}.toml"));
        let text = format!(
            "id = {id}\ncluster_name = \"footprint\"\ndata_dir = \"{}\"\n\
             key_file = \"{}\"\n\
             raft_listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
             link_profile = \"lan\"\nbootstrap = true\npeers = [{peers}]\n\
             [board]\nkind = \"sim\"\ncustomers = {CUSTOMERS_PER_NODE}\n\
             first_customer = {}\nseed = {id}\nspeed = {SIM_SPEED}\n{}",
            dir.join(format!("node-{id}")).display(),
            dir.join(format!("keys-{id}")).join("node.key").display(),
            raft[i],
            admin[i],
            i as u32 * CUSTOMERS_PER_NODE + 1,
            args.cache_kib
                .map(|k| format!("[storage]\ncache_kib = {k}\n"))
                .unwrap_or_default(),
        );
        fs::write(&cfg, text).with_context(|| format!("cannot write {}", cfg.display()))?;
        let log = fs::File::create(dir.join(format!("node-{id}.log")))?;
        let mut cmd = command(args, binary);
        cmd.args(["run", "--config"])
            .arg(&cfg)
            .env("GHATTA_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start node {id}: {cmd:?}"))?;
        nodes.push(NodeProc {
            id,
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], admin[i])),
        });
    }

    // Wait until node 1's admin API answers and names a leader.
    let started = Instant::now();
    loop {
        if let Ok(s) = http(nodes[0].admin, "GET", "/status", None, None)
            && s["leader"].as_u64().is_some()
        {
            break;
        }
        for n in nodes.iter_mut() {
            if let Ok(Some(status)) = n.child.try_wait() {
                bail!(
                    "node {} exited ({status}); its log is {}",
                    n.id,
                    dir.join(format!("node-{}.log", n.id)).display()
                );
            }
        }
        ensure!(
            started.elapsed() < STARTUP_TIMEOUT,
            "no leader within {} s",
            STARTUP_TIMEOUT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let leader_s = started.elapsed().as_secs_f64();

    // The demo's operator set-up (controller/src/cli/demo.rs), through the admin API.
    let a = nodes[0].admin;
    // Changes need the admin token the node wrote into its data directory at start.
    let token_file = dir.join("node-1").join("admin.token");
    let token = fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read the admin token {}", token_file.display()))?;
    let token = token.trim();
    let post = |path: &str, body: serde_json::Value| {
        http(a, "POST", path, Some(&body), Some(token))
            .with_context(|| format!("POST {path} {body}"))
    };
    post(
        "/tariff",
        serde_json::json!({"id": 1, "version": 1, "kind": "per_kwh", "rate_paisa_per_kwh": 1500}),
    )?;
    post(
        "/tariff",
        serde_json::json!({"id": 2, "version": 1, "kind": "tiered",
            "blocks": [[10000, 0], [50000, 800], [1000000000, 1200]], "period_charge_paisa": 5000}),
    )?;
    post(
        "/tariff",
        serde_json::json!({"id": 3, "version": 1, "kind": "flat", "bands": [[250, 500], [1000, 1500]]}),
    )?;
    post(
        "/billing-config",
        serde_json::json!({"utc_offset_min": 345, "friendly_start_min": 0,
            "friendly_end_min": 0, "disconnect_at_npr": 0}),
    )?;
    let priorities: Vec<(u64, u16)> = (1..=NODES)
        .flat_map(|n| (1..=4u16).map(move |f| (n, f)))
        .collect();
    post(
        "/balancing-config",
        serde_json::json!({"shed_below_mhz": 49200, "restore_above_mhz": 49800,
            "restore_margin_w": 1500, "restore_interval_ms": 30000, "priorities": priorities}),
    )?;
    for c in 1..=(NODES as u32 * CUSTOMERS_PER_NODE) {
        let node = u64::from((c - 1) / CUSTOMERS_PER_NODE + 1);
        let (prepaid, tariff, credit) = if c % 7 == 0 {
            (false, 2, 0)
        } else if c % 10 == 0 {
            (true, 1, 0)
        } else {
            (true, 1, 500)
        };
        post(
            "/customer",
            serde_json::json!({"id": c, "node": node, "prepaid": prepaid, "tariff": tariff,
                "connection_w": 250, "opening_credit_npr": credit}),
        )?;
    }
    let setup_s = started.elapsed().as_secs_f64() - leader_s;

    // Run and sample.
    let mut peak = vec![Sample::default(); nodes.len()];
    let mut last = vec![Sample::default(); nodes.len()];
    // (seconds into the run, each node's sample) every `curve_every_s`.
    let mut curve: Vec<(u64, Vec<Sample>)> = Vec::new();
    let mut next_curve_s = args.curve_every_s;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(args.seconds) {
        std::thread::sleep(SAMPLE_INTERVAL);
        for (i, n) in nodes.iter_mut().enumerate() {
            if let Ok(Some(status)) = n.child.try_wait() {
                bail!("node {} exited during the run ({status})", n.id);
            }
            let s = sample(n.child.id())?;
            peak[i].rss_kib = peak[i].rss_kib.max(s.rss_kib);
            peak[i].threads = peak[i].threads.max(s.threads);
            last[i] = s;
        }
        if let Some(at) = next_curve_s.filter(|&at| t.elapsed().as_secs() >= at) {
            curve.push((at, last.clone()));
            next_curve_s = args.curve_every_s.map(|every| at + every);
        }
        if t.elapsed().as_secs().is_multiple_of(PROGRESS_EVERY_S) {
            let rss: Vec<String> = last
                .iter()
                .map(|s| format!("{:.1}", s.rss_kib as f64 / 1024.0))
                .collect();
            eprintln!(
                "footprint: t={:>4} s VmRSS (MiB) {}",
                t.elapsed().as_secs(),
                rss.join(" / ")
            );
        }
    }
    let status = http(a, "GET", "/status", None, None)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "footprint: {NODES} `ghatta run` processes{}, leader after {leader_s:.1} s, set-up \
         ({} customers) in {setup_s:.1} s, then {} s of field loops; node 1 at applied index \
         {}, {} customers",
        if args.runner.is_empty() {
            String::new()
        } else {
            format!(" under `{}`", args.runner.join(" "))
        },
        NODES as u32 * CUSTOMERS_PER_NODE,
        args.seconds,
        status["applied_index"],
        status["customers"],
    );
    let _ = writeln!(
        out,
        "| node | VmRSS at end (MiB) | of which anonymous | of which file-backed | VmRSS max \
         (MiB) | VmHWM (MiB) | threads max |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (i, n) in nodes.iter().enumerate() {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            n.id,
            mib(last[i].rss_kib),
            mib(last[i].anon_kib),
            mib(last[i].file_kib),
            mib(peak[i].rss_kib),
            mib(last[i].hwm_kib),
            peak[i].threads
        );
    }
    if !curve.is_empty() {
        let _ = writeln!(
            out,
            "\n| time (s) | VmRSS per node (MiB) | anonymous per node (MiB) |\n|---|---|---|"
        );
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        for (at, samples) in &curve {
            let rss: Vec<String> = samples.iter().map(|s| mib(s.rss_kib)).collect();
            let anon: Vec<String> = samples.iter().map(|s| mib(s.anon_kib)).collect();
            let _ = writeln!(out, "| {at} | {} | {} |", rss.join(" / "), anon.join(" / "));
        }
    }
    print!("{out}");
    Ok(())
}

/// VmRSS, VmHWM and Threads of a process.
fn sample(pid: u32) -> anyhow::Result<Sample> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("{path} has no {name}"))?;
        line[name.len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("{path}: cannot parse `{line}`"))
    };
    Ok(Sample {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:")?,
        file_kib: field("RssFile:")?,
        threads: field("Threads:")?,
    })
}

/// A minimal HTTP/1.1 request to the admin API; returns the JSON body of a 2xx answer.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("cannot connect to the admin API at {addr}"))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    s.take(HTTP_RESPONSE_MAX_BYTES)
        .read_to_end(&mut response)
        .with_context(|| format!("{method} {path}: reading the answer"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} {path}: malformed answer"))?;
    let status_line = head.lines().next().unwrap_or_default();
    ensure!(
        status_line
            .split_whitespace()
            .nth(1)
            .is_some_and(|c| c.starts_with('2')),
        "{method} {path}: {status_line}: {payload}"
    );
    // The admin API answers with a length, never chunked, for these small bodies.
    serde_json::from_str(payload.trim())
        .with_context(|| format!("{method} {path}: the answer is not JSON: {payload}"))
}
