//! The house rules a compiler does not check, as tests over the workspace's sources (they run
//! with `cargo test --workspace`): every Rust file opens with a `//!` line saying what it is;
//! every crate forbids `unsafe` (the actor SDK's ABI module, which must talk to raw wasm
//! memory, is the one exception, and says so); and the board node's top-level modules only
//! import modules below them (ARCHITECTURE.md, "Dependency rules"), so no two import each
//! other.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The workspace root (xtask's manifest lives one level down).
    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask is inside the workspace")
            .to_path_buf()
    }

    /// Every `.rs` file under `dir`, skipping build output.
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    rust_files(&p, out);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }

    /// The crates of the workspace (directories with a Cargo.toml and a src/).
    const CRATES: [&str; 10] = [
        "proto",
        "controller",
        "central",
        "simulate",
        "actors/sdk",
        "actors/balancing",
        "actors/billing",
        "hal",
        "sim",
        "xtask",
    ];

    #[test]
    fn every_source_file_opens_with_a_doc_line() {
        let mut files = Vec::new();
        for c in CRATES {
            rust_files(&root().join(c), &mut files);
        }
        assert!(files.len() > 100, "found only {} files", files.len());
        let missing: Vec<String> = files
            .iter()
            .filter(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                !text.trim_start().starts_with("//!")
            })
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "these files do not open with a `//!` line saying what they are:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn every_crate_forbids_unsafe_code() {
        let mut roots = Vec::new();
        for c in CRATES {
            for f in ["src/lib.rs", "src/main.rs"] {
                let p = root().join(c).join(f);
                if p.exists() {
                    roots.push(p);
                }
            }
        }
        let lacking: Vec<String> = roots
            .iter()
            .filter(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                !text.contains("#![forbid(unsafe_code)]") && !text.contains("#![deny(unsafe_code)]")
            })
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            lacking.is_empty(),
            "these crate roots do not forbid unsafe code:\n{}",
            lacking.join("\n")
        );
    }

    /// The board node's top-level modules, lowest first: each may import only modules
    /// before it in this list (ARCHITECTURE.md, "Dependency rules").
    const NODE_LAYERS: [&str; 20] = [
        "clock",
        "storage",
        "observe",
        "actors",
        "net",
        "raft",
        "state",
        "rpc",
        "node",
        "journal",
        "field",
        "wan",
        "notify",
        "admin",
        "config",
        "runner",
        "sd_notify",
        "process",
        "cli",
        "main",
    ];

    /// The top-level module a source file of `controller/src` belongs to.
    fn module_of(src: &Path, file: &Path) -> String {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        first.trim_end_matches(".rs").to_string()
    }

    /// The crate modules a file's code (comments and strings aside) names as `crate::m`.
    fn imports(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                let after = &rest[i + "crate::".len()..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
                rest = after;
            }
        }
        out
    }

    #[test]
    fn node_modules_import_only_modules_below_them() {
        let src = root().join("controller/src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let rank = |m: &str| NODE_LAYERS.iter().position(|l| *l == m);
        let mut wrong = Vec::new();
        for f in &files {
            let m = module_of(&src, f);
            if m == "lib" {
                continue;
            }
            let Some(mine) = rank(&m) else {
                wrong.push(format!(
                    "{}: module `{m}` has no place in NODE_LAYERS (xtask/src/tidy.rs); add it where its imports allow",
                    f.display()
                ));
                continue;
            };
            let text = std::fs::read_to_string(f).unwrap_or_default();
            for used in imports(&text) {
                if used == m {
                    continue;
                }
                match rank(&used) {
                    Some(r) if r < mine => {}
                    _ => wrong.push(format!(
                        "{}: `{m}` imports `crate::{used}`, which is not below it",
                        f.display()
                    )),
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "module layering broken (ARCHITECTURE.md, \"Dependency rules\"):\n{}",
            wrong.join("\n")
        );
    }

    /// The crates `cargo tree -p PACKAGE -e normal` lists (what its binary links).
    fn linked_crates(package: &str) -> Vec<String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .current_dir(root())
            .args([
                "tree",
                "--offline",
                "-e",
                "normal",
                "--prefix",
                "none",
                "-p",
                package,
            ])
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "cargo tree -p {package}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// The PostgreSQL client is the central's alone: the board's binary (`ghatta`) links none
    /// of it (size budget, and nothing on a board talks to a database server).
    #[test]
    fn the_board_binary_links_no_postgresql_client() {
        const POSTGRES: [&str; 5] = [
            "tokio-postgres",
            "postgres-protocol",
            "postgres-types",
            "deadpool-postgres",
            "ghatta-central",
        ];
        let central = linked_crates("ghatta-central");
        assert!(
            central.iter().any(|c| c == "tokio-postgres"),
            "the check must see the client where it is: {central:?}"
        );
        let board = linked_crates("ghatta");
        let found: Vec<_> = board
            .iter()
            .filter(|c| POSTGRES.contains(&c.as_str()))
            .collect();
        assert!(found.is_empty(), "the board binary links {found:?}");
    }

    #[test]
    fn the_layering_check_sees_a_backward_import() {
        // The checker itself: a `use crate::wan` inside `state` must be found.
        let found =
            imports("use crate::wan::Stream; // crate::ignored\nlet x = crate::raft::codec;");
        assert_eq!(found, vec!["wan".to_string(), "raft".to_string()]);
    }
}
