//! The simulated world ghatta's nodes run in: time, links, disks, plants,
//! faults, invariant checkers, reports and plots, all driven by one `u64` seed.
//!
//! This crate knows nothing of Raft or of the controller (dependency
//! direction: `ghatta-hal <- ghatta-sim <- ghatta`). The controller plugs its
//! node into these pieces:
//!
//! - time: the world runs on [`time::runtime`] (tokio, current thread, paused
//!   clock); [`time::Epoch`] turns the clock into `t_ms`;
//! - network: its transport sends through [`net::SimNet::send`] and receives
//!   from [`net::SimNet::endpoint`];
//! - storage: its redb database sits on a [`disk::SimDisk`];
//! - hardware: its field loop reads a hal `SimBoard` that [`board::PlantBoard`]
//!   fills from a [`plant::Plant`];
//! - faults: [`fault::FaultDriver`] plays a [`scenario::Scenario`]'s schedule,
//!   applying network faults itself and returning node actions;
//! - checking: everything that happens is reported as an
//!   [`observe::Observation`] to a [`check::Suite`], which ends in a
//!   [`report::Report`]; [`plot::PlotRecorder`] draws the run.
//!
//! One world step, as the controller's sim loop does it (here with no nodes):
//!
//! ```
//! use ghatta_sim::{board::PlantBoard, check::{Suite, SuiteConfig}, fault::FaultDriver,
//!     observe::Observation, report::FinishInfo, scenario::Scenario, time};
//! use ghatta_hal::sim::{SimBoard, SimBoardState};
//!
//! let scenario = Scenario::parse("duration_s = 10\n[nodes]\ncount = 3\n", "doc.toml").unwrap();
//! let seed = 7;
//! let ids = [1, 2, 3];
//! let rt = time::runtime().unwrap();
//! let report = rt.block_on(async {
//!     let epoch = time::Epoch::now();
//!     let net = scenario.build_net(seed, &ids);
//!     let mut faults = FaultDriver::new(&scenario, seed, ids.to_vec());
//!     let mut plant = ghatta_sim::plant::Plant::new(scenario.plant_config(0).unwrap(), seed);
//!     let mut glue = PlantBoard::attach(&mut plant, SimBoard::new(SimBoardState::new()));
//!     let mut suite = Suite::new(SuiteConfig::new((scenario.liveness_bound_s * 1e3) as u64));
//!     while epoch.elapsed_ms() < scenario.total_ms() {
//!         tokio::time::sleep(std::time::Duration::from_millis(100)).await; // nodes run meanwhile
//!         let t_ms = epoch.elapsed_ms();
//!         let tick = faults.poll(t_ms, &net, None /* the leader, if known */);
//!         for o in &tick.observations { suite.observe(o); }
//!         // ... carry out tick.actions on the nodes (crash, power cut, restart, ...)
//!         glue.step(&mut plant, 100);
//!         suite.observe(&Observation::Frequency {
//!             t_ms, plant: 0, mhz: plant.truth().frequency_mhz });
//!         // ... feed the nodes' observations (roles, applies, acks, ledger) to the suite
//!     }
//!     suite.finish(FinishInfo {
//!         scenario: scenario.name.clone(), seed, end_t_ms: epoch.elapsed_ms(),
//!         net_trace_digest: Some(net.trace_digest()), metered_wh: plant.metered_energy_wh(),
//!         ..FinishInfo::default()
//!     })
//! });
//! // No node ever committed anything, so liveness (rightly) fails.
//! assert!(report.violations.iter().any(|v| v.checker == "liveness"));
//! ```
#![forbid(unsafe_code)]

pub mod board;
pub mod check;
pub mod disk;
pub mod fault;
pub mod link;
pub mod net;
pub mod observe;
pub mod plant;
pub mod plot;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod time;
pub mod wan;
