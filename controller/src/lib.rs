//! ghatta: controller firmware for village micro-hydro grids.
pub mod actors;
pub mod raft;
pub mod state;
pub mod storage;
