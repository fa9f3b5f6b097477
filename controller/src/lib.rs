//! ghatta: controller firmware for village micro-hydro grids.
#![forbid(unsafe_code)]

pub mod actors;
pub mod admin;
pub mod clock;
pub mod config;
pub mod field;
pub mod journal;
pub mod net;
pub mod node;
pub mod notify;
pub mod observe;
pub mod process;
pub mod raft;
pub mod rpc;
pub mod runner;
pub mod sd_notify;
pub mod state;
pub mod storage;
pub mod wan;
