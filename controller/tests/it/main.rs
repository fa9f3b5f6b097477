//! Integration tests of the controller (one binary so linking stays fast).

mod actors;
mod cluster;
mod field_cli;
mod field_cluster;
mod field_journal;
mod field_loop;
mod field_protection;
mod field_support;
mod fuzz;
mod harness;
mod membership;
mod radio;
mod radio_timing;
mod security;
mod sim;
mod sim_disk;
mod storage_suite;
mod wan;
mod wan_sim;
