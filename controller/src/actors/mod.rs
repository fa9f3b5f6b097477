//! The actor host: runs the balancing and billing actors under wasmi, deterministically.
//!
//! Determinism rules (DESIGN principle 1):
//! - modules are compiled **eagerly** (`CompilationMode::Eager`): with lazy translation wasmi
//!   charges translation as fuel, so a replica with a cold cache could run out of fuel where a
//!   warm one did not;
//! - each delivery runs with a fixed fuel budget and memory limit in an instance that is
//!   **fresh or reset to exactly a fresh one's state** (`warm.rs`: linear memory and globals as
//!   after instantiation), so no hidden state survives in linear memory between deliveries: an
//!   actor's state is only what it wrote through the host, and a cold replica computes what a
//!   warm one does, fuel included;
//! - the host offers no clock and no randomness; time is the entry's log time;
//! - a trap (including running out of fuel or memory, or breaking a host limit) discards every
//!   write and output of that delivery, and is recorded as the outcome on every replica.
//!
//! [`DeliveryCache`]: an optional cache ([`ActorHost::with_delivery_cache`]; the simulator's
//! `ReplayCache` is one) that answers a delivery another replica already made on the same
//! state without running it. The host owns the trait; a board has no cache.

pub mod deploy;
pub mod embedded;
mod stack_probe;
#[cfg(test)]
mod tests;
mod warm;

use std::sync::{Arc, Mutex, OnceLock};

use std::collections::BTreeMap;

use ghatta_actor_sdk::abi;
pub use ghatta_proto::outbox::ActorKind;
pub use warm::WARM_INSTANCES_MAX;
use wasmi::{
    Caller, CompilationMode, Config, Engine, Extern, Linker, Module, Store, StoreLimits,
    StoreLimitsBuilder,
};

/// Keys an execution read (full keys, with the actor prefix) and the values it found
/// (`None`: absent), in first-read order: what a [`DeliveryCache`] must see unchanged to
/// answer the same delivery again.
pub type Reads = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A cache of executed deliveries, consulted before running an actor and told of every run.
/// An implementation must answer only when the outcome would be the same byte for byte (same
/// module and limits, delivery bytes, values of every key read, total state size), so a hit
/// changes nothing any replica computes.
pub trait DeliveryCache: Send + Sync + std::fmt::Debug {
    /// The recorded outcome of this delivery if `state` is what it was read from; the
    /// recorded writes are then applied to `state`, as running the actor would.
    fn replay(
        &self,
        kind: ActorKind,
        delivery: &[u8],
        state: &mut ActorState,
    ) -> Option<(Status, Effects)>;

    /// Records an execution (`state_bytes` and `reads` as of before it).
    fn record(
        &self,
        kind: ActorKind,
        delivery: &[u8],
        state_bytes: u64,
        reads: Reads,
        status: Status,
        effects: &Effects,
    );
}

/// Limits applied to every delivery. Defaults are sized for the real actors with a wide margin
/// and for boards with little memory; all are node configuration (`[actors]` in node.toml),
/// and every replica must use the same values (they are part of the deterministic outcome).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorLimits {
    /// Fuel (roughly wasm instructions) per delivery. 20 million covers a billing tick over a
    /// few thousand accounts (measured ~10k fuel per account) and stops an infinite loop in
    /// well under a second on a Raspberry Pi.
    pub fuel_per_delivery: u64,
    /// Linear memory per instance, bytes. 2 MiB: the actors' heaps peak at a few hundred KiB.
    pub memory_bytes: usize,
    /// Largest state key, bytes.
    pub max_key_bytes: usize,
    /// Largest state value, bytes (one account or a tariff table).
    pub max_value_bytes: usize,
    /// State writes per delivery (a billing tick writes one per account).
    pub max_writes_per_delivery: usize,
    /// Outputs per delivery.
    pub max_outputs_per_delivery: usize,
    /// Total actor state, bytes, summed over keys and values: bounds the in-memory state map
    /// and the snapshot. 16 MiB is ~50,000 accounts with their token history.
    pub max_state_bytes: u64,
}

impl Default for ActorLimits {
    fn default() -> Self {
        ActorLimits {
            fuel_per_delivery: 20_000_000,
            memory_bytes: 2 * 1024 * 1024,
            max_key_bytes: 256,
            max_value_bytes: 16 * 1024,
            max_writes_per_delivery: 8 * 1024,
            max_outputs_per_delivery: 8 * 1024,
            max_state_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a module was refused at load time.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not valid WebAssembly (or uses features we disable).
    #[error(
        "{actor}.wasm is not a valid WebAssembly module: {detail}; rebuild the actor for wasm32-unknown-unknown"
    )]
    Invalid {
        /// Which actor.
        actor: &'static str,
        /// wasmi's reason.
        detail: String,
    },
    /// Valid wasm, wrong interface.
    #[error("{actor}.wasm does not follow the ghatta actor ABI v{abi}: {detail}")]
    Abi {
        /// Which actor.
        actor: &'static str,
        /// The ABI version expected.
        abi: i32,
        /// What is missing or wrong.
        detail: String,
    },
    /// This binary's interpreter would let a looping actor overflow the native stack
    /// (`stack_probe.rs`): no actor can run safely in it.
    #[error(
        "this build of ghatta cannot run actors safely: {detail}, so a looping actor would \
         crash the node; build it with the workspace's profiles (Cargo.toml and \
         .cargo/config.toml build wasmi optimised) or report the build's target and compiler"
    )]
    Interpreter {
        /// What the probe measured.
        detail: String,
    },
}

/// How one delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    /// The actor handled it.
    Handled,
    /// The actor refused it with a reason code (its writes and outputs are kept).
    Rejected(i32),
    /// The actor trapped; nothing it did is kept.
    Trapped(TrapKind),
}

/// Trap categories recorded in the outcome (coarse on purpose: the category is what every
/// replica must agree on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TrapKind {
    /// The fuel budget ran out (e.g. an infinite loop).
    OutOfFuel,
    /// A host limit (key, value, writes, outputs, total state) was exceeded.
    HostLimit,
    /// Any other wasm trap (unreachable, out-of-bounds, memory exhausted, ...).
    Wasm,
}

/// The effects of one delivery, in the order they happened.
#[derive(Debug, Default, Clone)]
pub struct Effects {
    /// State writes: full key (with actor prefix), new value or None for a removal.
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Encoded `Output`s.
    pub outputs: Vec<Vec<u8>>,
}

/// Actor state shared by all actors: full key (prefix byte ++ actor key) -> value, plus the
/// running byte count the total-state limit is checked against.
#[derive(Debug, Default, Clone)]
pub struct ActorState {
    /// The map.
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Sum of key and value lengths.
    pub bytes: u64,
}

impl ActorState {
    /// Insert or replace, keeping the byte count; returns the old value.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
        let add = (key.len() + value.len()) as u64;
        let klen = key.len() as u64;
        let old = self.map.insert(key, value);
        if let Some(o) = &old {
            self.bytes -= klen + o.len() as u64;
        }
        self.bytes += add;
        old
    }

    /// Remove, keeping the byte count; returns the old value.
    pub fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let old = self.map.remove(key);
        if let Some(o) = &old {
            self.bytes -= (key.len() + o.len()) as u64;
        }
        old
    }
}

/// Per-delivery host context inside the wasmi store.
struct HostCtx {
    limits: StoreLimits,
    actor_limits: ActorLimits,
    prefix: u8,
    state: ActorState,
    /// (key, previous value) in write order, to roll back on a trap.
    undo: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    effects: Effects,
    /// Set when a host function trapped the guest for a limit.
    host_limit_hit: bool,
    /// With a replay cache: every key read before this delivery wrote it, with its value.
    reads: Option<Reads>,
    /// The instance's memory once instantiated (host calls then skip the export lookup).
    memory: Option<wasmi::Memory>,
    /// Scratch for the full key of a host call, reused so a read allocates nothing.
    key: Vec<u8>,
}

fn limit_trap(ctx: &mut HostCtx, what: &str) -> wasmi::Error {
    ctx.host_limit_hit = true;
    wasmi::Error::new(format!("actor exceeded a host limit: {what}"))
}

fn memory_of(caller: &Caller<'_, HostCtx>) -> Result<wasmi::Memory, wasmi::Error> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmi::Error::new("actor exports no memory"))
}

fn slice(mem: &[u8], ptr: i32, len: i32) -> Result<&[u8], wasmi::Error> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.get(ptr..ptr.saturating_add(len))
        .ok_or_else(|| wasmi::Error::new("actor passed an out-of-bounds buffer"))
}

fn read_bytes(mem: &[u8], ptr: i32, len: i32) -> Result<Vec<u8>, wasmi::Error> {
    slice(mem, ptr, len).map(<[u8]>::to_vec)
}

/// Puts the actor's prefix and the key at `kp`/`kl` into `ctx.key`, checking its length.
fn full_key(ctx: &mut HostCtx, mem: &[u8], kp: i32, kl: i32) -> Result<(), wasmi::Error> {
    let key = slice(mem, kp, kl)?;
    if key.len() > ctx.actor_limits.max_key_bytes {
        return Err(limit_trap(ctx, "key too long"));
    }
    ctx.key.clear();
    ctx.key.push(ctx.prefix);
    ctx.key.extend_from_slice(key);
    Ok(())
}

/// Deployed modules kept compiled at once (`ActorHost::compiled`). The code is a cache: a
/// module is compiled from its replicated bytes when missing, and eager compilation charges
/// no fuel, so a cold cache changes no outcome. Two versions of three actors, plus room.
pub const COMPILED_MODULES_MAX: usize = 8;

/// The export a module may offer to convert its state at cut-over: `(from_version: i32) -> i32`,
/// 0 when done.
pub const MIGRATE_EXPORT: &str = "ghatta_migrate";

/// A compiled actor module and its warm instances (`warm.rs`); cloning shares both.
#[derive(Clone)]
pub struct ActorModule(Arc<Compiled>);

struct Compiled {
    module: Module,
    /// How to reset an instance; `None`: every delivery instantiates afresh.
    reset: Option<warm::ResetPlan>,
    /// The memory right after instantiation, from the first warm instance.
    pristine: OnceLock<Box<[u8]>>,
    /// Reset instances waiting for a delivery, at most [`WARM_INSTANCES_MAX`].
    warm: Mutex<Vec<warm::Warm>>,
}

impl std::fmt::Debug for ActorModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorModule")
            .field("reusable", &self.0.reset.is_some())
            .finish()
    }
}

impl ActorModule {
    /// Whether deliveries to this module reuse a reset instance (`warm.rs` says when not).
    pub fn reusable(&self) -> bool {
        self.0.reset.is_some()
    }
}

/// The actor host: an engine, the compiled modules and the host functions.
pub struct ActorHost {
    engine: Engine,
    linker: Linker<HostCtx>,
    modules: BTreeMap<ActorKind, ActorModule>,
    /// Deployed modules by hash, compiled ([`COMPILED_MODULES_MAX`]).
    deployed: std::sync::Mutex<BTreeMap<deploy::ModuleHash, ActorModule>>,
    limits: ActorLimits,
    replay: Option<Arc<dyn DeliveryCache>>,
    /// False: a fresh instance for every delivery, never a warm one.
    reuse: bool,
}

/// What to call in a fresh instance.
#[derive(Clone, Copy)]
enum Call<'a> {
    /// `ghatta_handle` on an encoded delivery.
    Handle(&'a [u8]),
    /// `ghatta_migrate(from_version)`.
    Migrate(i32),
}

impl std::fmt::Debug for ActorHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHost")
            .field("actors", &self.modules.keys())
            .field("limits", &self.limits)
            .finish()
    }
}

impl ActorHost {
    /// A host with the actors built into this binary.
    pub fn with_embedded(limits: ActorLimits) -> Result<Self, LoadError> {
        Self::new(
            limits,
            &[
                (ActorKind::Balancing, embedded::BALANCING_WASM),
                (ActorKind::Billing, embedded::BILLING_WASM),
            ],
        )
    }

    /// A host with the given modules (compiled eagerly now).
    pub fn new(limits: ActorLimits, modules: &[(ActorKind, &[u8])]) -> Result<Self, LoadError> {
        let mut config = Config::default();
        config.consume_fuel(true);
        config.compilation_mode(CompilationMode::Eager);
        // Floats are deterministic in wasmi, but our ABI has none; refusing them keeps NaN
        // payload questions out of consensus entirely.
        config.floats(false);
        let engine = Engine::new(&config);
        stack_probe::check(&engine).map_err(|detail| LoadError::Interpreter { detail })?;
        let linker = Self::linker(&engine);
        let mut host = ActorHost {
            engine,
            linker,
            modules: BTreeMap::new(),
            deployed: Default::default(),
            limits,
            replay: None,
            reuse: true,
        };
        for (kind, bytes) in modules {
            host.load(*kind, bytes)?;
        }
        Ok(host)
    }

    /// The same host with a [`DeliveryCache`]: for hosts shared by several replicas (the
    /// simulator's nodes); a board's single replica would only fill it.
    pub fn with_delivery_cache(mut self, cache: Arc<dyn DeliveryCache>) -> Self {
        self.replay = Some(cache);
        self
    }

    /// The same host running every delivery in a fresh instance, as it did before warm
    /// instances: for tests that hold both to the same outcomes and fuel, and for the
    /// benchmark's comparison.
    pub fn with_fresh_instances(mut self) -> Self {
        self.reuse = false;
        self
    }

    /// Whether `kind` has a module of its own in this host (compiled in, or given to
    /// [`ActorHost::new`]); an actor shipped only by deployment has none.
    pub fn has_compiled_in(&self, kind: ActorKind) -> bool {
        self.modules.contains_key(&kind)
    }

    /// The limits in force.
    pub fn limits(&self) -> &ActorLimits {
        &self.limits
    }

    /// Compile and check one module, replacing the actor's current code.
    pub fn load(&mut self, kind: ActorKind, bytes: &[u8]) -> Result<(), LoadError> {
        let module = self.check(kind, bytes)?;
        self.modules.insert(kind, module);
        Ok(())
    }

    /// The compiled module of a deployed version, compiled and checked from `bytes` when not
    /// cached. Deterministic whatever the cache holds: the same bytes pass or fail the same
    /// checks on every replica.
    pub fn compiled(
        &self,
        kind: ActorKind,
        hash: &deploy::ModuleHash,
        bytes: &[u8],
    ) -> Result<ActorModule, LoadError> {
        let mut cache = self.deployed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cache.get(hash) {
            return Ok(m.clone());
        }
        let module = self.check(kind, bytes)?;
        if cache.len() >= COMPILED_MODULES_MAX {
            cache.pop_first();
        }
        cache.insert(*hash, module.clone());
        Ok(module)
    }

    /// Whether a module offers [`MIGRATE_EXPORT`] with the right signature.
    pub fn has_migrate(module: &ActorModule) -> bool {
        module
            .0
            .module
            .get_export(MIGRATE_EXPORT)
            .and_then(|e| e.func().cloned())
            .is_some_and(|f| {
                f.params() == [wasmi::ValType::I32] && f.results() == [wasmi::ValType::I32]
            })
    }

    /// Compile `bytes` and check it follows the ABI: imports only from the host, the
    /// required exports, and the ABI version it answers (asked with a delivery's fuel).
    pub fn check(&self, kind: ActorKind, bytes: &[u8]) -> Result<ActorModule, LoadError> {
        let actor = kind.name();
        // The module as planned for reuse (an export added per mutable global) when it can be
        // reset, else as given; the error, if any, is about the bytes as given.
        let planned = warm::plan(bytes)
            .and_then(|(b, plan)| Some((Module::new(&self.engine, &b).ok()?, plan)));
        let (module, reset) = match planned {
            Some((module, plan)) => (module, Some(plan)),
            None => (
                Module::new(&self.engine, bytes).map_err(|e| LoadError::Invalid {
                    actor,
                    detail: e.to_string(),
                })?,
                None,
            ),
        };
        let abi_err = |detail: String| LoadError::Abi {
            actor,
            abi: abi::ABI_VERSION,
            detail,
        };
        for import in module.imports() {
            if import.module() != abi::IMPORT_MODULE {
                return Err(abi_err(format!(
                    "it imports `{}::{}`; actors may import only from `{}`",
                    import.module(),
                    import.name(),
                    abi::IMPORT_MODULE
                )));
            }
        }
        for name in [
            "memory",
            "ghatta_abi_version",
            "ghatta_alloc",
            "ghatta_handle",
        ] {
            if module.get_export(name).is_none() {
                return Err(abi_err(format!("it does not export `{name}`")));
            }
        }
        // Ask the module which ABI it speaks (with the same fuel a delivery gets, so a module
        // whose start-up loops forever is refused here).
        let mut store = self.store(kind);
        store
            .set_fuel(self.limits.fuel_per_delivery)
            .map_err(|e| abi_err(format!("cannot set fuel: {e}")))?;
        let instance = self
            .linker
            .instantiate_and_start(&mut store, &module)
            .map_err(|e| abi_err(format!("it cannot be instantiated: {e}")))?;
        let version = instance
            .get_typed_func::<(), i32>(&store, "ghatta_abi_version")
            .and_then(|f| f.call(&mut store, ()))
            .map_err(|e| abi_err(format!("ghatta_abi_version failed: {e}")))?;
        if version != abi::ABI_VERSION {
            return Err(abi_err(format!("it speaks ABI v{version}")));
        }
        Ok(ActorModule(Arc::new(Compiled {
            module,
            reset,
            pristine: OnceLock::new(),
            warm: Mutex::new(Vec::new()),
        })))
    }

    fn store(&self, kind: ActorKind) -> Store<HostCtx> {
        let ctx = HostCtx {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(1)
                .memories(1)
                .tables(1)
                .build(),
            actor_limits: self.limits.clone(),
            prefix: kind.prefix(),
            state: ActorState::default(),
            undo: Vec::new(),
            effects: Effects::default(),
            host_limit_hit: false,
            reads: None,
            memory: None,
            key: Vec::new(),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|c| &mut c.limits);
        store
    }

    fn linker(engine: &Engine) -> Linker<HostCtx> {
        let mut linker = Linker::<HostCtx>::new(engine);
        let m = abi::IMPORT_MODULE;
        // The closures below run inside consensus: they must be deterministic and must turn
        // every bad argument into a trap, never a panic.
        linker
            .func_wrap(
                m,
                "state_get",
                |mut caller: Caller<'_, HostCtx>,
                 kp: i32,
                 kl: i32,
                 op: i32,
                 oc: i32|
                 -> Result<i32, wasmi::Error> {
                    let memory = memory_of(&caller)?;
                    let (mem, ctx) = memory.data_and_store_mut(&mut caller);
                    full_key(ctx, mem, kp, kl)?;
                    let full = ctx.key.as_slice();
                    let value = ctx.state.map.get(full);
                    if let Some(reads) = ctx.reads.as_mut()
                        && !ctx.undo.iter().any(|(k, _)| k == full)
                        && !reads.iter().any(|(k, _)| k == full)
                    {
                        reads.push((full.to_vec(), value.cloned()));
                    }
                    let Some(value) = value else {
                        return Ok(-1);
                    };
                    let n = value.len();
                    if n <= oc as u32 as usize {
                        let start = op as u32 as usize;
                        let dst = mem.get_mut(start..start.saturating_add(n)).ok_or_else(|| {
                            wasmi::Error::new("actor passed an out-of-bounds buffer")
                        })?;
                        dst.copy_from_slice(value);
                    }
                    Ok(n as i32)
                },
            )
            .expect("state_get is defined once");
        linker
            .func_wrap(
                m,
                "state_set",
                |mut caller: Caller<'_, HostCtx>,
                 kp: i32,
                 kl: i32,
                 vp: i32,
                 vl: i32|
                 -> Result<(), wasmi::Error> {
                    let memory = memory_of(&caller)?;
                    let (mem, ctx) = memory.data_and_store_mut(&mut caller);
                    let key = read_bytes(mem, kp, kl)?;
                    let value = read_bytes(mem, vp, vl)?;
                    if key.len() > ctx.actor_limits.max_key_bytes {
                        return Err(limit_trap(ctx, "key too long"));
                    }
                    if value.len() > ctx.actor_limits.max_value_bytes {
                        return Err(limit_trap(ctx, "value too large"));
                    }
                    if ctx.effects.writes.len() >= ctx.actor_limits.max_writes_per_delivery {
                        return Err(limit_trap(ctx, "too many writes in one delivery"));
                    }
                    let mut full = Vec::with_capacity(key.len() + 1);
                    full.push(ctx.prefix);
                    full.extend_from_slice(&key);
                    let old = ctx.state.insert(full.clone(), value.clone());
                    ctx.undo.push((full.clone(), old));
                    ctx.effects.writes.push((full, Some(value)));
                    if ctx.state.bytes > ctx.actor_limits.max_state_bytes {
                        return Err(limit_trap(ctx, "total actor state over its limit"));
                    }
                    Ok(())
                },
            )
            .expect("state_set is defined once");
        linker
            .func_wrap(
                m,
                "state_remove",
                |mut caller: Caller<'_, HostCtx>, kp: i32, kl: i32| -> Result<(), wasmi::Error> {
                    let memory = memory_of(&caller)?;
                    let (mem, ctx) = memory.data_and_store_mut(&mut caller);
                    let key = read_bytes(mem, kp, kl)?;
                    if ctx.effects.writes.len() >= ctx.actor_limits.max_writes_per_delivery {
                        return Err(limit_trap(ctx, "too many writes in one delivery"));
                    }
                    let mut full = Vec::with_capacity(key.len() + 1);
                    full.push(ctx.prefix);
                    full.extend_from_slice(&key);
                    let old = ctx.state.remove(&full);
                    ctx.undo.push((full.clone(), old));
                    ctx.effects.writes.push((full, None));
                    Ok(())
                },
            )
            .expect("state_remove is defined once");
        linker
            .func_wrap(
                m,
                "emit",
                |mut caller: Caller<'_, HostCtx>, p: i32, l: i32| -> Result<(), wasmi::Error> {
                    let memory = memory_of(&caller)?;
                    let (mem, ctx) = memory.data_and_store_mut(&mut caller);
                    if ctx.effects.outputs.len() >= ctx.actor_limits.max_outputs_per_delivery {
                        return Err(limit_trap(ctx, "too many outputs in one delivery"));
                    }
                    let bytes = read_bytes(mem, p, l)?;
                    // Only well-formed outputs enter the log of effects.
                    match ghatta_actor_sdk::codec::decode::<ghatta_actor_sdk::Output>(&bytes) {
                        None => return Err(limit_trap(ctx, "emitted an undecodable output")),
                        // Energy aggregates and folded totals are the host's, derived from
                        // the log; an actor forging one would put invented totals on the WAN.
                        Some(
                            ghatta_actor_sdk::Output::EnergyHour(_)
                            | ghatta_actor_sdk::Output::EnergyLocal { .. }
                            | ghatta_actor_sdk::Output::Folded(_),
                        ) => {
                            return Err(limit_trap(ctx, "emitted a host-only output"));
                        }
                        Some(_) => {}
                    }
                    ctx.effects.outputs.push(bytes);
                    Ok(())
                },
            )
            .expect("emit is defined once");
        linker
    }

    /// Deliver one encoded `Delivery` to an actor. `state` is the shared actor state; on a trap
    /// it is restored exactly as it was. Deterministic: same module, limits, state and bytes
    /// give the same status and effects on every replica.
    pub fn deliver(
        &self,
        kind: ActorKind,
        state: &mut ActorState,
        delivery: &[u8],
    ) -> (Status, Effects) {
        self.deliver_to(kind, None, state, delivery)
    }

    /// [`ActorHost::deliver`] to `module` (a deployed version) instead of the compiled-in
    /// one when given. The delivery cache stays sound: which module runs is decided by the
    /// log index, which the delivery's bytes carry.
    pub fn deliver_to(
        &self,
        kind: ActorKind,
        module: Option<&ActorModule>,
        state: &mut ActorState,
        delivery: &[u8],
    ) -> (Status, Effects) {
        let Some(module) = module.or_else(|| self.modules.get(&kind)) else {
            return (Status::Trapped(TrapKind::Wasm), Effects::default());
        };
        if let Some(hit) = self
            .replay
            .as_ref()
            .and_then(|c| c.replay(kind, delivery, state))
        {
            return hit;
        }
        let state_bytes = state.bytes;
        let run = self.execute(
            kind,
            module,
            state,
            Call::Handle(delivery),
            self.replay.is_some(),
        );
        if let (Some(cache), Some(reads)) = (&self.replay, run.reads) {
            cache.record(kind, delivery, state_bytes, reads, run.status, &run.effects);
        }
        (run.status, run.effects)
    }

    /// [`ActorHost::deliver`] to the compiled-in module without the delivery cache, also
    /// answering the fuel the delivery used: for tests and benchmarks (fuel is part of the
    /// outcome every replica must agree on, though only a trap shows it).
    pub fn deliver_metered(
        &self,
        kind: ActorKind,
        state: &mut ActorState,
        delivery: &[u8],
    ) -> (Status, Effects, u64) {
        let Some(module) = self.modules.get(&kind) else {
            return (Status::Trapped(TrapKind::Wasm), Effects::default(), 0);
        };
        let run = self.execute(kind, module, state, Call::Handle(delivery), false);
        (run.status, run.effects, run.fuel)
    }

    /// Runs `module`'s [`MIGRATE_EXPORT`] once with a delivery's fuel and memory, on the
    /// actor's state (restored exactly on a trap). `Rejected(code)` when it answered non-zero.
    pub fn migrate(
        &self,
        kind: ActorKind,
        module: &ActorModule,
        state: &mut ActorState,
        from_version: u32,
    ) -> (Status, Effects) {
        let from = i32::try_from(from_version).unwrap_or(i32::MAX);
        let run = self.execute(kind, module, state, Call::Migrate(from), false);
        (run.status, run.effects)
    }

    /// One call with the delivery limits, in a warm instance when the module has a reset
    /// plan and the host reuses instances, else in a fresh one; a trap rolls `state` back.
    fn execute(
        &self,
        kind: ActorKind,
        module: &ActorModule,
        state: &mut ActorState,
        call: Call<'_>,
        track_reads: bool,
    ) -> Run {
        if let Call::Handle(delivery) = call
            && self.reuse
            && let Some(plan) = &module.0.reset
        {
            // A module that cannot be instantiated fails the same way in a fresh instance,
            // where the error becomes the delivery's outcome.
            if let Some(mut warm) = self.take_warm(kind, module, plan) {
                let run = self.run_warm(&mut warm, kind, state, delivery, track_reads);
                if let Some(pristine) = module.0.pristine.get()
                    && warm.reset(pristine)
                {
                    let mut pool = module.0.warm.lock().unwrap_or_else(|p| p.into_inner());
                    if pool.len() < WARM_INSTANCES_MAX {
                        pool.push(warm);
                    }
                }
                return run;
            }
        }
        let mut store = self.store(kind);
        store.data_mut().state = std::mem::take(state);
        if track_reads {
            store.data_mut().reads = Some(Vec::new());
        }
        let fuel = self.limits.fuel_per_delivery;
        if store.set_fuel(fuel).is_err() {
            *state = std::mem::take(&mut store.data_mut().state);
            return Run::trapped_before_start();
        }
        let result = self.run(&mut store, &module.0.module, call);
        let used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        finish(store.data_mut(), call, result, state, used)
    }

    /// A warm instance of `module`: one waiting in its pool, or a new one (whose memory,
    /// the first time, becomes the module's pristine image). `None` when instantiation fails.
    fn take_warm(
        &self,
        kind: ActorKind,
        module: &ActorModule,
        plan: &warm::ResetPlan,
    ) -> Option<warm::Warm> {
        let waiting = module
            .0
            .warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        if waiting.is_some() {
            return waiting;
        }
        let mut store = self.store(kind);
        let instance = self
            .linker
            .instantiate_and_start(&mut store, &module.0.module)
            .ok()?;
        let warm = warm::Warm::new(store, instance, plan).ok()?;
        module.0.pristine.get_or_init(|| warm.image());
        Some(warm)
    }

    /// One `ghatta_handle` call in a warm instance: the same calls, in the same order and
    /// with the same fuel, as [`ActorHost::run`] makes in a fresh one after instantiating.
    fn run_warm(
        &self,
        warm: &mut warm::Warm,
        kind: ActorKind,
        state: &mut ActorState,
        delivery: &[u8],
        track_reads: bool,
    ) -> Run {
        let ctx = warm.store.data_mut();
        ctx.prefix = kind.prefix();
        ctx.state = std::mem::take(state);
        ctx.reads = track_reads.then(Vec::new);
        let fuel = self.limits.fuel_per_delivery;
        if warm.store.set_fuel(fuel).is_err() {
            *state = std::mem::take(&mut warm.store.data_mut().state);
            return Run::trapped_before_start();
        }
        let result = (|| {
            let len = i32::try_from(delivery.len())
                .map_err(|_| wasmi::Error::new("delivery too large"))?;
            let ptr = warm.alloc.call(&mut warm.store, len)?;
            warm.memory
                .write(&mut warm.store, ptr as u32 as usize, delivery)
                .map_err(|_| wasmi::Error::new("ghatta_alloc returned an out-of-bounds buffer"))?;
            warm.handle.call(&mut warm.store, (ptr, len))
        })();
        let used = fuel.saturating_sub(warm.store.get_fuel().unwrap_or(0));
        finish(
            warm.store.data_mut(),
            Call::Handle(delivery),
            result,
            state,
            used,
        )
    }

    fn run(
        &self,
        store: &mut Store<HostCtx>,
        module: &Module,
        call: Call<'_>,
    ) -> Result<i32, wasmi::Error> {
        let instance = self.linker.instantiate_and_start(&mut *store, module)?;
        store.data_mut().memory = instance.get_memory(&*store, "memory");
        let delivery = match call {
            Call::Handle(d) => d,
            Call::Migrate(from) => {
                let migrate = instance.get_typed_func::<i32, i32>(&*store, MIGRATE_EXPORT)?;
                return migrate.call(&mut *store, from);
            }
        };
        let alloc = instance.get_typed_func::<i32, i32>(&*store, "ghatta_alloc")?;
        let handle = instance.get_typed_func::<(i32, i32), i32>(&*store, "ghatta_handle")?;
        let memory = instance
            .get_memory(&*store, "memory")
            .ok_or_else(|| wasmi::Error::new("actor exports no memory"))?;
        let len =
            i32::try_from(delivery.len()).map_err(|_| wasmi::Error::new("delivery too large"))?;
        let ptr = alloc.call(&mut *store, len)?;
        memory
            .write(&mut *store, ptr as u32 as usize, delivery)
            .map_err(|_| wasmi::Error::new("ghatta_alloc returned an out-of-bounds buffer"))?;
        handle.call(&mut *store, (ptr, len))
    }
}

/// What one call did.
struct Run {
    status: Status,
    effects: Effects,
    reads: Option<Reads>,
    /// Fuel used.
    fuel: u64,
}

impl Run {
    /// The store refused the fuel budget: nothing ran.
    fn trapped_before_start() -> Self {
        Run {
            status: Status::Trapped(TrapKind::Wasm),
            effects: Effects::default(),
            reads: None,
            fuel: 0,
        }
    }
}

/// The outcome of a call from its result and the host context it ran with: rolls the state
/// back on a trap (and on a refused migration), hands the state back to `state`, and leaves
/// the context empty for the next call.
fn finish(
    ctx: &mut HostCtx,
    call: Call<'_>,
    result: Result<i32, wasmi::Error>,
    state: &mut ActorState,
    fuel: u64,
) -> Run {
    // A refused migration must leave the state as it found it, as a trap does; a refused
    // delivery keeps its writes (an actor may record why it refused).
    let refused_migration = matches!((call, &result), (Call::Migrate(_), Ok(c)) if *c != 0);
    let status = match &result {
        Ok(0) => Status::Handled,
        Ok(code) => Status::Rejected(*code),
        Err(_) if ctx.host_limit_hit => Status::Trapped(TrapKind::HostLimit),
        Err(e) if e.as_trap_code() == Some(wasmi::TrapCode::OutOfFuel) => {
            Status::Trapped(TrapKind::OutOfFuel)
        }
        Err(_) => Status::Trapped(TrapKind::Wasm),
    };
    if refused_migration || result.is_err() {
        // Roll back in reverse order.
        while let Some((key, old)) = ctx.undo.pop() {
            match old {
                Some(v) => ctx.state.insert(key, v),
                None => ctx.state.remove(&key),
            };
        }
        ctx.effects = Effects::default();
    }
    ctx.undo.clear();
    ctx.host_limit_hit = false;
    *state = std::mem::take(&mut ctx.state);
    Run {
        status,
        effects: std::mem::take(&mut ctx.effects),
        reads: ctx.reads.take(),
        fuel,
    }
}
