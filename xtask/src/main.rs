//! `cargo xtask dist`: builds ghatta for the ARM boards and packs, per target, a tarball with
//! the stripped binary (actors embedded), the systemd unit, the install script, the example
//! configs and the technician's README, plus a SHA-256 checksum file beside it.
//!
//! `cargo xtask footprint` measures a running node's memory (xtask/src/footprint.rs).
//!
//! `cargo xtask pgo` builds the simulator's fast binary with profile-guided optimisation
//! (xtask/src/pgo.rs).
//!
//! Release binaries are linked by `cargo zigbuild` against glibc 2.28's symbol versions, so they
//! run on any board image from 2019 on (Debian 10 / Raspberry Pi OS Buster and later);
//! linked by Debian 12's cross gcc they would need glibc 2.34 (deploy/README.md says why this
//! matters). `--linker gcc` builds with the cross gcc anyway, for machines without zig.
//!
//! The archive is reproducible: entries are sorted, owned by root, with fixed modes and the
//! commit's time (or `SOURCE_DATE_EPOCH`), and the gzip header carries no time or name.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail, ensure};
use flate2::Compression;
use sha2::{Digest, Sha256};

mod footprint;
mod pgo;
mod tidy;

/// The targets `dist` builds by default: 64-bit and 32-bit ARM boards with glibc.
const DEFAULT_TARGETS: [&str; 2] = ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"];
/// The oldest glibc the release binaries run on (Debian 10 Buster, Raspberry Pi OS Buster,
/// Ubuntu 20.04, Yocto Warrior). zig links against this version's symbols.
const GLIBC_FLOOR: (u32, u32) = (2, 28);
/// The cargo profile of release binaries (.cargo/config.toml: size-optimised release).
const DIST_PROFILE: &str = "dist";
/// The stripped binary's budget (BENCHMARKS.md "Footprint (ARM)"): boards update over slow
/// links and keep two copies (the running one and the new one) on small flash.
const BINARY_SIZE_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Where tarballs go, under the target directory unless `--out` says otherwise.
const DEFAULT_OUT_DIR: &str = "dist";
/// Files from deploy/ that go into every tarball: (source, path in the tarball, executable).
const DEPLOY_FILES: [(&str, &str, bool); 3] = [
    ("deploy/ghatta.service", "ghatta.service", false),
    ("deploy/install.sh", "install.sh", true),
    ("deploy/README.md", "README.md", false),
];
/// The directory of example configs copied into every tarball as `examples/`.
const EXAMPLES_DIR: &str = "deploy/examples";
/// Modes inside the archive: executables and everything else.
const MODE_EXEC: u32 = 0o755;
const MODE_FILE: u32 = 0o644;
const MODE_DIR: u32 = 0o755;

const USAGE: &str = "\
usage: cargo xtask dist [--target TRIPLE]... [--linker zig|gcc] [--out DIR] [--no-build]
       cargo xtask footprint --binary PATH [--runner CMD] [--seconds N]

Builds ghatta with the `dist` profile for each target (default: aarch64-unknown-linux-gnu and
armv7-unknown-linux-gnueabihf) and writes DIR/ghatta-VERSION-TRIPLE.tar.gz and its .sha256.

  --target TRIPLE   build this target (repeatable)
  --linker zig      link with cargo-zigbuild against glibc 2.28 symbols (default; needs
                    `pip install ziglang` and `cargo install cargo-zigbuild --locked`)
  --linker gcc      link with Debian's cross gcc (.cargo/config.toml); the binary then needs
                    the build machine's glibc (2.34+ on Debian 12) on the board
  --out DIR         where to write the tarballs (default: TARGET_DIR/dist, e.g. target/dist)
  --no-build        package binaries already built (by an earlier dist or .ci/arm.sh)
";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linker {
    Zig,
    Gcc,
}

#[derive(Debug)]
struct DistArgs {
    targets: Vec<String>,
    linker: Linker,
    out: Option<PathBuf>,
    build: bool,
}

/// The arguments after `dist`; `None` when help was asked for.
fn parse_dist_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<DistArgs>> {
    let mut d = DistArgs {
        targets: Vec::new(),
        linker: Linker::Zig,
        out: None,
        build: true,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| anyhow!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--target" => d.targets.push(value("--target")?),
            "--linker" => {
                d.linker = match value("--linker")?.as_str() {
                    "zig" => Linker::Zig,
                    "gcc" => Linker::Gcc,
                    other => bail!("--linker {other}: use zig or gcc"),
                }
            }
            "--out" => d.out = Some(PathBuf::from(value("--out")?)),
            "--no-build" => d.build = false,
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if d.targets.is_empty() {
        d.targets = DEFAULT_TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(Some(d))
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("dist") => match parse_dist_args(args)? {
            Some(d) => dist(d),
            None => {
                print!("{USAGE}");
                Ok(())
            }
        },
        Some("footprint") => footprint::run(footprint::parse_args(args)?),
        Some("pgo") => match pgo::parse_args(args)? {
            Some(a) => {
                let root = workspace_root()?;
                let meta = cargo_metadata(&root)?;
                pgo::run(a, &root, &meta.target_dir)
            }
            None => {
                print!("{}", pgo::USAGE);
                Ok(())
            }
        },
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}\n{}\n{}", footprint::USAGE, pgo::USAGE);
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n{USAGE}"),
    }
}

fn dist(args: DistArgs) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let meta = cargo_metadata(&root)?;
    let out_dir = match &args.out {
        Some(o) => o.clone(),
        None => meta.target_dir.join(DEFAULT_OUT_DIR),
    };
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create the output directory {}", out_dir.display()))?;
    if args.build && args.linker == Linker::Zig {
        check_zig()?;
    }
    let epoch = source_date_epoch(&root);
    for target in &args.targets {
        let arch = Arch::of(target)?;
        if args.build {
            build(&root, target, args.linker)?;
        }
        let binary = meta
            .target_dir
            .join(target)
            .join(DIST_PROFILE)
            .join("ghatta");
        let bytes = fs::read(&binary).with_context(|| {
            format!(
                "cannot read {}; build it first (drop --no-build)",
                binary.display()
            )
        })?;
        let facts = inspect_binary(&bytes, arch, args.linker)
            .with_context(|| format!("checking {}", binary.display()))?;
        let name = format!("ghatta-{}-{target}", meta.version);
        let tarball = out_dir.join(format!("{name}.tar.gz"));
        let buildinfo = buildinfo(&root, target, args.linker, &facts);
        let entries = collect_entries(&root, &bytes, &buildinfo)?;
        write_tarball(&tarball, &name, &entries, epoch)?;
        let sum = sha256_file(&tarball)?;
        let sum_path = out_dir.join(format!("{name}.tar.gz.sha256"));
        // The format `sha256sum -c` reads: hash, two spaces, file name.
        fs::write(&sum_path, format!("{sum}  {name}.tar.gz\n"))
            .with_context(|| format!("cannot write {}", sum_path.display()))?;
        println!(
            "{}: binary {} bytes ({:.2} MiB), needs glibc {}, tarball {} sha256 {sum}",
            target,
            bytes.len(),
            bytes.len() as f64 / (1024.0 * 1024.0),
            facts
                .glibc_max
                .map(|(a, b)| format!("{a}.{b}"))
                .unwrap_or_else(|| "none (static)".into()),
            tarball.display(),
        );
    }
    Ok(())
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("{} has no parent directory", manifest.display()))
}

struct Metadata {
    target_dir: PathBuf,
    version: String,
}

/// The target directory (wherever CARGO_TARGET_DIR or config puts it) and ghatta's version.
fn cargo_metadata(root: &Path) -> anyhow::Result<Metadata> {
    let out = Command::new(cargo())
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run `cargo metadata`")?;
    ensure!(
        out.status.success(),
        "`cargo metadata` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("`cargo metadata` printed invalid JSON")?;
    let target_dir = v["target_directory"]
        .as_str()
        .ok_or_else(|| anyhow!("`cargo metadata` gave no target_directory"))?;
    let version = v["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "ghatta"))
        .and_then(|p| p["version"].as_str())
        .ok_or_else(|| anyhow!("package `ghatta` not found in the workspace"))?;
    Ok(Metadata {
        target_dir: PathBuf::from(target_dir),
        version: version.to_string(),
    })
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// cargo-zigbuild and zig must both be there; say how to get them if not.
fn check_zig() -> anyhow::Result<()> {
    // `cargo zigbuild` has no --version; `--help` exits 0 exactly when the subcommand exists.
    let zigbuild = Command::new(cargo()).args(["zigbuild", "--help"]).output();
    ensure!(
        matches!(&zigbuild, Ok(o) if o.status.success()),
        "cargo-zigbuild is not installed; install it with `cargo install cargo-zigbuild \
         --locked` (and zig with `pip install ziglang`), or pass --linker gcc to link with \
         Debian's cross gcc (the binary then needs glibc 2.34+ on the board)"
    );
    let zig = Command::new("zig").arg("version").output();
    let py_zig = Command::new("python3")
        .args(["-m", "ziglang", "version"])
        .output();
    ensure!(
        matches!(&zig, Ok(o) if o.status.success())
            || matches!(&py_zig, Ok(o) if o.status.success()),
        "zig is not installed; install it with `pip install ziglang` (cargo-zigbuild finds it \
         there), or pass --linker gcc"
    );
    Ok(())
}

fn build(root: &Path, target: &str, linker: Linker) -> anyhow::Result<()> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root);
    match linker {
        // The `.2.28` suffix is cargo-zigbuild's way to name the glibc to link against.
        Linker::Zig => cmd
            .args(["zigbuild", "--target"])
            .arg(format!("{target}.{}.{}", GLIBC_FLOOR.0, GLIBC_FLOOR.1)),
        Linker::Gcc => cmd.args(["build", "--target", target]),
    };
    // The board's package alone: the simulator, the central and the test switches are other
    // packages (or features none of them enables here), so none of it is in the binary.
    cmd.args(["--profile", DIST_PROFILE, "--package", "ghatta", "--locked"]);
    println!("xtask: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo to build {target}"))?;
    ensure!(
        status.success(),
        "building ghatta for {target} failed ({status}); the compiler's messages are above"
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Aarch64,
    Arm,
}

/// ELF `e_machine` values.
const EM_ARM: u16 = 40;
const EM_AARCH64: u16 = 183;

impl Arch {
    fn of(target: &str) -> anyhow::Result<Arch> {
        if target.starts_with("aarch64-") {
            Ok(Arch::Aarch64)
        } else if target.starts_with("armv7-") || target.starts_with("arm-") {
            Ok(Arch::Arm)
        } else {
            bail!("{target} is not an ARM target; dist builds for the boards (aarch64-*, armv7-*)")
        }
    }

    fn e_machine(self) -> u16 {
        match self {
            Arch::Aarch64 => EM_AARCH64,
            Arch::Arm => EM_ARM,
        }
    }
}

/// What the checks found in a built binary.
#[derive(Debug)]
struct BinaryFacts {
    /// Highest `GLIBC_x.y` symbol version it needs; `None` for a static binary.
    glibc_max: Option<(u32, u32)>,
}

/// Check a binary before packing it: an ELF for the right machine, within the size budget, and
/// (linked by zig) needing no glibc newer than the floor.
fn inspect_binary(bytes: &[u8], arch: Arch, linker: Linker) -> anyhow::Result<BinaryFacts> {
    ensure!(
        bytes.len() > 20 && bytes.starts_with(b"\x7fELF"),
        "not an ELF file"
    );
    // e_machine sits at offset 18; both targets are little-endian.
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    ensure!(
        machine == arch.e_machine(),
        "ELF machine {machine} is not {:?} ({}); a stale or host binary?",
        arch,
        arch.e_machine()
    );
    let size = bytes.len() as u64;
    ensure!(
        size <= BINARY_SIZE_MAX_BYTES,
        "the binary is {size} bytes, over the {BINARY_SIZE_MAX_BYTES}-byte budget; find what \
         grew (e.g. `cargo bloat --profile dist --target ...`) before shipping it"
    );
    let glibc_max = glibc_versions(bytes).into_iter().max();
    if linker == Linker::Zig
        && let Some(v) = glibc_max
    {
        ensure!(
            v <= GLIBC_FLOOR,
            "the binary needs glibc {}.{}, above the {}.{} floor; was it linked by zig?",
            v.0,
            v.1,
            GLIBC_FLOOR.0,
            GLIBC_FLOOR.1
        );
    }
    Ok(BinaryFacts { glibc_max })
}

/// Every `GLIBC_x.y` version string in the binary (they live in its dynamic string table).
fn glibc_versions(bytes: &[u8]) -> Vec<(u32, u32)> {
    const PREFIX: &[u8] = b"GLIBC_";
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&bytes[i..], PREFIX) {
        let start = i + at + PREFIX.len();
        let end = bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'.'))
            .map_or(bytes.len(), |n| start + n);
        let text = String::from_utf8_lossy(&bytes[start..end]);
        let mut parts = text.split('.').map(|p| p.parse::<u32>());
        if let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) {
            found.push((major, minor));
        }
        i = end.max(start);
    }
    found.sort_unstable();
    found.dedup();
    found
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A text file in the tarball saying how the binary was built.
fn buildinfo(root: &Path, target: &str, linker: Linker, facts: &BinaryFacts) -> String {
    let rustc = Command::new("rustc")
        .current_dir(root)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let commit = git(root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(root, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    let mut s = String::new();
    let _ = writeln!(s, "# How this ghatta release was built (cargo xtask dist).");
    let _ = writeln!(s, "target = {target}");
    let _ = writeln!(s, "profile = {DIST_PROFILE}");
    let _ = writeln!(
        s,
        "linker = {}",
        match linker {
            Linker::Zig => format!(
                "cargo-zigbuild (glibc {}.{} symbols)",
                GLIBC_FLOOR.0, GLIBC_FLOOR.1
            ),
            Linker::Gcc => "Debian cross gcc".to_string(),
        }
    );
    let _ = writeln!(
        s,
        "glibc_required = {}",
        facts
            .glibc_max
            .map(|(a, b)| format!("{a}.{b}"))
            .unwrap_or_else(|| "none".into())
    );
    let _ = writeln!(s, "rustc = {rustc}");
    let _ = writeln!(
        s,
        "commit = {commit}{}",
        if dirty { " (with local changes)" } else { "" }
    );
    s
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The archive's timestamp: SOURCE_DATE_EPOCH, else the commit's time, else 0.
fn source_date_epoch(root: &Path) -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .or_else(|| git(root, &["log", "-1", "--format=%ct"]).and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// One file in the tarball: path inside the top directory, contents, executable or not.
struct Entry {
    path: String,
    data: Vec<u8>,
    executable: bool,
}

fn collect_entries(root: &Path, binary: &[u8], buildinfo: &str) -> anyhow::Result<Vec<Entry>> {
    let mut entries = vec![
        Entry {
            path: "bin/ghatta".into(),
            data: binary.to_vec(),
            executable: true,
        },
        Entry {
            path: "BUILDINFO".into(),
            data: buildinfo.as_bytes().to_vec(),
            executable: false,
        },
    ];
    for (src, dst, executable) in DEPLOY_FILES {
        let path = root.join(src);
        let data = fs::read(&path).with_context(|| {
            format!("cannot read {}; it goes into every tarball", path.display())
        })?;
        entries.push(Entry {
            path: dst.into(),
            data,
            executable,
        });
    }
    let examples = root.join(EXAMPLES_DIR);
    let mut names: Vec<_> = fs::read_dir(&examples)
        .with_context(|| format!("cannot list {}", examples.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot list {}", examples.display()))?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name().to_string_lossy().to_string();
        if !e.file_type()?.is_file() || !name.ends_with(".toml") {
            continue;
        }
        entries.push(Entry {
            path: format!("examples/{name}"),
            data: fs::read(e.path())
                .with_context(|| format!("cannot read {}", e.path().display()))?,
            executable: false,
        });
    }
    // SHA256SUMS covers every other file; install.sh checks it before installing anything.
    let mut sums = String::new();
    for e in &entries {
        let _ = writeln!(sums, "{}  {}", hex(&Sha256::digest(&e.data)), e.path);
    }
    entries.push(Entry {
        path: "SHA256SUMS".into(),
        data: sums.into_bytes(),
        executable: false,
    });
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

fn write_tarball(path: &Path, top: &str, entries: &[Entry], epoch: u64) -> anyhow::Result<()> {
    let file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    // No file name and a zero time in the gzip header: the same inputs give the same bytes.
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, Compression::best());
    let mut tar = tar::Builder::new(gz);
    let mut dirs: Vec<String> = vec![top.to_string()];
    for e in entries {
        if let Some((dir, _)) = e.path.rsplit_once('/') {
            let d = format!("{top}/{dir}");
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, MODE_DIR, 0, epoch);
        tar.append_data(&mut h, format!("{d}/"), std::io::empty())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for e in entries {
        let mode = if e.executable { MODE_EXEC } else { MODE_FILE };
        let mut h = header(tar::EntryType::Regular, mode, e.data.len() as u64, epoch);
        tar.append_data(&mut h, format!("{top}/{}", e.path), e.data.as_slice())
            .with_context(|| format!("writing {} into {}", e.path, path.display()))?;
    }
    let gz = tar
        .into_inner()
        .with_context(|| format!("finishing {}", path.display()))?;
    let mut file = gz
        .finish()
        .with_context(|| format!("finishing {}", path.display()))?;
    file.flush()?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64, epoch: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(epoch);
    h.set_uid(0);
    h.set_gid(0);
    // Names are set by append_data; owner names stay empty (root by id).
    h
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&Sha256::digest(&data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_versions_are_found_and_ordered() {
        let blob = b"\0GLIBC_2.17\0libc.so.6\0GLIBC_2.28\0GLIBC_2.4\0GLIBC_PRIVATE\0GLIBC_2.28\0";
        assert_eq!(glibc_versions(blob), vec![(2, 4), (2, 17), (2, 28)]);
        assert_eq!(glibc_versions(b"no versions here"), vec![]);
    }

    #[test]
    fn binaries_over_the_floor_or_for_another_machine_are_refused() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        let mut ok = elf.clone();
        ok.extend_from_slice(b"\0GLIBC_2.28\0");
        assert!(inspect_binary(&ok, Arch::Aarch64, Linker::Zig).is_ok());
        let mut new = elf.clone();
        new.extend_from_slice(b"\0GLIBC_2.34\0");
        let e = inspect_binary(&new, Arch::Aarch64, Linker::Zig).unwrap_err();
        assert!(e.to_string().contains("2.34"), "{e}");
        assert!(inspect_binary(&new, Arch::Aarch64, Linker::Gcc).is_ok());
        let e = inspect_binary(&ok, Arch::Arm, Linker::Zig).unwrap_err();
        assert!(e.to_string().contains("ELF machine"), "{e}");
    }

    #[test]
    fn args_default_to_both_arm_targets() {
        let d = parse_dist_args(std::iter::empty()).unwrap().unwrap();
        assert_eq!(d.targets, DEFAULT_TARGETS);
        assert_eq!(d.linker, Linker::Zig);
        assert!(d.build);
        let args = [
            "--target",
            "aarch64-unknown-linux-gnu",
            "--linker",
            "gcc",
            "--no-build",
        ];
        let d = parse_dist_args(args.iter().map(|s| s.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(d.targets, ["aarch64-unknown-linux-gnu"]);
        assert_eq!(d.linker, Linker::Gcc);
        assert!(!d.build);
        assert!(parse_dist_args(["--linker", "lld"].iter().map(|s| s.to_string())).is_err());
    }

    #[test]
    fn tarball_is_reproducible_and_lists_checksums() {
        let dir = std::env::temp_dir().join(format!("xtask-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let entries = || {
            vec![
                Entry {
                    path: "bin/ghatta".into(),
                    data: b"binary".to_vec(),
                    executable: true,
                },
                Entry {
                    path: "README.md".into(),
                    data: b"readme".to_vec(),
                    executable: false,
                },
            ]
        };
        let (a, b) = (dir.join("a.tar.gz"), dir.join("b.tar.gz"));
        write_tarball(&a, "top", &entries(), 1_700_000_000).unwrap();
        write_tarball(&b, "top", &entries(), 1_700_000_000).unwrap();
        assert_eq!(sha256_file(&a).unwrap(), sha256_file(&b).unwrap());
        let gz = flate2::read::GzDecoder::new(fs::File::open(&a).unwrap());
        let mut archive = tar::Archive::new(gz);
        let listed: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            vec![
                ("top/".to_string(), MODE_DIR),
                ("top/bin/".to_string(), MODE_DIR),
                ("top/bin/ghatta".to_string(), MODE_EXEC),
                ("top/README.md".to_string(), MODE_FILE),
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }
}
