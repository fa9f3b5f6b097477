//! Integration tests of the controller (one binary so linking stays fast).

mod cluster;
mod harness;
mod storage_suite;
