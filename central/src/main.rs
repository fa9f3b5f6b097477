//! `ghatta-central`: the data center's server. Grids upload their committed records here over
//! the WAN; the office queries them over HTTP on loopback.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::sync::Arc;

use ghatta_central::ops::{CheckReport, check_grids};
use ghatta_central::{
    BACKFILL_AFTER_MS_DEFAULT, Backend, Central, CentralConfig, PgStore, RedbStore,
};
use ghatta_proto::keys::{self, PublicKey, SecretKey};
use ghatta_proto::wan::channel::AllowedGrids;

#[derive(Parser)]
#[command(
    name = "ghatta-central",
    version,
    about = "The central data center of ghatta grids: receive their WAN batches, store them, serve queries",
    long_about = "The central data center of ghatta grids: receive their WAN batches, store them exactly once, serve queries and pages.\n\nTwo stores: the embedded redb file (the default: `--data DIR` alone, nothing to install) or PostgreSQL (`--database postgres://USER@HOST:PORT/DATABASE`, for an office that runs one: SQL, partitions by month, replicas).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: Option<CentralArgs>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make the central's key pair: DIR/node.key (0600) and DIR/node.pub; every grid's
    /// `wan.central_public_key` is the public half.
    Keygen {
        /// Where to write the key files (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Bring the store's schema to this build's: PostgreSQL's numbered migrations (a central
    /// also applies them at start), or redb's tables and indexes. Then exit.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check the store without changing it: it answers, its schema is this build's, and every
    /// grid uploaded within --lag-hours. Exit status 0 when all is well, 1 with a problem
    /// (each printed with what to do).
    Check {
        #[command(flatten)]
        store: StoreArgs,
        /// A grid with no upload for longer than this is a problem, hours.
        #[arg(long, default_value_t = ghatta_central::fleet::SILENT_HOURS_DEFAULT)]
        lag_hours: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which store a maintenance command works on.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The embedded store's directory (central.redb), as the central's --data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A PostgreSQL store: postgres://USER@HOST:PORT/DATABASE, as the central's --database.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

/// What the central serves with (the default command).
#[derive(Debug, clap::Args)]
struct CentralArgs {
    /// Where grids connect with their batches, host:port.
    #[arg(long)]
    listen: String,
    /// Directory for the embedded store (central.redb, the default: nothing to install) and
    /// the HTTP token file.
    #[arg(long)]
    data: PathBuf,
    /// Store in PostgreSQL instead of central.redb: postgres://USER@HOST:PORT/DATABASE. The
    /// schema's migrations are applied at start.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// HTTP/JSON query listener (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:7780")]
    http: String,
    /// The central's private key file, as `ghatta keygen --out DIR` writes it (DIR/node.key,
    /// mode 0600). Grids set its public half as `wan.central_public_key`.
    #[arg(long)]
    key_file: PathBuf,
    /// A grid allowed to upload and one of its public keys, `GRID_ID=PUBLIC_KEY` (base64 or
    /// hex, as `ghatta keygen` prints it); repeat per grid and per key (each node of a grid
    /// may upload with its own key).
    #[arg(long = "grid", value_name = "GRID=PUBLIC_KEY")]
    grids: Vec<String>,
    /// As --grid, with the public key read from a file (`node.pub`), `GRID_ID=PATH`.
    #[arg(long = "grid-pub-file", value_name = "GRID=PATH")]
    grid_pub_files: Vec<String>,
    /// Keep this many whole months before the current one and remove older records, ledger
    /// lines and energy hours, once at start and daily (PostgreSQL: detach and drop the
    /// monthly partitions; redb: delete the rows). Default: keep everything.
    #[arg(long, value_name = "MONTHS")]
    retention_months: Option<u32>,
    /// Records arriving later than this after their log time are marked back-fill, ms.
    #[arg(long, default_value_t = BACKFILL_AFTER_MS_DEFAULT)]
    backfill_after_ms: u64,
    /// The HTTP API's bearer token (64 hex digits, mode 0600), made at first start; default
    /// DATA/http.token. Every route but /v1/health needs `Authorization: Bearer <token>`.
    #[arg(long, value_name = "PATH")]
    http_token_file: Option<PathBuf>,
    /// A host name the HTTP API answers to besides localhost, 127.0.0.1 and [::1] (the name
    /// a reverse proxy forwards under); repeat for more. Requests naming any other host are
    /// refused (DNS rebinding).
    #[arg(long = "http-host", value_name = "NAME")]
    http_hosts: Vec<String>,
}

/// Parse `GRID=PUBLIC_KEY` arguments and `GRID=PATH` public-key-file arguments.
fn parse_grids(args: &[String], files: &[String]) -> anyhow::Result<AllowedGrids> {
    let mut grids = AllowedGrids::new();
    let mut add = |flag: &str, a: &str, key: &dyn Fn(&str) -> Result<PublicKey, String>| {
        let (g, k) = a
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{flag} `{a}` is not GRID=..."))?;
        let grid: u64 = g
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{flag} `{a}`: grid id `{g}` is not a number: {e}"))?;
        let key = key(k.trim()).map_err(|e| anyhow::anyhow!("{flag} for grid {grid}: {e}"))?;
        let keys = grids.entry(grid).or_default();
        if keys.contains(&key) {
            anyhow::bail!("{flag}: grid {grid} lists key {key} twice; keep one");
        }
        keys.push(key);
        Ok(())
    };
    for a in args {
        add("--grid", a, &|k| {
            PublicKey::parse(k).map_err(|e| e.to_string())
        })?;
    }
    for a in files {
        add("--grid-pub-file", a, &|p| {
            keys::load_public(std::path::Path::new(p)).map_err(|e| e.to_string())
        })?;
    }
    if grids.is_empty() {
        anyhow::bail!(
            "no --grid (or --grid-pub-file) given: the central would refuse every grid; add --grid GRID=PUBLIC_KEY"
        );
    }
    Ok(grids)
}

/// `migrate`: apply what the store lacks, say where it stands.
async fn migrate(store: StoreArgs) -> anyhow::Result<ExitCode> {
    match (store.data, store.database) {
        (_, Some(url)) => {
            let pg = PgStore::connect(&url, BACKFILL_AFTER_MS_DEFAULT).await?;
            let (applied, _) = pg.schema_version().await?;
            println!("PostgreSQL schema at version {applied} (this build's newest)");
        }
        (Some(dir), None) => {
            RedbStore::open(&dir, BACKFILL_AFTER_MS_DEFAULT)?;
            println!(
                "{}: tables made and indexes filled (redb has no numbered schema; a central does the same when it opens the file)",
                dir.join("central.redb").display()
            );
        }
        (None, None) => anyhow::bail!(
            "give --data DIR (the embedded store) or --database postgres://USER@HOST:PORT/DATABASE"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `check`: look at the store and the grids without changing anything.
async fn check(store: StoreArgs, lag_hours: u64, json: bool) -> anyhow::Result<ExitCode> {
    let mut report = CheckReport::default();
    let backend = match (store.data, store.database) {
        (_, Some(url)) => {
            let pg = PgStore::unmigrated(&url, BACKFILL_AFTER_MS_DEFAULT)?;
            match pg.schema_version().await {
                Err(e) => {
                    report.store = "PostgreSQL, unreachable".into();
                    report.problems.push(format!(
                        "cannot reach PostgreSQL at {url}: {e}; start the server (or fix --database postgres://USER@HOST:PORT/DATABASE) and check again"
                    ));
                    None
                }
                Ok((applied, known)) => {
                    report.store =
                        format!("PostgreSQL, schema version {applied} (this build's: {known})");
                    if applied < known {
                        report.problems.push(format!(
                            "the schema is at version {applied}, this build needs {known}: run `ghatta-central migrate --database {url}` (a central starting on it does the same)"
                        ));
                    } else if applied > known {
                        report.problems.push(format!(
                            "a newer ghatta-central migrated the schema to version {applied} (this build knows {known}): run that version"
                        ));
                    }
                    (applied > 0).then_some(Backend::Postgres(pg))
                }
            }
        }
        (Some(dir), None) => {
            let file = dir.join("central.redb");
            if !file.exists() {
                report.store = "redb, missing".into();
                report.problems.push(format!(
                    "no {}: give the central's --data directory",
                    file.display()
                ));
                None
            } else {
                match RedbStore::open(&dir, BACKFILL_AFTER_MS_DEFAULT) {
                    Ok(r) => {
                        report.store = format!("redb, {}", file.display());
                        Some(Backend::Redb(Arc::new(r)))
                    }
                    Err(e) => {
                        report.store = "redb, cannot open".into();
                        report.problems.push(format!(
                            "{e}; redb lets one process open the file: if the central is running, read GET /v1/grids from it instead, or stop it"
                        ));
                        None
                    }
                }
            }
        }
        (None, None) => anyhow::bail!(
            "give --data DIR (the embedded store) or --database postgres://USER@HOST:PORT/DATABASE"
        ),
    };
    if let Some(b) = backend {
        let now = ghatta_central::store::now_ms();
        if let Err(e) = check_grids(&b, now, lag_hours, &mut report).await {
            report
                .problems
                .push(format!("reading the grids failed: {e}"));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("store: {}", report.store);
        for g in &report.grids {
            println!(
                "grid {}: last upload {} s ago, WAN lag {} s",
                g.grid,
                g.since_upload_ms / 1_000,
                g.wan_lag_ms / 1_000
            );
        }
        for p in &report.problems {
            println!("PROBLEM: {p}");
        }
        if report.problems.is_empty() {
            println!("all well");
        }
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Serve until Ctrl-C.
async fn serve(args: CentralArgs) -> anyhow::Result<ExitCode> {
    let grids = parse_grids(&args.grids, &args.grid_pub_files)?;
    let secret = SecretKey::load(&args.key_file).map_err(|e| anyhow::anyhow!("--key-file: {e}"))?;
    let central = Central::start(CentralConfig {
        listen: args.listen,
        http_listen: args.http,
        data_dir: args.data,
        database: args.database,
        secret,
        grids,
        backfill_after_ms: args.backfill_after_ms,
        http_token_file: args.http_token_file,
        http_hosts: args.http_hosts,
        retention_months: args.retention_months,
    })
    .await?;
    println!(
        "central: grids connect to {}, queries on http://{}/v1/grids/<grid> (bearer token in {}), public key {}",
        central.batch_addr,
        central.http_addr,
        central.http_access.path().display(),
        central.public_key()
    );
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| anyhow::anyhow!("cannot wait for Ctrl-C: {e}"))?;
    drop(central);
    Ok(ExitCode::SUCCESS)
}
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GHATTA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let run = || -> anyhow::Result<ExitCode> {
        match (cli.cmd, cli.serve) {
            (Some(Cmd::Keygen { out }), _) => {
                let g = keys::generate_into(&out)?;
                println!(
                    "private key: {} (mode 0600; keep it on the central, pass it as --key-file)",
                    g.private_path.display()
                );
                println!("public key:  {}", g.public_path.display());
                println!(
                    "every grid's node.toml: [wan] central_public_key = \"{}\"",
                    g.public.to_base64()
                );
                Ok(ExitCode::SUCCESS)
            }
            (Some(Cmd::Migrate { store }), _) => runtime()?.block_on(migrate(store)),
            (
                Some(Cmd::Check {
                    store,
                    lag_hours,
                    json,
                }),
                _,
            ) => runtime()?.block_on(check(store, lag_hours, json)),
            (None, Some(args)) => runtime()?.block_on(serve(args)),
            (None, None) => {
                anyhow::bail!(
                    "give --listen, --data, --key-file and --grid (see --help), or `keygen`, `migrate` or `check`"
                )
            }
        }
    };
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
