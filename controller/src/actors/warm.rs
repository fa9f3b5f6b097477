//! Warm instances: one actor instance reused across deliveries, reset between them to exactly
//! the state a fresh instance starts in, so reuse is invisible to the actor and to fuel.
//!
//! What a fresh instance of a module starts with is its linear memory and its globals right
//! after instantiation. A reset restores both: the memory from a copy taken once per module
//! (every instantiation of the same module writes the same bytes), the mutable globals from
//! their values after instantiation. The rest of an instance cannot change under the actor's
//! code, or the module is not reused:
//! - the memory's size: a delivery that grew it gives its instance up (wasm cannot shrink a
//!   memory) and the next delivery instantiates afresh;
//! - globals the module does not export: the host adds an export for each mutable one before
//!   compiling ([`plan`]; exports change no code, so no fuel), and restores them through it;
//! - tables and passive segments: a module whose code has an instruction that changes them
//!   (`table.set`, `table.grow`, `table.fill`, `table.copy`, `table.init`, `elem.drop`,
//!   `data.drop`) runs every delivery in a fresh instance, as does one with a start function
//!   (it would run once per instance instead of once per delivery, on another delivery's
//!   state), an imported memory, table or global, or other than one memory.
//!
//! So a cold replica (fresh instances), a restarted one and a warm one compute the same
//! statuses, effects and fuel for the same deliveries; `tests.rs` holds them to it, traps
//! mid-delivery included.

use ghatta_proto::frame::{get_varint, put_varint};
use wasmi::{Global, Memory, Store, TypedFunc, Val};
use wasmparser::{Operator, Parser, Payload, TypeRef};

use super::HostCtx;

/// Warm instances kept per module: as many as deliveries to one module may run at once (a
/// node's apply task runs one; the simulator's nodes share a host across its two lockstep
/// threads). Each holds the module's initial memory (64 KiB for the compiled-in actors), so
/// a board keeps one per actor.
pub const WARM_INSTANCES_MAX: usize = 4;

/// Names of the exports the host adds for a module's mutable globals (followed by the
/// global's index). A module that already exports such a name is not reused.
const GLOBAL_EXPORT_PREFIX: &str = "ghatta:reset-global-";

/// How an instance of a module is reset, decided once when it is compiled.
#[derive(Debug, Clone)]
pub(crate) struct ResetPlan {
    /// The exports the host added, one per mutable global, in index order.
    globals: Vec<String>,
}

/// The bytes to compile (with an export added for every mutable global) and how to reset an
/// instance; `None` when an instance of the module cannot be reset exactly (see the module
/// documentation) or the bytes do not parse (the compiler then says why).
pub(crate) fn plan(bytes: &[u8]) -> Option<(Vec<u8>, ResetPlan)> {
    let mut mutable = Vec::new();
    let mut memories = 0u32;
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::ImportSection(imports) => {
                for import in imports {
                    if !matches!(import.ok()?.ty, TypeRef::Func(_)) {
                        return None;
                    }
                }
            }
            Payload::GlobalSection(globals) => {
                for (index, global) in globals.into_iter().enumerate() {
                    if global.ok()?.ty.mutable {
                        mutable.push(u32::try_from(index).ok()?);
                    }
                }
            }
            Payload::MemorySection(section) => memories += section.count(),
            Payload::StartSection { .. } => return None,
            Payload::ExportSection(exports) => {
                for export in exports {
                    names.push(export.ok()?.name);
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().ok()?;
                while !ops.eof() {
                    if matches!(
                        ops.read().ok()?,
                        Operator::TableSet { .. }
                            | Operator::TableGrow { .. }
                            | Operator::TableFill { .. }
                            | Operator::TableCopy { .. }
                            | Operator::TableInit { .. }
                            | Operator::ElemDrop { .. }
                            | Operator::DataDrop { .. }
                    ) {
                        return None;
                    }
                }
            }
            _ => {}
        }
    }
    if memories != 1 || names.iter().any(|n| n.starts_with(GLOBAL_EXPORT_PREFIX)) {
        return None;
    }
    let added: Vec<(String, u32)> = mutable
        .iter()
        .map(|i| (format!("{GLOBAL_EXPORT_PREFIX}{i}"), *i))
        .collect();
    let rewritten = with_global_exports(bytes, &added)?;
    Some((
        rewritten,
        ResetPlan {
            globals: added.into_iter().map(|(name, _)| name).collect(),
        },
    ))
}

/// `bytes` with `added` (name, global index) appended to its export section. The sections are
/// walked at the top level only; every other byte is copied as it is.
fn with_global_exports(bytes: &[u8], added: &[(String, u32)]) -> Option<Vec<u8>> {
    const EXPORT_SECTION: u8 = 7;
    const EXTERNAL_GLOBAL: u8 = 3;
    let mut out = Vec::with_capacity(bytes.len() + 32 * added.len());
    out.extend_from_slice(bytes.get(..8)?);
    let mut at = 8;
    let mut rewritten = false;
    while at < bytes.len() {
        let id = *bytes.get(at)?;
        let (size, content_at) = read_leb(bytes, at + 1)?;
        let end = content_at.checked_add(usize::try_from(size).ok()?)?;
        let content = bytes.get(content_at..end)?;
        if id == EXPORT_SECTION && !rewritten {
            let (count, entries_at) = read_leb(content, 0)?;
            let mut section = Vec::new();
            write_leb(
                &mut section,
                count.checked_add(u32::try_from(added.len()).ok()?)?,
            );
            section.extend_from_slice(&content[entries_at..]);
            for (name, index) in added {
                write_leb(&mut section, u32::try_from(name.len()).ok()?);
                section.extend_from_slice(name.as_bytes());
                section.push(EXTERNAL_GLOBAL);
                write_leb(&mut section, *index);
            }
            out.push(EXPORT_SECTION);
            write_leb(&mut out, u32::try_from(section.len()).ok()?);
            out.extend_from_slice(&section);
            rewritten = true;
        } else {
            out.extend_from_slice(bytes.get(at..end)?);
        }
        at = end;
    }
    // The ABI requires exports, so a module without an export section is refused anyway.
    rewritten.then_some(out)
}

/// An unsigned LEB128 u32 at `at`: its value and the offset after it.
fn read_leb(bytes: &[u8], at: usize) -> Option<(u32, usize)> {
    let mut pos = at;
    let value = get_varint(bytes, &mut pos)?;
    Some((u32::try_from(value).ok()?, pos))
}

fn write_leb(out: &mut Vec<u8>, value: u32) {
    put_varint(out, u64::from(value));
}

/// An instance kept between deliveries with what a reset needs.
pub(crate) struct Warm {
    pub(crate) store: Store<HostCtx>,
    pub(crate) alloc: TypedFunc<i32, i32>,
    pub(crate) handle: TypedFunc<(i32, i32), i32>,
    pub(crate) memory: Memory,
    /// Each mutable global and its value after instantiation.
    globals: Vec<(Global, Val)>,
    /// The memory's size after instantiation, pages.
    pages: u64,
}

impl Warm {
    /// Wraps a freshly instantiated `instance` (nothing has run in it yet).
    pub(crate) fn new(
        mut store: Store<HostCtx>,
        instance: wasmi::Instance,
        plan: &ResetPlan,
    ) -> Result<Self, wasmi::Error> {
        let alloc = instance.get_typed_func::<i32, i32>(&store, "ghatta_alloc")?;
        let handle = instance.get_typed_func::<(i32, i32), i32>(&store, "ghatta_handle")?;
        let memory = instance
            .get_memory(&store, "memory")
            .ok_or_else(|| wasmi::Error::new("actor exports no memory"))?;
        let mut globals = Vec::with_capacity(plan.globals.len());
        for name in &plan.globals {
            let global = instance
                .get_global(&store, name)
                .ok_or_else(|| wasmi::Error::new("a reset export is missing"))?;
            globals.push((global, global.get(&store)));
        }
        let pages = memory.size(&store);
        store.data_mut().memory = Some(memory);
        Ok(Warm {
            store,
            alloc,
            handle,
            memory,
            globals,
            pages,
        })
    }

    /// The memory right after instantiation: taken from a new instance, before any call.
    pub(crate) fn image(&self) -> Box<[u8]> {
        self.memory.data(&self.store).into()
    }

    /// Puts memory and globals back as they were after instantiation (`pristine`: the
    /// memory's bytes then, [`Warm::image`]). False when the instance cannot be reset (its
    /// memory grew): it is then dropped.
    pub(crate) fn reset(&mut self, pristine: &[u8]) -> bool {
        if self.memory.size(&self.store) != self.pages {
            return false;
        }
        let data = self.memory.data_mut(&mut self.store);
        if data.len() != pristine.len() {
            return false;
        }
        data.copy_from_slice(pristine);
        for (global, value) in &self.globals {
            if global.set(&mut self.store, value.clone()).is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb_reads_u32_and_refuses_more() {
        let mut out = Vec::new();
        write_leb(&mut out, u32::MAX);
        assert_eq!(read_leb(&out, 0), Some((u32::MAX, out.len())));
        assert_eq!(read_leb(&[0x80, 0x80, 0x80, 0x80, 0x10], 0), None);
        assert_eq!(read_leb(&[0x80], 0), None);
    }

    #[test]
    fn plan_exports_mutable_globals_and_refuses_what_it_cannot_reset() {
        let module = wat::parse_str(
            r#"(module
                 (memory (export "memory") 1)
                 (global $sp (mut i32) (i32.const 1024))
                 (global $k i32 (i32.const 7))
                 (global $n (mut i64) (i64.const 0))
                 (func (export "f") (result i32) global.get $sp))"#,
        )
        .unwrap();
        let (bytes, reset) = plan(&module).expect("resettable");
        assert_eq!(
            reset.globals,
            ["ghatta:reset-global-0", "ghatta:reset-global-2"]
        );
        let engine = wasmi::Engine::default();
        let compiled = wasmi::Module::new(&engine, &bytes).expect("the rewrite is valid wasm");
        let exports: std::collections::BTreeSet<&str> =
            compiled.exports().map(|e| e.name()).collect();
        assert_eq!(
            exports,
            [
                "f",
                "ghatta:reset-global-0",
                "ghatta:reset-global-2",
                "memory"
            ]
            .into()
        );

        for refused in [
            // A start function would run once per instance, not once per delivery.
            r#"(module (memory (export "memory") 1) (func $s) (start $s))"#,
            // A table the code can change.
            r#"(module (memory (export "memory") 1) (table 1 funcref)
                 (func (export "f") (drop (table.grow 0 (ref.null func) (i32.const 1)))))"#,
            // A passive segment the code can drop.
            r#"(module (memory (export "memory") 1) (data "x") (func (export "f") (data.drop 0)))"#,
            // An imported global.
            r#"(module (import "ghatta" "g" (global (mut i32))) (memory (export "memory") 1))"#,
            // No memory of its own.
            r#"(module (import "ghatta" "m" (memory 1)))"#,
            // A name the host would add.
            r#"(module (memory (export "memory") 1) (global (export "ghatta:reset-global-9") i32 (i32.const 0)))"#,
        ] {
            let module = wat::parse_str(refused).unwrap();
            assert!(plan(&module).is_none(), "{refused}");
        }
        assert!(plan(b"\0asm garbage").is_none());
    }
}
