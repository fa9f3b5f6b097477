//! ghatta controller (placeholder)
