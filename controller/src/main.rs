//! The `ghatta` command: run a node, the 3-node demo, and the operator commands.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ghatta::admin::client;
use ghatta::clock::SystemClock;
use ghatta::config::NodeConfig;
use serde_json::json;

mod cli;

#[derive(Parser)]
#[command(
    name = "ghatta",
    version,
    about = "Controller firmware for village micro-hydro grids"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node from its config file.
    Run {
        /// The node's config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a local 3-node cluster on 127.0.0.1 with simulated boards and ~300 customers.
    Demo(cli::demo::DemoArgs),
    /// Make this node's key pair for sealed links: DIR/node.key (0600) and DIR/node.pub.
    Keygen {
        /// Where to write the key files (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a node's status.
    Status {
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        admin: String,
        #[command(flatten)]
        auth: cli::TokenArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the newest committed alarms (refused meter reads, replayed top-up tokens,
    /// unknown accounts, shed feeders), newest first.
    Alarms {
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        admin: String,
        #[command(flatten)]
        auth: cli::TokenArgs,
        /// How many, at most (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only those of the last this long ("1h", "30m"), by this machine's clock.
        #[arg(long, value_parser = cli::parse_duration)]
        since: Option<std::time::Duration>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the newest committed events (relay moves with their reasons, ledger lines:
    /// charges, fees, top-ups, disconnections; alarms), newest first.
    Events {
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        admin: String,
        #[command(flatten)]
        auth: cli::TokenArgs,
        /// How many, at most (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only those of the last this long ("1h", "30m"), by this machine's clock.
        #[arg(long, value_parser = cli::parse_duration)]
        since: Option<std::time::Duration>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change the cluster membership. Exit status: 0 committed, 1 refused (the reason is
    /// printed) or failed, 2 made but still in progress after the wait.
    Member {
        #[command(subcommand)]
        op: MemberCmd,
        /// Admin API address of any member.
        #[arg(long, global = true, default_value = "127.0.0.1:7100")]
        admin: String,
        /// The admin token file (default: `admin.token` in the data directory of --config).
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        /// The node's config, whose data directory holds the admin token.
        #[arg(long, global = true, default_value = cli::NODE_CONFIG_DEFAULT)]
        config: PathBuf,
    },
    /// Enter an OpenPAYGO Token (the 9-digit code from the office's SMS or slip) for a
    /// customer. Exit status 1 with the reason when billing refuses it (used, too old, not this
    /// customer's).
    Topup {
        /// Customer id.
        #[arg(long)]
        customer: u32,
        /// The token's code, as typed (up to 9 digits; spaces and dashes are ignored).
        #[arg(long)]
        code: String,
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        admin: String,
        /// The admin token file (default: `admin.token` in the data directory of --config).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The node's config, whose data directory holds the admin token.
        #[arg(long, default_value = cli::NODE_CONFIG_DEFAULT)]
        config: PathBuf,
    },
    /// Credit an account by amount, without a token: for migrating balances and correcting
    /// mistakes only. Needs the operator-credit permission (its own token file,
    /// `operator-credit.token` in the data directory) besides the admin token; recorded in the
    /// ledger as an operator credit.
    Credit {
        /// Customer id.
        #[arg(long)]
        customer: u32,
        /// Your reference for this credit (accepted once, ever: a retry is refused).
        #[arg(long = "ref")]
        ref_id: u64,
        /// Amount, whole rupees.
        #[arg(long)]
        amount: i64,
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        admin: String,
        /// The admin token file (default: `admin.token` in the data directory of --config).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The operator-credit token file (default: `operator-credit.token` beside it).
        #[arg(long)]
        credit_token_file: Option<PathBuf>,
        /// The node's config, whose data directory holds the token files.
        #[arg(long, default_value = cli::NODE_CONFIG_DEFAULT)]
        config: PathBuf,
    },
    /// Customer meters.
    Meter {
        #[command(subcommand)]
        op: MeterCmd,
        /// Admin API address.
        #[arg(long, global = true, default_value = "127.0.0.1:7100")]
        admin: String,
        /// The admin token file (default: `admin.token` in the data directory of --config).
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        /// The node's config, whose data directory holds the admin token.
        #[arg(long, global = true, default_value = cli::NODE_CONFIG_DEFAULT)]
        config: PathBuf,
    },
    /// Look up customers: their credit, supply, last meter read and ledger.
    Customer {
        #[command(subcommand)]
        op: CustomerCmd,
        /// Admin API address.
        #[arg(long, global = true, default_value = "127.0.0.1:7100")]
        admin: String,
        /// The admin token file (default: `admin.token` in the data directory of --config);
        /// a node answers reads from another machine only with it.
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        /// The node's config, whose data directory holds the admin token.
        #[arg(long, global = true, default_value = cli::NODE_CONFIG_DEFAULT)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Actor modules deployed through the log: deploy, list, rollback, keygen.
    Actor {
        #[command(subcommand)]
        op: cli::actor::ActorCmd,
    },
    /// Manage tariffs.
    Tariff {
        #[command(subcommand)]
        op: TariffCmd,
    },
    /// Measure committed actor messages per second, commit latency and wasmi/native speed.
    Bench(cli::bench::BenchArgs),
    /// Check this board after installing: actors, storage on the data partition, a 3-node cluster.
    Selftest(cli::selftest::SelftestArgs),
}

#[derive(Subcommand)]
enum MeterCmd {
    /// A customer's meter was replaced (or its register reset): bill the old one up to its
    /// final read, then bill from the new one's read.
    Replace {
        /// Customer id.
        #[arg(long)]
        customer: u32,
        /// The new meter's register when installed, Wh.
        #[arg(long)]
        new_read_wh: u64,
        /// The old meter's last register, Wh (leave out if it could not be read: nothing past
        /// its last billed read is charged).
        #[arg(long)]
        old_final_wh: Option<u64>,
    },
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Add a node as a learner: it must answer first (and, sealed, have its key listed);
    /// promote it once it has caught up.
    Add {
        /// Node id.
        #[arg(long)]
        id: u64,
        /// Its Raft address (host:port).
        #[arg(long)]
        addr: String,
    },
    /// Promote a caught-up learner to voter (added to the voters, never replacing them).
    Promote {
        /// Node id.
        #[arg(long)]
        id: u64,
    },
    /// Remove a node.
    Remove {
        /// Node id.
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand)]
enum CustomerCmd {
    /// List customers in id order, a page at a time.
    List {
        /// Only the customers billing has disconnected.
        #[arg(long)]
        disconnected: bool,
        /// Start after this customer id (the previous page's last).
        #[arg(long)]
        after: Option<u32>,
        /// How many, at most (1 to 500).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One customer's account, relay and recent ledger lines.
    Show {
        /// Customer id.
        id: u32,
    },
}

#[derive(Subcommand)]
enum TariffCmd {
    /// List the tariffs in force.
    List {
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        admin: String,
        #[command(flatten)]
        auth: cli::TokenArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set (add or change) a tariff.
    Set {
        /// Tariff id.
        #[arg(long)]
        id: u16,
        /// Version (bump on every change).
        #[arg(long)]
        version: u32,
        /// Per-kWh rate in paisa (e.g. 1500 = NPR 15/kWh).
        #[arg(long, conflicts_with_all = ["tiered", "flat"])]
        per_kwh: Option<u32>,
        /// Tiered blocks "UP_TO_WH:PAISA_PER_KWH,..." (e.g. "10000:0,50000:800,1000000000:1200").
        #[arg(long, conflicts_with = "flat")]
        tiered: Option<String>,
        /// Period charge for a tiered tariff, paisa.
        #[arg(long, default_value_t = 0)]
        period_charge: u32,
        /// Flat bands "UP_TO_W:DAILY_FEE_PAISA,..." (e.g. "250:500,500:900").
        #[arg(long)]
        flat: Option<String>,
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        admin: String,
        /// The admin token file (default: `admin.token` in the data directory of --config).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The node's config, whose data directory holds the admin token.
        #[arg(long, default_value = cli::NODE_CONFIG_DEFAULT)]
        config: PathBuf,
    },
}

/// Prints a receipt; fails (exit 1) when the actor did not take the input.
fn receipt_exit(r: &serde_json::Value, what: &str) -> anyhow::Result<std::process::ExitCode> {
    let (line, accepted) = cli::format_receipt(r, what);
    if !accepted {
        anyhow::bail!("{line}");
    }
    println!("{line}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// With `--features dhat-heap` every allocation is recorded by call site (see Cargo.toml).
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> std::process::ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = Cli::parse();
    ghatta::process::main(|seed| dispatch(cli.cmd, seed))
}

async fn dispatch(cmd: Cmd, seed: u64) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        Cmd::Run { config } => {
            let cfg = NodeConfig::load(&config)?;
            let running = ghatta::runner::start(&cfg, Arc::new(SystemClock), seed ^ cfg.id)
                .await
                .with_context(|| format!("cannot start the node of {}", config.display()))?;
            eprintln!(
                "ghatta node {} running: raft on {}, admin on {}, data in {}",
                cfg.id,
                cfg.raft_listen,
                running.admin_addr,
                cfg.data_dir.display()
            );
            tokio::spawn(ghatta::sd_notify::watchdog_loop_with_field(
                running.node.clone(),
                running.field.clone(),
            ));
            cli::wait_for_shutdown().await;
            running.stop().await;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Demo(args) => cli::demo::run(args, seed).await,
        Cmd::Actor { op } => cli::actor::run(op).await,
        Cmd::Keygen { out } => {
            let g = ghatta_proto::keys::generate_into(&out)?;
            println!(
                "private key: {} (mode 0600; keep it on this board, point key_file at it)",
                g.private_path.display()
            );
            println!("public key:  {}", g.public_path.display());
            println!("public key (base64): {}", g.public.to_base64());
            println!("public key (hex):    {}", g.public.to_hex());
            println!(
                "add this node to every node's config:\n\n[[peers]]\nid = <this node's id>\naddr = \"<host:port>\"\npublic_key = \"{}\"",
                g.public.to_base64()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Status { admin, auth, json } => {
            let token = auth.for_read(&admin)?;
            let s =
                client::call_with_token(&admin, "GET", "/status", None, token.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{}", cli::format_status(&s));
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Alarms {
            admin,
            auth,
            limit,
            since,
            json,
        } => {
            let token = auth.for_read(&admin)?;
            let path = format!("/alarms?limit={limit}{}", cli::since_query(since));
            let a = client::call_with_token(&admin, "GET", &path, None, token.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                println!("{}", cli::format_alarms(&a));
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Events {
            admin,
            auth,
            limit,
            since,
            json,
        } => {
            let token = auth.for_read(&admin)?;
            let path = format!("/events?limit={limit}{}", cli::since_query(since));
            let a = client::call_with_token(&admin, "GET", &path, None, token.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                println!("{}", cli::format_events(&a));
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Member {
            op,
            admin,
            token_file,
            config,
        } => {
            let (body, goal) = match op {
                MemberCmd::Add { id, addr } => (
                    json!({ "op": "add", "id": id, "addr": addr }),
                    cli::MemberGoal::Added(id),
                ),
                MemberCmd::Promote { id } => (
                    json!({ "op": "promote", "id": id }),
                    cli::MemberGoal::Voter(id),
                ),
                MemberCmd::Remove { id } => (
                    json!({ "op": "remove", "id": id }),
                    cli::MemberGoal::Gone(id),
                ),
            };
            let token = cli::admin_token(token_file.as_deref(), &config)?;
            let answer =
                match client::call_with_token(&admin, "POST", "/member", Some(&body), Some(&token))
                    .await
                {
                    Ok(a) => Some(a),
                    // The node may have made the change: look before saying anything.
                    Err(ghatta::admin::ClientError::Timeout { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
            cli::member_outcome(&admin, &token, goal, answer).await
        }
        Cmd::Topup {
            customer,
            code,
            admin,
            token_file,
            config,
        } => {
            let code = cli::parse_token_code(&code)?;
            let admin_token = cli::admin_token(token_file.as_deref(), &config)?;
            let r = client::call_with_token(
                &admin,
                "POST",
                "/topup",
                Some(&json!({ "customer": customer, "code": code })),
                Some(&admin_token),
            )
            .await?;
            receipt_exit(&r, "top-up")
        }
        Cmd::Credit {
            customer,
            ref_id,
            amount,
            admin,
            token_file,
            credit_token_file,
            config,
        } => {
            let admin_token = cli::admin_token(token_file.as_deref(), &config)?;
            let credit_token = cli::credit_token(credit_token_file.as_deref(), &config)?;
            let r = client::call_with_headers(
                &admin,
                "POST",
                "/operator-credit",
                Some(&json!({ "customer": customer, "ref_id": ref_id, "amount_npr": amount })),
                Some(&admin_token),
                &[(ghatta::admin::auth::CREDIT_HEADER, credit_token.as_str())],
            )
            .await?;
            receipt_exit(&r, "operator credit")
        }
        Cmd::Meter {
            op:
                MeterCmd::Replace {
                    customer,
                    new_read_wh,
                    old_final_wh,
                },
            admin,
            token_file,
            config,
        } => {
            let token = cli::admin_token(token_file.as_deref(), &config)?;
            let body = json!({
                "customer": customer, "new_read_wh": new_read_wh, "old_final_wh": old_final_wh,
            });
            let r = client::call_with_token(
                &admin,
                "POST",
                "/meter/replace",
                Some(&body),
                Some(&token),
            )
            .await?;
            receipt_exit(&r, "meter replacement")
        }
        Cmd::Customer {
            op,
            admin,
            token_file,
            config,
            json,
        } => {
            let token = cli::read_token_for(&admin, token_file.as_deref(), &config)?;
            let (path, text): (String, fn(&serde_json::Value) -> anyhow::Result<String>) = match op
            {
                CustomerCmd::List {
                    disconnected,
                    after,
                    limit,
                } => {
                    let mut path = format!("/customers?limit={limit}");
                    if disconnected {
                        path.push_str("&disconnected=1");
                    }
                    if let Some(a) = after {
                        path.push_str(&format!("&after={a}"));
                    }
                    (path, |v| {
                        Ok(cli::accounts::format_customers(&serde_json::from_value(
                            v.clone(),
                        )?))
                    })
                }
                CustomerCmd::Show { id } => (format!("/customers/{id}"), |v| {
                    Ok(cli::accounts::format_customer(&serde_json::from_value(
                        v.clone(),
                    )?))
                }),
            };
            let v = client::call_with_token(&admin, "GET", &path, None, token.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{}",
                    text(&v).context("the node's answer has an unexpected shape")?
                );
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Tariff {
            op: TariffCmd::List { admin, auth, json },
        } => {
            let token = auth.for_read(&admin)?;
            let v =
                client::call_with_token(&admin, "GET", "/tariffs", None, token.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{}",
                    cli::accounts::format_tariffs(
                        &serde_json::from_value(v)
                            .context("the node's answer has an unexpected shape")?
                    )
                );
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Tariff {
            op:
                TariffCmd::Set {
                    id,
                    version,
                    per_kwh,
                    tiered,
                    period_charge,
                    flat,
                    admin,
                    token_file,
                    config,
                },
        } => {
            let body = match (per_kwh, tiered, flat) {
                (Some(rate), None, None) => {
                    json!({ "id": id, "version": version, "kind": "per_kwh", "rate_paisa_per_kwh": rate })
                }
                (None, Some(t), None) => json!({
                    "id": id, "version": version, "kind": "tiered",
                    "blocks": cli::parse_pairs(&t).context("--tiered")?, "period_charge_paisa": period_charge
                }),
                (None, None, Some(f)) => {
                    json!({ "id": id, "version": version, "kind": "flat", "bands": cli::parse_pairs(&f).context("--flat")? })
                }
                _ => anyhow::bail!("give exactly one of --per-kwh, --tiered or --flat"),
            };
            let token = cli::admin_token(token_file.as_deref(), &config)?;
            let r = client::call_with_token(&admin, "POST", "/tariff", Some(&body), Some(&token))
                .await?;
            receipt_exit(&r, "tariff")
        }
        Cmd::Bench(args) => cli::bench::run(args).await,
        Cmd::Selftest(args) => cli::selftest::run(args, seed).await,
    }
}
