//! Hardware abstraction for ghatta (placeholder).
