//! `ghatta actor`: sign and deploy a module, list the registry, roll back, make a signing key.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Subcommand;
use ghatta::actors::deploy::{self, MODULE_BYTES_MAX, OperatorKey};
use ghatta::admin::client;
use serde_json::{Value, json};

/// `ghatta actor ...`.
#[derive(Subcommand)]
pub enum ActorCmd {
    /// Sign a module and deploy it through the log: it becomes active at its deploy entry's
    /// index on every node, or is refused on every node with the reason (exit status 1).
    Deploy {
        /// The actor (balancing, billing).
        #[arg(long)]
        name: String,
        /// The module (wasm32, at most 64 KiB).
        #[arg(long)]
        wasm: PathBuf,
        /// Its version: above every version of this actor deployed before.
        #[arg(long)]
        version: u32,
        /// The operator's signing key (`ghatta actor keygen`), whose public half the cluster
        /// lists as an actor signer.
        #[arg(long)]
        sign_key: PathBuf,
        /// Cut over later: at log time UNIX_MS, or `+DURATION` (e.g. `+10m`) past the node's
        /// log time now. Checked at once; `ghatta actor rollback` cancels it until then.
        #[arg(long)]
        at_log_time: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List every actor: active version, hash, signer, active since (index and log time),
    /// and the versions kept for rollback.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the version before the active one active again (the compiled-in module when none
    /// precedes it), from a new index on every node.
    Rollback {
        /// The actor.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make an operator signing key pair: DIR/operator.key (0600) and DIR/operator.pub.
    Keygen {
        /// Where to write them (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Where a change goes and the token that authorises it.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// Admin API address of any member.
    #[arg(long, default_value = "127.0.0.1:7100")]
    admin: String,
    /// The admin token file (default: `admin.token` in the data directory of --config).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The node's config, whose data directory holds the admin token.
    #[arg(long, default_value = super::NODE_CONFIG_DEFAULT)]
    config: PathBuf,
}

impl AdminArgs {
    /// The token a read carries (`super::read_token_for`).
    fn for_read(&self) -> anyhow::Result<Option<String>> {
        super::read_token_for(&self.admin, self.token_file.as_deref(), &self.config)
    }
}

/// Runs one `ghatta actor` command.
pub async fn run(cmd: ActorCmd) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        ActorCmd::Keygen { out } => {
            let key = OperatorKey::generate().context("no random source for the key")?;
            key.write_new(&out)?;
            println!(
                "signing key: {} (mode 0600; keep it on the operator's machine, never on a board)",
                out.join(deploy::SIGNING_KEY_FILE).display()
            );
            println!(
                "list it in every node's config:\n\nactor_signers = [\"{}\"]",
                deploy::signer_text(&key.public())
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        ActorCmd::Deploy {
            name,
            wasm,
            version,
            sign_key,
            at_log_time,
            admin,
        } => {
            let at_ms = match at_log_time.as_deref() {
                None => None,
                Some(t) => Some(match t.strip_prefix('+') {
                    Some(d) => {
                        let d = super::parse_duration(d).map_err(|e| {
                            anyhow::anyhow!("--at-log-time {t}: {e} (e.g. +10m, or Unix ms)")
                        })?;
                        let token = admin.for_read()?;
                        let status = client::call_with_token(
                            &admin.admin,
                            "GET",
                            "/status",
                            None,
                            token.as_deref(),
                        )
                        .await?;
                        let now = status
                            .get("log_time_ms")
                            .and_then(Value::as_u64)
                            .context("the node's status has no log_time_ms")?;
                        now + d.as_millis() as u64
                    }
                    None => t.parse::<u64>().map_err(|_| {
                        anyhow::anyhow!(
                            "--at-log-time {t}: give Unix ms (e.g. 1796464757265) or +DURATION (e.g. +10m)"
                        )
                    })?,
                }),
            };
            let module = std::fs::read(&wasm)
                .with_context(|| format!("cannot read the module {}", wasm.display()))?;
            anyhow::ensure!(
                module.len() <= MODULE_BYTES_MAX,
                "{} is {} bytes, over the {MODULE_BYTES_MAX}-byte budget: build it with the actor-wasm profile and trim it",
                wasm.display(),
                module.len()
            );
            let key = OperatorKey::load(&sign_key)?;
            let m = key.sign(&name, version, &module);
            let body = json!({
                "name": name,
                "version": version,
                "module_b64": BASE64.encode(&module),
                "signer": deploy::signer_text(&m.signer),
                "signature_hex": m.signature.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "at_log_time_ms": at_ms,
            });
            let token = super::admin_token(admin.token_file.as_deref(), &admin.config)?;
            let r = client::call_with_token(
                &admin.admin,
                "POST",
                "/actor/deploy",
                Some(&body),
                Some(&token),
            )
            .await?;
            let (line, ok) = super::format_receipt(&r, &format!("deploy of {name} v{version}"));
            anyhow::ensure!(ok, "{line}");
            let when = match at_ms {
                None => "active".to_string(),
                Some(ms) => format!(
                    "accepted; it cuts over at log time {}",
                    ghatta::clock::utc_text(ms)
                ),
            };
            println!(
                "{line}: {name} v{version} ({}, {} bytes) {when}",
                &deploy::hash_hex(&m.hash)[..16],
                module.len()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        ActorCmd::Rollback { name, admin } => {
            let token = super::admin_token(admin.token_file.as_deref(), &admin.config)?;
            let r = client::call_with_token(
                &admin.admin,
                "POST",
                "/actor/rollback",
                Some(&json!({ "name": name })),
                Some(&token),
            )
            .await?;
            let (line, ok) = super::format_receipt(&r, &format!("rollback of {name}"));
            anyhow::ensure!(ok, "{line}");
            println!("{line}");
            // What runs now (the previous version, the compiled-in one, or the same when a
            // scheduled cut-over was what the rollback cancelled).
            let list =
                client::call_with_token(&admin.admin, "GET", "/actors", None, Some(&token)).await?;
            let listing = format_list(&list);
            if let Some(now) = listing.lines().find(|l| l.starts_with(name.as_str())) {
                println!("{now}");
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        ActorCmd::List { admin, json } => {
            let token = admin.for_read()?;
            let r = client::call_with_token(&admin.admin, "GET", "/actors", None, token.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{}", format_list(&r));
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// `ghatta actor list` for a person.
pub fn format_list(r: &Value) -> String {
    let mut out = String::new();
    let actors = r
        .get("actors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for a in &actors {
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let n = |k: &str| a.get(k).and_then(Value::as_u64).unwrap_or(0);
        let version = a
            .get("version")
            .and_then(Value::as_u64)
            .map(|v| format!("v{v}"))
            .unwrap_or_else(|| "compiled-in".into());
        let since = if n("active_since_index") == 0 {
            "from the start".to_string()
        } else {
            format!(
                "since index {} ({})",
                n("active_since_index"),
                ghatta::clock::utc_text(n("active_since_ms"))
            )
        };
        out.push_str(&format!(
            "{:<16} {:<12} {} signer {} {since}\n",
            s("name"),
            version,
            &s("hash")[..16.min(s("hash").len())],
            s("signer"),
        ));
        let kept: Vec<String> = a
            .get("versions")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.get("version").and_then(Value::as_u64))
                    .map(|v| format!("v{v}"))
                    .collect()
            })
            .unwrap_or_default();
        if !kept.is_empty() {
            out.push_str(&format!("{:<16} kept: {}\n", "", kept.join(", ")));
        }
        if let Some([v, at]) = a
            .get("scheduled")
            .and_then(Value::as_array)
            .and_then(|x| <[Value; 2]>::try_from(x.clone()).ok())
        {
            out.push_str(&format!(
                "{:<16} v{} scheduled to cut over at log time {}\n",
                "",
                v.as_u64().unwrap_or(0),
                ghatta::clock::utc_text(at.as_u64().unwrap_or(0))
            ));
        }
    }
    let signers = r
        .get("signers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    out.push_str(&format!(
        "actor signers: {signers} key(s) in the replicated list"
    ));
    if r.get("local_signers_match").and_then(Value::as_bool) == Some(false) {
        out.push_str(
            "; this node's actor_signers differs from it (only the replicated list counts: update node.toml to match)",
        );
    }
    out
}
