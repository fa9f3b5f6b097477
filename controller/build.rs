//! Build script of the controller: compiles the balancing and billing actors to
//! `wasm32-unknown-unknown` with the workspace's `actor-wasm` profile and puts them in `OUT_DIR`
//! (`balancing.wasm`, `billing.wasm`) for `src/actors/embedded.rs` to embed.
//!
//! The actors are built by a nested `cargo build` into a target directory of their own under
//! `OUT_DIR`, so it never waits on the lock of the outer build's target directory. The nested
//! cargo must build wasm32 whatever the outer build targets (the controller may be
//! cross-compiled for aarch64 or armv7), so every variable that would carry the outer build's
//! target, flags, profile overrides or linkers into it is removed from its environment.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The target the actors run on (inside wasmi).
const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// The workspace profile for actors (`Cargo.toml`: opt-level 3, lto, panic abort).
const ACTOR_PROFILE: &str = "actor-wasm";
/// Largest module accepted, bytes. wasmi translates a module eagerly and a node keeps it
/// compiled with its warm instances; 64 KiB is the budget the actor SDK is designed to (it is
/// also one wasm page).
const WASM_SIZE_MAX_BYTES: u64 = 65_536;

/// The actors: (package, file cargo produces, file in `OUT_DIR`). The first two are embedded;
/// demand-response is built the same way but shipped by deployment (`actors::embedded`
/// names only its path).
const ACTORS: [(&str, &str, &str); 3] = [
    (
        "ghatta-balancing",
        "ghatta_balancing.wasm",
        "balancing.wasm",
    ),
    ("ghatta-billing", "ghatta_billing.wasm", "billing.wasm"),
    (
        "ghatta-demand-response",
        "ghatta_demand_response.wasm",
        "demand-response.wasm",
    ),
];

/// Variables the nested cargo must not inherit: the outer build's target and target directory,
/// its compiler flags (cargo passes them to build scripts in `CARGO_ENCODED_RUSTFLAGS`, and a
/// nested cargo would apply them to wasm32), and the wrapper `cargo clippy` installs.
const CLEARED_VARS: [&str; 9] = [
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
];
/// Prefixes of variables the nested cargo must not inherit: profile overrides
/// (`CARGO_PROFILE_RELEASE_LTO`...) and per-target settings (`CARGO_TARGET_<TRIPLE>_LINKER`,
/// `_RUNNER`, `_RUSTFLAGS`). `CARGO_MAKEFLAGS` stays, so the nested build shares the jobserver.
const CLEARED_PREFIXES: [&str; 2] = ["CARGO_PROFILE_", "CARGO_TARGET_"];

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            for line in message.lines() {
                println!("cargo::error={line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", manifest_dir.display()))?
        .to_path_buf();
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));

    for dir in [
        "actors/sdk",
        "actors/balancing",
        "actors/billing",
        "actors/demand-response",
    ] {
        rerun_if_changed(&workspace.join(dir).join("src"));
        rerun_if_changed(&workspace.join(dir).join("Cargo.toml"));
    }
    rerun_if_changed(&workspace.join("Cargo.toml"));
    rerun_if_changed(&workspace.join("Cargo.lock"));

    ensure_wasm_target()?;

    let target_dir = out_dir.join("actor-target");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .arg("build")
        .args(ACTORS.iter().flat_map(|(package, _, _)| ["-p", package]))
        .args([
            "--target",
            WASM_TARGET,
            "--profile",
            ACTOR_PROFILE,
            "--target-dir",
        ])
        .arg(&target_dir);
    clear_outer_config(&mut cmd);
    // Between deliveries the host copies the module's whole initial memory back (or, for a
    // fresh instance, zeroes it): with rustc's default 1 MiB wasm stack that is 17 pages per
    // message. The actors recurse shallowly; a 16 KiB stack keeps the stack, the static data
    // and room for a delivery's heap in one page.
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        format!("-Clink-arg=-zstack-size={ACTOR_STACK_BYTES}"),
    );
    let output = cmd.output().map_err(|e| {
        format!(
            "could not run {} to build the actors: {e}",
            cargo.to_string_lossy()
        )
    })?;
    if !output.status.success() {
        // Cargo shows a failed build script's stderr: the nested cargo's own diagnostics.
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        return Err(format!(
            "building the actors for {WASM_TARGET} failed ({}); the nested cargo's output is \
             below under --- stderr; reproduce with: cargo build -p ghatta-balancing -p \
             ghatta-billing -p ghatta-demand-response --target {WASM_TARGET} --profile {ACTOR_PROFILE}",
            output.status
        ));
    }

    let built_dir = target_dir.join(WASM_TARGET).join(ACTOR_PROFILE);
    for (package, built, embedded) in ACTORS {
        let from = built_dir.join(built);
        let size_bytes = fs::metadata(&from)
            .map_err(|e| format!("{package} built but {} is missing: {e}", from.display()))?
            .len();
        if size_bytes > WASM_SIZE_MAX_BYTES {
            return Err(format!(
                "{package} compiles to {size_bytes} bytes of wasm, over the \
                 {WASM_SIZE_MAX_BYTES}-byte budget per actor; shrink it (most of an actor is \
                 bincode encode/decode code: fewer or simpler types it encodes help most)"
            ));
        }
        let to = out_dir.join(embedded);
        fs::copy(&from, &to)
            .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
    }
    println!(
        "cargo::rustc-env=GHATTA_DEMAND_RESPONSE_WASM={}",
        out_dir.join("demand-response.wasm").display()
    );
    Ok(())
}

/// Wasm stack of each actor, bytes (see the nested build's flags for why it is small). The
/// deepest delivery measured used under 1 KiB (BENCHMARKS.md, "One page of memory per
/// actor"); running out is a trap on every replica alike, so the margin is generous.
const ACTOR_STACK_BYTES: u32 = 16 * 1024;

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("{name} is not set by cargo ({e}); run this through cargo"))
}

fn rerun_if_changed(path: &Path) {
    println!("cargo::rerun-if-changed={}", path.display());
}

/// Remove the outer build's configuration from the nested cargo's environment.
fn clear_outer_config(cmd: &mut Command) {
    for name in CLEARED_VARS {
        cmd.env_remove(name);
    }
    for (name, _) in env::vars_os() {
        let name_str = name.to_string_lossy();
        if CLEARED_PREFIXES.iter().any(|p| name_str.starts_with(p)) {
            cmd.env_remove(&name);
        }
    }
}

/// Make sure the sysroot has the wasm32 standard library, adding it with rustup once if not.
/// rust-toolchain.toml lists the target, so rustup normally installs it with the toolchain.
fn ensure_wasm_target() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| {
            format!(
                "could not run {} --print sysroot: {e}",
                rustc.to_string_lossy()
            )
        })?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let target_lib = sysroot.join("lib").join("rustlib").join(WASM_TARGET);
    if target_lib.is_dir() {
        return Ok(());
    }
    // RUSTUP_TOOLCHAIN (set by the rustup proxy) makes this add the target to the toolchain
    // that is building, not to the default one.
    let added = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .output();
    match added {
        Ok(out) if out.status.success() && target_lib.is_dir() => Ok(()),
        Ok(out) => Err(format!(
            "the {WASM_TARGET} target is not installed in {} and `rustup target add \
             {WASM_TARGET}` failed ({}): {}\nthe actors cannot be built without it: install it \
             (rustup target add {WASM_TARGET}, or your distribution's rust-std for {WASM_TARGET})",
            sysroot.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "the {WASM_TARGET} target is not installed in {} and rustup could not be run ({e}); \
             this toolchain was not installed by rustup: install the rust-std for {WASM_TARGET} \
             that matches it",
            sysroot.display()
        )),
    }
}
