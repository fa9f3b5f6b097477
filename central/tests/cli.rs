//! `ghatta-central` as the office runs it: `keygen` writes a key pair it then serves with, and
//! a start that would refuse every grid is stopped with what to add. (Building this test also
//! builds the binary, which the two-process WAN test in `simulate/tests` starts.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ghatta-central");

#[test]
fn keygen_writes_a_pair_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(dir.path().join("keys"))
        .output()
        .expect("ghatta-central keygen runs");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("central_public_key"), "{stdout}");
    let public = ghatta_proto::keys::load_public(&dir.path().join("keys/node.pub"))
        .expect("the public key file loads");
    assert!(stdout.contains(&public.to_base64()), "{stdout}");
    let again = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(dir.path().join("keys"))
        .output()
        .expect("ghatta-central keygen runs");
    assert!(
        !again.status.success(),
        "a second keygen must not overwrite the keys"
    );
}

#[test]
fn a_central_without_grids_does_not_start_and_says_what_to_add() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    assert!(
        Command::new(BIN)
            .args(["keygen", "--out"])
            .arg(&keys)
            .status()
            .expect("keygen")
            .success()
    );
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--key-file")
        .arg(keys.join("node.key"))
        .output()
        .expect("ghatta-central runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--grid GRID=PUBLIC_KEY"), "{stderr}");
}

/// `--help` names both stores.
#[test]
fn help_names_both_stores() {
    let out = Command::new(BIN).arg("--help").output().expect("--help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "redb",
        "PostgreSQL",
        "--database",
        "--data",
        "migrate",
        "check",
    ] {
        assert!(help.contains(want), "{want}: {help}");
    }
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("ghatta-central runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `check` on redb: a directory without the store is a problem that says what to give;
/// after `migrate` it is all well (no grid yet).
#[test]
fn check_and_migrate_on_redb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("a UTF-8 path");
    let (ok, out) = run(&["check", "--data", data]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("central.redb: give the central's --data directory"),
        "{out}"
    );
    let (ok, out) = run(&["migrate", "--data", data]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["check", "--data", data]);
    assert!(ok, "{out}");
    assert!(out.contains("all well"), "{out}");
    let (ok, out) = run(&["check"]);
    assert!(!ok && out.contains("give --data DIR"), "{out}");
}

/// `check` on PostgreSQL: an unreachable server and a database without the schema are
/// problems that say what to do; after `migrate`, all is well. Without a test server only
/// the unreachable case runs (CI always has one: `.ci/postgres.sh`).
#[test]
fn check_and_migrate_on_postgres() {
    // Port 1 on loopback: nothing listens there.
    let (ok, out) = run(&["check", "--database", "postgres://ghatta@127.0.0.1:1/none"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("cannot reach PostgreSQL at postgres://ghatta@127.0.0.1:1/none"),
        "{out}"
    );
    let Ok(url) = std::env::var("GHATTA_TEST_DATABASE_URL") else {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "GHATTA_TEST_DATABASE_URL is not set, and CI=true: source .ci/postgres.sh"
        );
        eprintln!("check_and_migrate_on_postgres: skipped the server part (no test server)");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("the test server answers");
        tokio::spawn(conn);
        for sql in [
            "DROP DATABASE IF EXISTS ghatta_cli WITH (FORCE)",
            "CREATE DATABASE ghatta_cli",
        ] {
            admin.batch_execute(sql).await.expect("a fresh database");
        }
    });
    let db = format!(
        "{}/ghatta_cli",
        url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base)
    );
    let (ok, out) = run(&["check", "--database", &db]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("run `ghatta-central migrate --database"),
        "{out}"
    );
    let (ok, out) = run(&["migrate", "--database", &db]);
    assert!(ok, "{out}");
    assert!(out.contains("schema at version"), "{out}");
    let (ok, out) = run(&["check", "--database", &db, "--json"]);
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
}
