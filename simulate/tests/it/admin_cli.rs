//! The admin API and the `ghatta` CLI answer an operator's change with what became of it: a
//! refused credit or top-up (a replayed token, an unknown customer) or tariff (a version not above the
//! one in force) is a 422 naming the actor's reason, a refused membership change a 409 naming
//! its reason, and the CLI exits non-zero with it; the alarms the refusals raised are listed
//! by `ghatta alarms`. And every read the CLI makes carries the admin token, so it works
//! against a node that answers reads from another machine only with it.

use std::process::Command;
use std::sync::Arc;

use ghatta::admin::client;
use ghatta::clock::SystemClock;
use serde_json::json;

use crate::harness;

/// A one-node cluster with a simulated board of `customers` meters, its data in `dir`,
/// its config also written to `config_file` when given (for the CLI's `--config`).
async fn start_node(
    dir: &std::path::Path,
    customers: u32,
    config_file: Option<&std::path::Path>,
) -> (ghatta::config::NodeConfig, ghatta::runner::Running) {
    let raft = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let toml = format!(
        "id = 1\ndata_dir = \"{}\"\nraft_listen = \"{raft}\"\nadmin_listen = \"127.0.0.1:0\"\nbootstrap = true\nallow_unsealed = true\npeers = [{{ id = 1, addr = \"{raft}\" }}]\n[board]\nkind = \"sim\"\ncustomers = {customers}\n",
        dir.join("data").display(),
    );
    if let Some(f) = config_file {
        std::fs::write(f, &toml).unwrap();
    }
    let cfg = ghatta::config::NodeConfig::parse(&toml, "node.toml").expect("config");
    let running = ghatta::runner::start(&cfg, Arc::new(SystemClock), 7)
        .await
        .expect("node starts");
    (cfg, running)
}

/// Regression (issue 26, item 4): `ghatta topup` exited 0 and said "see alarms" when the
/// billing actor refused the top-up, and nothing on the board showed the alarms; `ghatta
/// member add` of a node that was not there timed out and added it anyway.
#[test]
fn refused_changes_fail_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let ghatta = harness::workspace_bin("ghatta");
    harness::run(61, async move {
        let (cfg, running) = start_node(tmp.path(), 5, None).await;
        let admin = running.admin_addr.to_string();
        let token_file = cfg.data_dir.join(ghatta::admin::auth::TOKEN_FILE);
        let token = ghatta::admin::auth::read_token(&token_file).expect("token");
        let change = |path: &'static str, body: serde_json::Value| {
            let (admin, token) = (admin.clone(), token.clone());
            async move { client::call_with_token(&admin, "POST", path, Some(&body), Some(&token)).await }
        };
        change(
            "/tariff",
            json!({ "id": 1, "version": 1, "kind": "per_kwh", "rate_paisa_per_kwh": 1500 }),
        )
        .await
        .expect("tariff");
        change(
            "/customer",
            json!({ "id": 1, "node": 1, "prepaid": true, "tariff": 1, "connection_w": 250 }),
        )
        .await
        .expect("customer");

        let credit_file = cfg.data_dir.join(ghatta::admin::auth::CREDIT_TOKEN_FILE);
        // Credit by amount, the operator's path (`ghatta credit`, with both token files).
        let topup = |customer: u32, token_id: u64| {
            let (ghatta, admin, token_file) = (ghatta.clone(), admin.clone(), token_file.clone());
            let credit_file = credit_file.clone();
            tokio::task::spawn_blocking(move || {
                let out = Command::new(&ghatta)
                    .args(["credit", "--customer", &customer.to_string()])
                    .args(["--ref", &token_id.to_string(), "--amount", "100"])
                    .args(["--admin", &admin, "--token-file"])
                    .arg(&token_file)
                    .arg("--credit-token-file")
                    .arg(&credit_file)
                    .output()
                    .expect("run ghatta credit");
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
        };
        let (code, stdout, stderr) = topup(1, 77).await.unwrap();
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(
            stdout.contains("operator credit: applied at index"),
            "{stdout}"
        );

        let (code, stdout, stderr) = topup(1, 77).await.unwrap();
        assert_eq!(
            code,
            Some(1),
            "a replayed token must fail: {stdout}{stderr}"
        );
        assert!(
            stderr.contains("(422)")
                && stderr.contains("refused by the billing actor")
                && stderr.contains("token already used")
                && stderr.contains("replayed"),
            "{stderr}"
        );

        let member = |args: Vec<String>| {
            let (ghatta, admin, token_file) = (ghatta.clone(), admin.clone(), token_file.clone());
            tokio::task::spawn_blocking(move || {
                let out = Command::new(&ghatta)
                    .arg("member")
                    .args(args)
                    .args(["--admin", &admin, "--token-file"])
                    .arg(&token_file)
                    .output()
                    .expect("run ghatta member");
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
        };
        // Issue 26: `member add` of a node where nothing listens timed out (rc 1) yet added it.
        let nothing = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let args = ["add", "--id", "4", "--addr", &nothing]
            .map(String::from)
            .to_vec();
        let (code, stdout, stderr) = member(args).await.unwrap();
        assert_eq!(code, Some(1), "{stdout}{stderr}");
        assert!(
            stderr.contains("(409)")
                && stderr.contains("node 4 at")
                && stderr.contains("did not answer"),
            "{stderr}"
        );
        let args = ["remove", "--id", "9"].map(String::from).to_vec();
        let (code, _, stderr) = member(args).await.unwrap();
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("node 9 is not a member"), "{stderr}");
        let status = client::call(&admin, "GET", "/status", None).await.unwrap();
        assert_eq!(status["learners"], json!([]), "{status}");
        assert_eq!(status["membership_in_progress"], json!(false), "{status}");

        let (code, _, stderr) = topup(99, 78).await.unwrap();
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("unknown customer"), "{stderr}");

        // Issue 26: a tariff update with the same version (or version 0) was applied.
        for stale in ["1", "0"] {
            let (ghatta, admin, token_file) = (ghatta.clone(), admin.clone(), token_file.clone());
            let version = stale.to_string();
            let (code, stderr) = tokio::task::spawn_blocking(move || {
                let out = Command::new(&ghatta)
                    .args(["tariff", "set", "--id", "1", "--version", &version])
                    .args(["--per-kwh", "9999", "--admin", &admin, "--token-file"])
                    .arg(&token_file)
                    .output()
                    .expect("run ghatta tariff set");
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
            .await
            .unwrap();
            assert_eq!(code, Some(1), "version {stale}: {stderr}");
            let why = if stale == "0" { "malformed" } else { "stale" };
            assert!(
                stderr.contains("(422)") && stderr.contains(why),
                "version {stale}: {stderr}"
            );
        }

        // The API itself: the refusal is the body's error, with the receipt beside it.
        let credit_token = ghatta::admin::auth::read_token(&credit_file).expect("credit token");
        let e = client::call_with_headers(
            &admin,
            "POST",
            "/operator-credit",
            Some(&json!({ "customer": 1, "ref_id": 77, "amount_npr": 5 })),
            Some(&token),
            &[(ghatta::admin::auth::CREDIT_HEADER, credit_token.as_str())],
        )
        .await
        .unwrap_err();
        match e {
            ghatta::admin::ClientError::Refused { code, message, .. } => {
                assert_eq!(code, 422);
                assert!(
                    message.contains("committed at index")
                        && message.contains("token already used"),
                    "{message}"
                );
            }
            other => panic!("expected a refusal, got {other}"),
        }

        // The refusals' alarms are committed and listed on the board (issue 26, item 4),
        // newest first: the unknown customer 99, the first replay of token 77 with the second
        // counted against it (`state::alarm_tally`), among the alarms of meters without an
        // account (each stored once, its reads every few seconds counted).
        let alarms = |args: Vec<&'static str>| {
            let (ghatta, admin) = (ghatta.clone(), admin.clone());
            tokio::task::spawn_blocking(move || {
                let out = Command::new(&ghatta)
                    .arg("alarms")
                    .args(args)
                    .args(["--admin", &admin])
                    .output()
                    .expect("run ghatta alarms");
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
        };
        let (code, stdout, stderr) = alarms(vec!["--json"]).await.unwrap();
        assert_eq!(code, Some(0), "{stderr}");
        let reply: serde_json::Value = serde_json::from_str(&stdout).expect("alarms JSON");
        let listed: Vec<(String, u64, u64)> = reply["alarms"]
            .as_array()
            .expect("alarms")
            .iter()
            .map(|a| {
                (
                    a["code"].as_str().unwrap_or("").to_string(),
                    a["subject"].as_u64().unwrap_or(0),
                    a["repeats"].as_u64().unwrap_or(0),
                )
            })
            // The simulated board also reads meters 2-5, which have no account: billing
            // raises an alarm for those too.
            .filter(|(code, subject, _)| code == "TokenReplayed" || *subject == 99)
            .collect();
        assert_eq!(
            listed,
            vec![
                ("UnknownAccount".to_string(), 99, 0),
                ("TokenReplayed".to_string(), 1, 1),
            ],
            "{reply}"
        );
        // Meters 2-5 are read every few seconds: one record each, their reads counted.
        let meter_alarms = reply["alarms"]
            .as_array()
            .expect("alarms")
            .iter()
            .filter(|a| a["code"] == "UnknownAccount" && a["subject"] != 99)
            .count();
        assert!(meter_alarms <= 4, "{reply}");
        assert_eq!(reply["whole_outbox"], json!(true));
        let (code, stdout, _) = alarms(vec!["--limit", "1"]).await.unwrap();
        assert_eq!(code, Some(0));
        assert_eq!(stdout.lines().count(), 2, "{stdout}");
        assert!(stdout.contains("--limit"), "says how to see more: {stdout}");
        assert!(
            stdout.contains("UnknownAccount") && stdout.contains(" UTC "),
            "{stdout}"
        );
        let e = client::call(&admin, "GET", "/alarms?limit=0", None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("from 1 to 1000"), "{e}");

        // Credit by amount without the operator-credit permission: refused before anything is
        // proposed, whoever holds the admin token.
        let e = change(
            "/operator-credit",
            json!({ "customer": 1, "ref_id": 80, "amount_npr": 5 }),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("(403)") && e.contains("operator-credit permission"),
            "{e}"
        );

        // An OpenPAYGO Token through the CLI: the account gets the key of the interop fixture's
        // first sequence, whose first code (1 unit) is entered once, then refused as used.
        let fixture = include_str!("../../../actors/billing/tests/fixtures/openpaygo_tokens.txt");
        let seq: Vec<&str> = fixture
            .lines()
            .find(|l| l.starts_with("seq "))
            .expect("a sequence")
            .split_whitespace()
            .collect();
        let (key_hex, starting_code) = (seq[2], seq[3]);
        let code = fixture
            .lines()
            .find(|l| l.starts_with("tok "))
            .and_then(|l| l.split_whitespace().nth(1))
            .expect("a token");
        change(
            "/customer",
            json!({ "id": 1, "node": 1, "prepaid": true, "tariff": 1, "connection_w": 250,
                    "token_key_hex": key_hex, "token_starting_code": starting_code.parse::<u32>().unwrap(),
                    "token_unit_paisa": 1000 }),
        )
        .await
        .expect("customer with a token key");
        let cli = |args: Vec<String>| {
            let (ghatta, admin, token_file) = (ghatta.clone(), admin.clone(), token_file.clone());
            tokio::task::spawn_blocking(move || {
                let out = Command::new(&ghatta)
                    .args(args)
                    .args(["--admin", &admin, "--token-file"])
                    .arg(&token_file)
                    .output()
                    .expect("run ghatta");
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
        };
        // Typed as printed on a slip, in groups.
        let typed = format!("{}-{}-{}", &code[..3], &code[3..6], &code[6..]);
        let topup_code = |typed: String| {
            cli(vec![
                "topup".into(),
                "--customer".into(),
                "1".into(),
                "--code".into(),
                typed,
            ])
        };
        let (rc, stdout, stderr) = topup_code(typed.clone()).await.unwrap();
        assert_eq!(rc, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("top-up: applied at index"), "{stdout}");
        let (rc, stdout, stderr) = topup_code(typed).await.unwrap();
        assert_eq!(rc, Some(1), "a token entered twice: {stdout}{stderr}");
        assert!(
            stderr.contains("(422)") && stderr.contains("already used"),
            "{stderr}"
        );
        let (rc, _, stderr) = topup_code("12345678901".into()).await.unwrap();
        assert_eq!(rc, Some(1));
        assert!(stderr.contains("up to 9 digits"), "{stderr}");
        // The key never comes back: not in the status, not in the alarms.
        for path in ["/status", "/alarms?limit=1000"] {
            let shown = client::call(&admin, "GET", path, None)
                .await
                .unwrap()
                .to_string();
            assert!(!shown.contains(key_hex), "{path} shows the token key");
        }

        // A meter replacement through the CLI and the log.
        let args = ["meter", "replace", "--customer", "1", "--new-read-wh", "5"]
            .map(String::from)
            .to_vec();
        let (rc, stdout, stderr) = cli(args).await.unwrap();
        assert_eq!(rc, Some(0), "{stdout}{stderr}");
        assert!(
            stdout.contains("meter replacement: applied at index"),
            "{stdout}"
        );
        let args = ["meter", "replace", "--customer", "98", "--new-read-wh", "5"]
            .map(String::from)
            .to_vec();
        let (rc, _, stderr) = cli(args).await.unwrap();
        assert_eq!(rc, Some(1));
        assert!(stderr.contains("unknown customer"), "{stderr}");
        running.stop().await;
    });
}

/// Regression: the CLI's reads (`status`, `alarms`, `events`, `customer`, `tariff list`,
/// `actor list`) sent no token, so against a node that answers reads from another machine
/// only with it (any admin or dashboard address but loopback) each failed with 401. Here the
/// node's own router is served as if every request came from the LAN (`MockConnectInfo`):
/// each read succeeds with the token from `--config`'s data directory or `--token-file`,
/// fails without one with the node's reason, and a read from an address that is not this
/// machine's, with no token to be found, is refused before anything is sent.
#[test]
fn every_read_of_the_cli_carries_the_token_a_remote_node_requires() {
    let tmp = tempfile::tempdir().unwrap();
    let ghatta = harness::workspace_bin("ghatta");
    harness::run(62, async move {
        let config = tmp.path().join("node.toml");
        let (cfg, running) = start_node(tmp.path(), 1, Some(&config)).await;
        let token_file = cfg.data_dir.join(ghatta::admin::auth::TOKEN_FILE);

        // The node's router, every request's peer a LAN address.
        let auth = ghatta::admin::auth::AdminAuth::load_or_create(&cfg.data_dir).expect("auth");
        let lan_peer: std::net::SocketAddr = "192.168.4.20:50000".parse().unwrap();
        let app = ghatta::admin::router(running.node.clone(), auth)
            .layer(axum::extract::connect_info::MockConnectInfo(lan_peer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let remote = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let cli = |args: Vec<String>| {
            let ghatta = ghatta.clone();
            tokio::task::spawn_blocking(move || {
                let out = Command::new(&ghatta)
                    .args(args)
                    .output()
                    .expect("run ghatta");
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
        };
        let reads: [&[&str]; 7] = [
            &["status"],
            &["alarms"],
            &["events"],
            &["customer", "list"],
            &["customer", "show", "1"],
            &["tariff", "list"],
            &["actor", "list"],
        ];
        let config_arg = config.display().to_string();
        let token_arg = token_file.display().to_string();
        let nowhere = tmp.path().join("absent.toml").display().to_string();
        for read in reads {
            let with = |extra: &[&str]| {
                let mut v: Vec<String> = read.iter().map(|s| s.to_string()).collect();
                v.extend(["--admin".to_string(), remote.clone()]);
                v.extend(extra.iter().map(|s| s.to_string()));
                v
            };
            // `customer show 1` before the customer exists is the node's 404: what matters
            // is that it is not the 401 of a read without the token.
            let answered = |code: Option<i32>, stderr: &str| {
                code == Some(0) || (read[0] == "customer" && !stderr.contains("(401)"))
            };
            let (code, stdout, stderr) = cli(with(&["--config", &config_arg])).await.unwrap();
            assert!(
                answered(code, &stderr),
                "{read:?} with --config: {stdout}{stderr}"
            );
            let (code, stdout, stderr) = cli(with(&["--token-file", &token_arg])).await.unwrap();
            assert!(
                answered(code, &stderr),
                "{read:?} with --token-file: {stdout}{stderr}"
            );
            // No token to be found: the node refuses, and says how to read.
            let (code, _, stderr) = cli(with(&["--config", &nowhere])).await.unwrap();
            assert_eq!(code, Some(1), "{read:?} without a token: {stderr}");
            assert!(
                stderr.contains("(401)") && stderr.contains("Authorization: Bearer"),
                "{read:?}: {stderr}"
            );
        }
        // An address that is not this machine's: no token, no request.
        let (code, _, stderr) = cli(vec![
            "status".into(),
            "--admin".into(),
            "192.0.2.1:7100".into(),
            "--config".into(),
            nowhere.clone(),
        ])
        .await
        .unwrap();
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("needs the node's admin token") && stderr.contains("--token-file"),
            "{stderr}"
        );
        server.abort();
        running.stop().await;
    });
}
