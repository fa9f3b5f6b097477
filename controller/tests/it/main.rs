//! Integration tests of the controller (one binary so linking stays fast).

mod storage_suite;
