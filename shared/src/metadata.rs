//! Page metadata extraction (being written).
