//! Simulation world for ghatta (placeholder).
