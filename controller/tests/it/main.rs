//! Integration tests of the controller (one binary so linking stays fast).

mod actors;
mod cluster;
mod harness;
mod membership;
mod storage_suite;
mod wan;
