//! The standard `process_*` series, read from `/proc/self` on Linux and left out elsewhere.

use cryptobot_services::metrics::ReadAtScrape;

/// `process_resident_memory_bytes`, `process_open_fds`, `process_cpu_seconds_total` and
/// `process_start_time_seconds`, read from `/proc/self` at scrape time; a value that cannot be
/// read is left out of that scrape.
#[must_use]
pub fn collector() -> ReadAtScrape {
    ReadAtScrape::new()
        .gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            || ProcessSample::read().resident_memory_bytes,
        )
        .gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            || ProcessSample::read().open_fds,
        )
        .counter(
            "process_cpu_seconds_total",
            "User and system CPU time spent in seconds.",
            || ProcessSample::read().cpu_seconds,
        )
        .gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            || ProcessSample::read().start_time_seconds,
        )
}

/// One reading of the process's resources; `None` where the platform or `/proc` gives nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// Resident set size in bytes.
    pub resident_memory_bytes: Option<f64>,
    /// Open file descriptors (the one used to count them included).
    pub open_fds: Option<f64>,
    /// User plus system CPU time in seconds.
    pub cpu_seconds: Option<f64>,
    /// Start of the process, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessSample {
    /// Reads the current values.
    #[must_use]
    pub fn read() -> Self {
        #[cfg(target_os = "linux")]
        {
            linux::read()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Self::default()
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::ProcessSample;

    /// Clock ticks per second of the times in `/proc/self/stat`: `USER_HZ`, fixed at 100 in the
    /// kernel's user-space ABI on every architecture Rust targets, so no `sysconf` call is needed.
    const TICKS_PER_SECOND: f64 = 100.0;

    pub(super) fn read() -> ProcessSample {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        let ticks = |index: usize| -> Option<f64> {
            // Counts of ticks stay far below 2^53, so the conversion is exact.
            #[allow(clippy::cast_precision_loss)]
            fields
                .as_ref()
                .and_then(|fields| fields.get(index))
                .and_then(|field| field.parse::<u64>().ok())
                .map(|ticks| ticks as f64)
        };
        // Indexes count from the field after the command name: 0 is the state (field 3 of proc(5)),
        // so utime (14) is 11, stime (15) is 12 and starttime (22) is 19.
        let cpu_seconds = ticks(11)
            .zip(ticks(12))
            .map(|(user, system)| (user + system) / TICKS_PER_SECOND);
        let start_time_seconds = ticks(19)
            .zip(boot_time())
            .map(|(since_boot, boot)| boot + since_boot / TICKS_PER_SECOND);
        ProcessSample {
            resident_memory_bytes: resident_memory_bytes(),
            open_fds: open_fds(),
            cpu_seconds,
            start_time_seconds,
        }
    }

    /// The fields of `/proc/self/stat` after the command name, which is in parentheses and may
    /// itself contain spaces and parentheses (hence the last `)`).
    fn stat_fields(stat: &str) -> Option<Vec<&str>> {
        let (_, rest) = stat.rsplit_once(')')?;
        Some(rest.split_whitespace().collect())
    }

    /// `VmRSS` of `/proc/self/status`, which is in KiB (no page size needed).
    fn resident_memory_bytes() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        // Far below 2^53 bytes.
        #[allow(clippy::cast_precision_loss)]
        Some((kib * 1024) as f64)
    }

    fn open_fds() -> Option<f64> {
        let count = std::fs::read_dir("/proc/self/fd").ok()?.count();
        #[allow(clippy::cast_precision_loss)]
        Some(count as f64)
    }

    /// `btime` of `/proc/stat`: the boot time, seconds since the Unix epoch.
    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
            let fields = stat_fields("42 (a b) c) S 1 2").unwrap();
            assert_eq!(fields, ["S", "1", "2"]);
        }

        #[test]
        fn reads_plausible_values_of_this_process() {
            let sample = read();
            assert!(sample.resident_memory_bytes.unwrap() > 0.0, "{sample:?}");
            assert!(sample.open_fds.unwrap() >= 3.0, "{sample:?}");
            assert!(sample.cpu_seconds.unwrap() >= 0.0, "{sample:?}");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let started = sample.start_time_seconds.unwrap();
            // Boot time is whole seconds, so the start may look up to a second late.
            assert!(started <= now + 1.0 && started > now - 3600.0, "{sample:?}");
        }
    }
}

#[cfg(test)]
mod collector_tests {
    #[test]
    fn the_process_series_are_exported_and_promtool_clean_names() {
        let registry = prometheus::Registry::new();
        super::collector().register(&registry).unwrap();
        let out = cryptobot_services::metrics::encode(&registry);
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds_total",
            "process_start_time_seconds",
        ] {
            assert!(out.contains(&format!("# TYPE {name} ")), "{name}: {out}");
        }
    }
}
