//! The simulated world ghatta's nodes run in: time, links, disks, plants, checkers.
//!
//! This crate knows nothing of Raft or of the controller. The controller plugs
//! its node into these pieces (its transport over [`net::SimNet`], its redb
//! storage over [`disk::SimDisk`], its hardware over the hal crate's simulated
//! board driven by [`plant::Plant`]) and reports what happens as
//! [`observe::Observation`]s to a [`check::Suite`] of invariant checkers, which
//! produces a [`report::Report`].

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
