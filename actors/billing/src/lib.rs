//! The billing actor (placeholder until its logic lands).
#![no_std]
