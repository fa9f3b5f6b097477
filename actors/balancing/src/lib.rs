//! The balancing actor (placeholder until its logic lands).
#![no_std]
