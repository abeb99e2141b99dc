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

/// The IPv4 TCP sockets of this network namespace, for [`tcp_queues_in`].
pub(crate) fn tcp_table() -> Option<String> {
    std::fs::read_to_string("/proc/net/tcp").ok()
}

/// Bytes queued in the kernel for the IPv4 TCP socket from `local_port` to `remote_port`, as
/// `(tx_queue, rx_queue)` from the text of /proc/net/tcp: for the sender the bytes written and
/// not yet acknowledged, for the receiver the bytes received and not yet read.
pub(crate) fn tcp_queues_in(table: &str, local_port: u16, remote_port: u16) -> Option<(u64, u64)> {
    let port = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx_queue:rx_queue ...
        let mut fields = line.split_whitespace().skip(1);
        let (local, remote) = (fields.next()?, fields.next()?);
        let queues = fields.nth(1)?;
        if port(local)? != local_port || port(remote)? != remote_port {
            return None;
        }
        let (tx, rx) = queues.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
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

    #[test]
    fn finds_the_queues_of_one_connection() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0200007F:C350 01 0000A000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0200007F:C350 0100007F:1F90 01 00000000:0001F400 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";
        // The server's side (port 8080 to 50000) has 40 KiB unsent; the client's 128,000 unread.
        assert_eq!(tcp_queues_in(table, 8080, 50000), Some((0xA000, 0)));
        assert_eq!(tcp_queues_in(table, 50000, 8080), Some((0, 128_000)));
        // TC1: no such connection (the listening socket's remote port is 0), garbage
        assert_eq!(tcp_queues_in(table, 8080, 50001), None);
        assert_eq!(tcp_queues_in(table, 50001, 8080), None);
        assert_eq!(tcp_queues_in("header\n 0: x y 01 zz\n", 1, 2), None);
    }
}
