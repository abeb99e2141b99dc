//! Only the benchmark in benches/limiters.rs.
