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
