//! `ghatta-central`: the data center's server. Grids upload their committed records here over
//! the WAN; the office queries them over HTTP on loopback.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ghatta_central::{BACKFILL_AFTER_MS_DEFAULT, Central, CentralConfig};
use ghatta_proto::keys::{self, PublicKey, SecretKey};
use ghatta_proto::wan::channel::AllowedGrids;

#[derive(Parser)]
#[command(
    name = "ghatta-central",
    version,
    about = "The central data center of ghatta grids: receive their WAN batches, store them, serve queries",
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
            (None, Some(args)) => tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
                .block_on(serve(args)),
            (None, None) => {
                anyhow::bail!(
                    "give --listen, --data, --key-file and --grid (see --help), or `keygen`"
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
