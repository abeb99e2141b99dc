//! Signals (to be written).
