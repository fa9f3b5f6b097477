//! `ghatta run` as a user runs it: with a Linux board config naming a device that is not
//! there it exits with an error naming the device and the config key; with a simulated board
//! it starts and answers `ghatta status`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GHATTA: &str = env!("CARGO_BIN_EXE_ghatta");

/// How long a node may take to start and answer `status` (a debug build on a busy CI box).
const STARTUP_DEADLINE: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A node config with the given `[board]` section, unsealed on purpose (these are benches);
/// returns (config path, admin address).
fn write_config(dir: &Path, board: &str) -> (std::path::PathBuf, String) {
    let raft = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let text = format!(
        r#"id = 1
data_dir = "{data}"
raft_listen = "{raft}"
admin_listen = "{admin}"
link_profile = "lan"
bootstrap = true
allow_unsealed = true
peers = [{{ id = 1, addr = "{raft}" }}]

{board}
"#,
        data = dir.join("data").display(),
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).expect("write config");
    (path, admin)
}

/// Run `ghatta run` to completion (it must exit on its own); (exit code, stderr).
fn run_to_exit(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(GHATTA)
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run ghatta");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_gpiochip_stops_run_with_the_device_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = write_config(
        dir.path(),
        r#"[board]
kind = "linux"
[board.relays]
gpiochip = "/dev/gpiochip-ghatta-test-missing"
[[board.relays.lines]]
relay = "feeder:1"
line = 17
"#,
    );
    let (code, stderr) = run_to_exit(&config);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("board.relays.gpiochip"), "{stderr}");
    assert!(
        stderr.contains("/dev/gpiochip-ghatta-test-missing"),
        "{stderr}"
    );
    assert!(stderr.contains("gpiodetect"), "says what to do: {stderr}");
    // Nothing was started: no databases were created.
    assert!(!dir.path().join("data").join("raft-log.redb").exists());
}

#[test]
fn a_missing_serial_port_stops_run_with_the_device_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = write_config(
        dir.path(),
        r#"[board]
kind = "linux"
[board.modbus]
port = "/dev/ttyUSB-ghatta-test-missing"
[[board.modbus.meters]]
customer = 1
address = 1
"#,
    );
    let (code, stderr) = run_to_exit(&config);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("board.modbus.port"), "{stderr}");
    assert!(
        stderr.contains("/dev/ttyUSB-ghatta-test-missing"),
        "{stderr}"
    );
}

#[test]
fn a_missing_replay_recording_stops_run_with_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = write_config(
        dir.path(),
        "[board]\nkind = \"replay\"\ngrid = \"/nonexistent/ghatta-grid.csv\"\n",
    );
    let (code, stderr) = run_to_exit(&config);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("board.grid"), "{stderr}");
    assert!(stderr.contains("/nonexistent/ghatta-grid.csv"), "{stderr}");
}

#[test]
fn a_bad_board_setting_is_refused_at_load_with_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = write_config(
        dir.path(),
        r#"[board]
kind = "linux"
[board.modbus]
port = "/dev/ttyUSB0"
baud = 1
"#,
    );
    let (code, stderr) = run_to_exit(&config);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("node.toml: board.modbus.baud"), "{stderr}");
}

/// Kills the child when dropped, so a failed assertion never leaves a node running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_with_a_sim_board_serves_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, admin) = write_config(dir.path(), "[board]\nkind = \"sim\"\ncustomers = 20\n");
    let mut child = Child(
        Command::new(GHATTA)
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ghatta run"),
    );
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(exit)) = child.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("ghatta run exited early ({exit}): {err}");
        }
        let out = Command::new(GHATTA)
            .args(["status", "--json", "--admin", &admin])
            .output()
            .expect("run ghatta status");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            started.elapsed() < STARTUP_DEADLINE,
            "status did not answer within {STARTUP_DEADLINE:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let v: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    assert_eq!(v["id"], 1, "{status}");
    // The field loop's counters sit beside the node's, under `field` (added, nothing
    // renamed); a simulated board has no Modbus line, so those stay 0.
    assert_eq!(v["field"]["grid_healthy"], 1, "{status}");
    assert!(v["field"]["meters_silent"].is_u64(), "{status}");
    assert_eq!(v["field"]["modbus_requests"], 0, "{status}");
    assert!(v["link"].is_object(), "{status}");
    // The human line says how the grid samples go.
    let out = Command::new(GHATTA)
        .args(["status", "--admin", &admin])
        .output()
        .expect("run ghatta status");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("| grid ok: samples"), "{line}");
    // The field loop's journal lives beside the node's databases.
    assert!(dir.path().join("data").join("journal.redb").exists());
}

/// A config with neither `key_file` nor `allow_unsealed = true` does not start: a forgotten
/// key must not open the grid. The error names the file, the key and the fix.
#[test]
fn run_without_a_key_file_refuses_to_start_unless_unsealed_is_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = write_config(dir.path(), "[board]\nkind = \"sim\"\ncustomers = 2");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("allow_unsealed = true\n", "")).expect("write");
    let (code, stderr) = run_to_exit(&config);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("key_file"), "{stderr}");
    assert!(stderr.contains("ghatta keygen"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(
        !dir.path().join("data").join("raft-log.redb").exists(),
        "it opened its databases before refusing"
    );
}

#[test]
fn the_deploy_example_board_configs_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = ghatta::config::NodeConfig::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                matches!(cfg.board, ghatta::config::BoardConfig::Linux(_)),
                "{}",
                path.display()
            );
            // The examples ship sealed: a copied example never opens a grid.
            assert!(
                cfg.key_file.is_some() && !cfg.allow_unsealed,
                "{} is not sealed",
                path.display()
            );
            n += 1;
        }
    }
    assert!(n >= 1, "no example configs found in {}", dir.display());
}
