//! CPU time and resident memory of a process, from /proc (Linux).

use std::sync::OnceLock;

/// A process to observe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Process {
    pid: Option<u32>,
}

impl Process {
    pub(crate) const fn new(pid: u32) -> Self {
        Self { pid: Some(pid) }
    }

    /// This process.
    pub(crate) const fn current() -> Self {
        Self { pid: None }
    }

    fn path(&self, file: &str) -> String {
        self.pid.map_or_else(
            || format!("/proc/self/{file}"),
            |pid| format!("/proc/{pid}/{file}"),
        )
    }

    /// User plus system CPU time so far, in microseconds (all threads).
    pub(crate) fn cpu_us(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(self.path("stat")).ok()?;
        // The command name may hold spaces; the fields after it are space-separated. utime and
        // stime are fields 14 and 15, that is 12th and 13th after the name.
        let after_name = stat.rsplit_once(')')?.1;
        let mut fields = after_name.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((utime + stime) * 1_000_000 / clock_ticks_per_sec())
    }

    /// Resident set size, in KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(self.path("status")).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }
}

/// `CLK_TCK`, from `getconf` (no libc binding needed); 100 on every Linux we run on.
fn clock_ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = Process::current();
        assert!(me.rss_kib().is_some_and(|kib| kib > 0));
        // Burn a little CPU so the counter has something to show.
        let mut x = 0_u64;
        for i in 0..20_000_000_u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(std::hint::black_box(x), 1);
        assert!(me.cpu_us().is_some());
        assert!(Process::new(u32::MAX).cpu_us().is_none());
    }
}
