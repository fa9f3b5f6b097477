//! A start-up check that this build's interpreter runs wasm in constant native stack.
//!
//! wasmi's fast dispatch hands each instruction to the next by a tail call from one handler to
//! the next, and relies on LLVM turning those calls into jumps. LLVM does in an optimising
//! build of wasmi (wasmi picks the portable loop dispatch by itself at opt-level 0 or 1, and
//! `Cargo.toml` builds wasmi optimised with debug assertions off in every profile). If some
//! build did not, every executed wasm instruction would keep a native stack frame, and an actor
//! that loops would overflow the stack and abort the node long before its fuel ran out: one bad
//! actor would take down every replica. The probe runs a short loop that calls into the host,
//! and compares the native stack depth at its first and last call: equal in a sound build,
//! deeper by every iteration's frames in an unsound one. An unsound build then refuses to start
//! with an error that says why, instead of dying on the first looping actor. The probe runs
//! once per process (the answer is a property of the binary); `ghatta selftest` runs it on the
//! ARM builds under qemu in CI.

use std::sync::OnceLock;

use wasmi::{Caller, Engine, Linker, Module, Store};

/// The probe module, assembled (and stripped of its name section) from:
///
/// ```text
/// (module
///   (import "probe" "here" (func $here))
///   (func (export "spin") (param $n i32)
///     (loop $again
///       call $here
///       local.get $n
///       i32.const 1
///       i32.sub
///       local.tee $n
///       br_if $again)))
/// ```
const PROBE_WASM: [u8; 68] = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x60, 0x00, 0x00, 0x60, 0x01,
    0x7f, 0x00, 0x02, 0x0e, 0x01, 0x05, 0x70, 0x72, 0x6f, 0x62, 0x65, 0x04, 0x68, 0x65, 0x72, 0x65,
    0x00, 0x00, 0x03, 0x02, 0x01, 0x01, 0x07, 0x08, 0x01, 0x04, 0x73, 0x70, 0x69, 0x6e, 0x00, 0x01,
    0x0a, 0x12, 0x01, 0x10, 0x00, 0x03, 0x40, 0x10, 0x00, 0x20, 0x00, 0x41, 0x01, 0x6b, 0x22, 0x00,
    0x0d, 0x00, 0x0b, 0x0b,
];

/// Loop iterations of the probe. Each runs six wasm instructions; in an unsound build each
/// keeps a frame of at least 16 bytes, so the stack grows by at least 96 KiB: far past
/// [`STACK_GROWTH_MAX_BYTES`], far short of any thread's stack (2 MiB for tokio's).
const PROBE_ITERATIONS: i32 = 1_024;

/// Native stack growth between the probe's first and last host call that is still taken as
/// constant, bytes. A sound build shows none; the margin only keeps a compiler's choice of
/// where to spill from ever mattering.
const STACK_GROWTH_MAX_BYTES: usize = 4_096;

/// Fuel for the probe: its loop needs a few thousand.
const PROBE_FUEL: u64 = 1_000_000;

/// The native stack addresses the probe's host calls ran at: first and last.
#[derive(Default)]
struct Depths {
    first: Option<usize>,
    last: usize,
}

/// `Ok` if wasm runs in constant native stack under `engine`'s interpreter (checked once per
/// process); otherwise what was measured.
pub(super) fn check(engine: &Engine) -> Result<(), String> {
    static VERDICT: OnceLock<Result<(), String>> = OnceLock::new();
    VERDICT.get_or_init(|| run(engine)).clone()
}

fn run(engine: &Engine) -> Result<(), String> {
    let module = Module::new(engine, PROBE_WASM).map_err(|e| format!("probe module: {e}"))?;
    let mut linker = Linker::<Depths>::new(engine);
    linker
        .func_wrap("probe", "here", |mut caller: Caller<'_, Depths>| {
            let marker = 0u8;
            let at = std::hint::black_box(&marker) as *const u8 as usize;
            let depths = caller.data_mut();
            depths.first.get_or_insert(at);
            depths.last = at;
        })
        .map_err(|e| format!("probe import: {e}"))?;
    let mut store = Store::new(engine, Depths::default());
    // The host's engines meter fuel; one without metering refuses a budget, which is fine.
    let _ = store.set_fuel(PROBE_FUEL);
    let spin = linker
        .instantiate_and_start(&mut store, &module)
        .and_then(|instance| instance.get_typed_func::<i32, ()>(&store, "spin"))
        .map_err(|e| format!("probe instance: {e}"))?;
    spin.call(&mut store, PROBE_ITERATIONS)
        .map_err(|e| format!("probe run: {e}"))?;
    let depths = store.data();
    judge(depths.first.unwrap_or(depths.last), depths.last)
}

/// The verdict on the stack addresses of the first and last host call (the stack grows
/// down on every target ghatta builds for, but either direction is caught).
fn judge(first: usize, last: usize) -> Result<(), String> {
    let growth = first.abs_diff(last);
    if growth > STACK_GROWTH_MAX_BYTES {
        return Err(format!(
            "the native stack grew by {growth} bytes over {PROBE_ITERATIONS} iterations of a \
             wasm loop (at most {STACK_GROWTH_MAX_BYTES} allowed)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_build_runs_wasm_in_constant_stack() {
        let engine = Engine::default();
        assert_eq!(run(&engine), Ok(()));
    }

    #[test]
    fn growth_beyond_the_margin_is_refused_either_way() {
        assert!(judge(1 << 20, (1 << 20) - STACK_GROWTH_MAX_BYTES).is_ok());
        let err = judge(1 << 20, (1 << 20) - 96 * 1024).unwrap_err();
        assert!(err.contains("grew by 98304 bytes"), "{err}");
        assert!(judge(1 << 20, (1 << 20) + 96 * 1024).is_err());
    }
}
