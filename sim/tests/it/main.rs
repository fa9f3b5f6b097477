//! The sim crate's one integration-test binary: network, disk, plant, scenarios, faults, checkers, report.

mod board;
mod checkers;
mod disk;
mod fault;
mod net;
mod plant;
mod report;
mod scenario;
mod world;
