//! Integration tests of the node's parts without a cluster: the field loop, protection and
//! journal, the field loop on a Modbus pseudo-terminal, the config CLI, the storage suite and
//! the decoders (one binary so linking stays fast). Clusters, emulated links and the
//! simulator are tested in `simulate/tests/it`.

mod field_cli;
mod field_journal;
mod field_loop;
mod field_modbus;
mod field_protection;
mod field_support;
mod fuzz;
mod sms_modem;
mod storage_open;
mod storage_suite;
