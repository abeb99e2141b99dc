//! Alert monitor (to be written).
