//! How the world runs its nodes: all on the world's own runtime ([`Engine::Single`]), or
//! each on its own paused-clock runtime, advanced window by window on a small pool of
//! threads ([`Engine::Lockstep`]): a conservative parallel simulation.
//!
//! Why lockstep is still deterministic: within a window the nodes share nothing that
//! orders them. A frame sent in a window is due no earlier than the next one (the world
//! only picks lockstep when every link's one-way latency is at least a window), and
//! `SimNet` fixes a frame's fate from its sender's own link state; observations are queued
//! per node and merged by (time, node) at the barrier (`observer`); plants, faults, the
//! checkers and the operator's decisions run only at barriers, with every node stopped
//! (readings the plants were stepped to ahead of a node reach its board on its own clock:
//! `BoardFeed`).
//! So which thread runs which node, and when, changes how long a run takes, never what it
//! does: the same seed gives the same trace hash with one thread or two.
//!
//! The world's async code runs as a task on the world runtime; when it needs the nodes
//! moved (a window, or a start or a kill run on one node's runtime) it asks the driver,
//! [`run_lockstep`]'s loop on the calling thread, which does the work outside any runtime
//! (a runtime cannot be driven from inside another) with the helper threads, and answers.
//!
//! A node runtime's openraft RNG scope is seeded per node and per job, and its tokio RNG
//! per node, so neither depends on the other nodes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration as StdDuration;

use super::lock;
use anyhow::Context;
use ghatta_sim::time::Epoch;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Helper threads besides the driver's own: the machine this was measured on has two
/// cores (BENCHMARKS.md); more threads than cores only adds hand-offs.
pub const THREADS_DEFAULT: usize = 2;

/// How long a thread waiting for work (a helper between windows, the driver at the end of
/// one) spins before it sleeps. A barrier's own work takes tens of microseconds, and waking
/// a sleeping thread on the measured VM took longer than most windows' work: 1 ms of spin
/// was faster than 200 us and than none (BENCHMARKS.md, the lockstep engine's section).
const SPIN: StdDuration = StdDuration::from_millis(1);

/// One node's runtime.
pub struct NodeRt {
    rt: tokio::runtime::Runtime,
    epoch: Epoch,
    /// Seeds the openraft RNG scope of each job run on this runtime.
    seed: u64,
    jobs: u64,
}

impl NodeRt {
    fn new(seed: u64) -> anyhow::Result<Self> {
        let rt = ghatta_sim::time::seeded_runtime(seed)
            .context("cannot build a node's simulated runtime")?;
        let epoch = rt.block_on(async { Epoch::now() });
        Ok(NodeRt {
            rt,
            epoch,
            seed,
            jobs: 0,
        })
    }

    /// A fresh openraft RNG seed for the next job (each job is its own scope, so the seed
    /// must differ per job or every incarnation would draw the same timeouts).
    fn next_scope_seed(&mut self) -> u64 {
        self.jobs += 1;
        let mut z = self.seed ^ self.jobs.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Runs `fut` on this runtime, from outside any runtime, to completion.
    fn block_on<F: Future>(&mut self, fut: F) -> F::Output {
        let seed = self.next_scope_seed();
        self.rt.block_on(ghatta::raft::Runtime::scope(seed, fut))
    }

    /// Advances this runtime's clock to `t_ms` (running everything due until then).
    fn advance_to(&mut self, t_ms: u64) {
        let at = self.epoch.at_ms(t_ms);
        // The timer is made inside: it needs the runtime's context.
        self.rt
            .block_on(async move { tokio::time::sleep_until(at).await });
    }
}

/// Work on one node's runtime, run by the driver.
type Job = Box<dyn FnOnce(&mut NodeRt) + Send>;

/// What the world asks the driver for.
enum Request {
    /// Advance every node to this simulated ms.
    Advance(u64, oneshot::Sender<()>),
    /// Run this on node `usize`'s runtime.
    Job(usize, Job),
}

/// How the world runs its nodes.
#[derive(Clone)]
pub enum Engine {
    /// Every node on the world's runtime.
    Single {
        /// The world's epoch.
        epoch: Epoch,
    },
    /// Each node on its own runtime, driven by [`run_lockstep`].
    Lockstep(Arc<LockstepHandle>),
}

/// The world's side of a lockstep run.
pub struct LockstepHandle {
    nodes: Vec<Arc<Mutex<NodeRt>>>,
    epochs: Vec<Epoch>,
    requests: mpsc::UnboundedSender<Request>,
    world_epoch: Epoch,
}

impl Engine {
    /// The world's epoch (its runtime's simulated time zero).
    pub fn world_epoch(&self) -> Epoch {
        match self {
            Engine::Single { epoch } => *epoch,
            Engine::Lockstep(h) => h.world_epoch,
        }
    }

    /// Node `i`'s epoch: its runtime's simulated time zero.
    pub fn epoch_of(&self, i: usize) -> Epoch {
        match self {
            Engine::Single { epoch } => *epoch,
            Engine::Lockstep(h) => h.epochs[i],
        }
    }

    /// Whether nodes run on their own runtimes.
    pub fn is_lockstep(&self) -> bool {
        matches!(self, Engine::Lockstep(_))
    }

    /// Moves simulated time to `t_ms`: every node runs until then (in lockstep, one window
    /// on the pool), then the world's own runtime (the operator) catches up.
    pub async fn advance_to(&self, t_ms: u64) {
        let epoch = match self {
            Engine::Single { epoch } => *epoch,
            Engine::Lockstep(h) => {
                let (tx, rx) = oneshot::channel();
                if h.requests.send(Request::Advance(t_ms, tx)).is_ok() {
                    let _ = rx.await;
                }
                h.world_epoch
            }
        };
        tokio::time::sleep_until(epoch.at_ms(t_ms)).await;
    }

    /// Runs `fut` to completion on node `i`'s runtime (the world's own with one runtime).
    /// Tasks it spawns live on that runtime. In lockstep the node's clock does not move
    /// meanwhile unless `fut` waits on a timer; the world's jobs (start, shutdown) do not.
    pub async fn run_on<F, R>(&self, i: usize, fut: F) -> R
    where
        F: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Engine::Single { .. } => fut.await,
            Engine::Lockstep(h) => {
                let (tx, rx) = oneshot::channel();
                let job: Job = Box::new(move |n: &mut NodeRt| {
                    let _ = tx.send(n.block_on(fut));
                });
                if h.requests.send(Request::Job(i, job)).is_err() {
                    return std::future::pending().await;
                }
                match rx.await {
                    Ok(r) => r,
                    // The driver is gone (the run is ending): nothing more happens.
                    Err(_) => std::future::pending().await,
                }
            }
        }
    }

    /// Spawns `fut` on node `i`'s runtime; the handle can be awaited from the world.
    pub fn spawn_on<F, R>(&self, i: usize, fut: F) -> JoinHandle<R>
    where
        F: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Engine::Single { .. } => tokio::spawn(fut),
            Engine::Lockstep(h) => {
                let mut n = lock(&h.nodes[i]);
                let seed = n.next_scope_seed();
                n.rt.spawn(ghatta::raft::Runtime::scope(seed, fut))
            }
        }
    }
}

/// The pool's shared state: which window, and how far through it the threads are.
struct Pool {
    nodes: Vec<Arc<Mutex<NodeRt>>>,
    state: Mutex<PoolState>,
    work: Condvar,
    done: Condvar,
    /// Next place in `order` to take in the current window.
    next: AtomicUsize,
    /// The nodes in the order the threads take them: costliest first (by `cost`), so the
    /// longest run starts at once and the others fill the second thread around it.
    order: Vec<AtomicUsize>,
    /// Each node's recent wall time per window, ns (a moving average).
    cost: Vec<std::sync::atomic::AtomicU64>,
    /// Bumped for each window (read without the lock while spinning).
    generation: std::sync::atomic::AtomicU64,
    /// The nodes' wall time in windows, summed, ns: what one thread would have spent.
    work_ns: std::sync::atomic::AtomicU64,
    stop: AtomicBool,
}

struct PoolState {
    target_ms: u64,
    /// Threads (helpers and the driver) still working on the current window.
    busy: usize,
    /// A node runtime panicked: the message, re-raised by the driver.
    panicked: Option<String>,
}

impl Pool {
    /// Takes nodes off the current window until none is left.
    fn work(&self, target_ms: u64) {
        loop {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(i) = self.order.get(k).map(|o| o.load(Ordering::Relaxed)) else {
                return;
            };
            let Some(n) = self.nodes.get(i) else {
                return;
            };
            let started = std::time::Instant::now();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                lock(n).advance_to(target_ms)
            }));
            let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.work_ns.fetch_add(ns, Ordering::Relaxed);
            let c = &self.cost[i];
            c.store(
                (c.load(Ordering::Relaxed) / 4) * 3 + ns / 4,
                Ordering::Relaxed,
            );
            if let Err(e) = r {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a node runtime panicked".into());
                lock(&self.state).panicked.get_or_insert(msg);
            }
        }
    }

    /// Marks this thread's share of the window done.
    fn finish(&self) {
        let mut s = lock(&self.state);
        s.busy -= 1;
        if s.busy == 0 {
            self.done.notify_all();
        }
    }

    fn helper(&self) {
        let mut seen = 0;
        loop {
            // Spin a little for the next window, then sleep until it comes.
            let spin_until = std::time::Instant::now() + SPIN;
            while self.generation.load(Ordering::Acquire) == seen
                && !self.stop.load(Ordering::Acquire)
                && std::time::Instant::now() < spin_until
            {
                std::hint::spin_loop();
            }
            let target = {
                let mut s = lock(&self.state);
                while self.generation.load(Ordering::Acquire) == seen
                    && !self.stop.load(Ordering::Acquire)
                {
                    s = self.work.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                seen = self.generation.load(Ordering::Acquire);
                s.target_ms
            };
            self.work(target);
            self.finish();
        }
    }

    /// Runs one window on every thread, this one included; returns once all are done.
    fn window(&self, target_ms: u64, threads: usize) {
        if threads > 1 {
            let mut by_cost: Vec<usize> = (0..self.nodes.len()).collect();
            by_cost.sort_by_key(|&i| std::cmp::Reverse(self.cost[i].load(Ordering::Relaxed)));
            for (slot, i) in self.order.iter().zip(by_cost) {
                slot.store(i, Ordering::Relaxed);
            }
        }
        {
            let mut s = lock(&self.state);
            s.target_ms = target_ms;
            s.busy = threads;
            self.next.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.work.notify_all();
        self.work(target_ms);
        self.finish();
        let spin_until = std::time::Instant::now() + SPIN;
        while lock(&self.state).busy > 0 && std::time::Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let mut s = lock(&self.state);
        while s.busy > 0 {
            s = self.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(msg) = s.panicked.take() {
            panic!("{msg}");
        }
    }
}

/// Node runtimes for `n` nodes of a world seeded `seed`, and their epochs.
pub fn node_runtimes(n: usize, seed: u64) -> anyhow::Result<Vec<NodeRt>> {
    (0..n)
        .map(|i| {
            let node_seed = seed ^ (i as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
            NodeRt::new(node_seed)
        })
        .collect()
}

/// Runs a lockstep world: `world` gets the engine and returns the run's result; this
/// thread drives the world's runtime and, with `threads - 1` helpers, the nodes'.
pub fn run_lockstep<W, Fut, R>(
    world_rt: &tokio::runtime::Runtime,
    nodes: Vec<NodeRt>,
    threads: usize,
    world: W,
) -> R
where
    W: FnOnce(Engine) -> Fut,
    Fut: Future<Output = R>,
{
    let threads = threads.clamp(1, nodes.len().max(1));
    let epochs = nodes.iter().map(|n| n.epoch).collect();
    let nodes: Vec<Arc<Mutex<NodeRt>>> =
        nodes.into_iter().map(|n| Arc::new(Mutex::new(n))).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let world_epoch = world_rt.block_on(async { Epoch::now() });
    let handle = Arc::new(LockstepHandle {
        nodes: nodes.clone(),
        epochs,
        requests: tx,
        world_epoch,
    });
    // The world future is the root of every `block_on` below (not a task: it need not be
    // `Send`), polled again each time the driver comes back.
    let mut world_fut: Pin<Box<Fut>> = Box::pin(world(Engine::Lockstep(handle)));
    let n_nodes = nodes.len();
    let pool = Arc::new(Pool {
        nodes,
        state: Mutex::new(PoolState {
            target_ms: 0,
            busy: 0,
            panicked: None,
        }),
        work: Condvar::new(),
        done: Condvar::new(),
        next: AtomicUsize::new(0),
        order: (0..n_nodes).map(AtomicUsize::new).collect(),
        cost: (0..n_nodes).map(|_| Default::default()).collect(),
        generation: Default::default(),
        work_ns: Default::default(),
        stop: AtomicBool::new(false),
    });
    let started = std::time::Instant::now();
    let (mut windows, mut in_windows) = (0u64, StdDuration::ZERO);
    // The helpers log where this thread logs (`ghatta-sim run` quiets the nodes per thread).
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let helpers: Vec<_> = (1..threads)
        .map(|_| {
            let (p, d) = (pool.clone(), dispatch.clone());
            std::thread::spawn(move || tracing::dispatcher::with_default(&d, || p.helper()))
        })
        .collect();
    let result = loop {
        // Drive the world runtime until the world asks for something or finishes.
        let next = world_rt.block_on(async {
            tokio::select! {
                biased;
                r = &mut world_fut => Err(r),
                req = rx.recv() => Ok(req),
            }
        });
        match next {
            Ok(Some(Request::Advance(t_ms, reply))) => {
                let window = std::time::Instant::now();
                pool.window(t_ms, threads);
                windows += 1;
                in_windows += window.elapsed();
                let _ = reply.send(());
            }
            Ok(Some(Request::Job(i, job))) => {
                if let Some(n) = pool.nodes.get(i) {
                    job(&mut lock(n));
                }
            }
            Ok(None) => {
                // Every sender is gone: the world task holds one until it ends.
                break world_rt.block_on(&mut world_fut);
            }
            Err(r) => break r,
        }
    };
    pool.stop.store(true, Ordering::Release);
    {
        let _s = lock(&pool.state);
        pool.work.notify_all();
    }
    for h in helpers {
        let _ = h.join();
    }
    // Where the wall time went, for whoever tunes this (`GHATTA_LOG=ghatta::simulate=info`):
    // the nodes' work over the windows' wall time is what the threads gained.
    let work_s = pool.work_ns.load(Ordering::Relaxed) as f64 / 1e9;
    tracing::info!(
        threads,
        windows,
        windows_s = in_windows.as_secs_f64(),
        node_work_s = work_s,
        between_windows_s = started.elapsed().saturating_sub(in_windows).as_secs_f64(),
        "lockstep: the nodes' {work_s:.2} s of work ran in {:.2} s of windows",
        in_windows.as_secs_f64()
    );
    result
}
