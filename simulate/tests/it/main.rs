//! Integration tests of whole nodes (one binary so linking stays fast): clusters over loopback
//! TCP (`harness`), serial radios through the radio channel emulator, the WAN to a real
//! central through the WAN emulator and the simulated satellite link, and the simulator
//! itself (determinism, checkers, mutations).

mod actors;
mod admin_cli;
mod audit;
mod board_alarms;
mod cluster;
mod deploy;
mod field_cluster;
mod harness;
mod membership;
mod pg;
mod radio;
mod radio_timing;
mod security;
mod sim;
mod sim_disk;
mod wan;
mod wan_sim;
