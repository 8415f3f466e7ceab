//! GitHub repository metadata (being written).
