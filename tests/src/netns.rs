//! A network namespace with two veth pairs to the host, for fault tests that cut one path of a node
//! and keep the other: `redis` (the node's way to Redis, cut by [`Netns::set_redis_link`]) and
//! `clients` (the way its clients reach it). Addresses are private `/30`s of 10.x on this machine
//! only; nothing leaves it.
//!
//! Needs root (or `CAP_NET_ADMIN`) and `ip` (iproute2). Everything is deleted when the [`Netns`] is
//! dropped, also after a failed test; [`Netns::create`] first deletes what runs of earlier
//! processes left behind (a test killed before its drop ran).
//!
//! Also compiled into `crates/server/tests` through `#[path]`, so both suites share one copy.
//!
//! [`Netns::set_redis_link`]: crate::netns::Netns::set_redis_link
//! [`Netns`]: crate::netns::Netns
//! [`Netns::create`]: crate::netns::Netns::create

use std::net::Ipv4Addr;
use std::process::Command;

/// Prefix of every namespace and host-side interface made here (stale ones are found by it).
const PREFIX: &str = "cbf";

/// One veth pair: the host's end and the namespace's end, each with its address of a `/30`.
#[derive(Debug, Clone)]
pub struct Veth {
    /// Interface name in the host namespace.
    pub host_if: String,
    /// Interface name inside the namespace.
    pub ns_if: String,
    /// The host end's address.
    pub host_addr: Ipv4Addr,
    /// The namespace end's address.
    pub ns_addr: Ipv4Addr,
}

/// A network namespace joined to the host by two veth pairs; deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name (`ip netns exec <name>`).
    pub name: String,
    /// The node's path to Redis.
    pub redis: Veth,
    /// Its clients' path to it.
    pub clients: Veth,
}

/// Runs `ip` with `args`; its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| format!("cannot run `ip` (iproute2): {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether process `pid` still runs.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes the namespaces (with the processes in them) and host interfaces that processes no
/// longer running left behind; a name carries its creator's pid (`cbf<pid>n<n>`).
fn delete_stale() {
    let owner = |name: &str| -> Option<u32> {
        name.strip_prefix(PREFIX)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    for line in ip_output(&["netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if owner(name).is_some_and(|pid| !alive(pid)) {
            kill_all_in(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in ip_output(&["-o", "link", "show"]).lines() {
        // "5: cbf123r0@if6: <...>"
        let Some(name) = line
            .split(':')
            .nth(1)
            .map(|name| name.trim().split('@').next().unwrap_or_default())
        else {
            continue;
        };
        if owner(name).is_some_and(|pid| !alive(pid)) {
            let _ = ip(&["link", "del", name]);
        }
    }
}

/// Kills (SIGKILL) every process still running in namespace `name`.
fn kill_all_in(name: &str) {
    for pid in ip_output(&["netns", "pids", name]).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
}

/// A free `10.123.<n>.0/29` on this machine (two `/30`s), starting from one derived from `seed`.
fn free_subnet(seed: u32) -> Result<u8, String> {
    let in_use = ip_output(&["-4", "-o", "addr", "show"]);
    (0..=255u32)
        .map(|step| u8::try_from((seed + step) % 256).unwrap_or(0))
        .find(|n| !in_use.contains(&format!(" 10.123.{n}.")))
        .ok_or_else(|| "no free 10.123.x.0/29 on this machine".to_owned())
}

impl Netns {
    /// Creates namespace number `n` of this process with its two veth pairs, both up.
    ///
    /// # Errors
    /// Why it cannot (not root, no `CAP_NET_ADMIN`, no `ip`): the caller skips and prints it.
    pub fn create(n: u32) -> Result<Self, String> {
        delete_stale();
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}n{n}");
        ip(&["netns", "add", &name])?;
        // From here on, a failure deletes what was made (through drop).
        let subnet = free_subnet(pid.wrapping_add(n))?;
        let veth = |kind: char, last: u8| Veth {
            host_if: format!("{PREFIX}{pid}{kind}{n}"),
            // Unique in the host too, where both ends are made before one moves.
            ns_if: format!("{PREFIX}{pid}{kind}{n}i"),
            host_addr: Ipv4Addr::new(10, 123, subnet, last),
            ns_addr: Ipv4Addr::new(10, 123, subnet, last + 1),
        };
        let netns = Self {
            redis: veth('r', 1),
            clients: veth('c', 5),
            name,
        };
        ip(&[
            "netns",
            "exec",
            &netns.name,
            "ip",
            "link",
            "set",
            "lo",
            "up",
        ])?;
        for link in [&netns.redis, &netns.clients] {
            netns.add(link)?;
        }
        Ok(netns)
    }

    fn add(&self, link: &Veth) -> Result<(), String> {
        let host_cidr = format!("{}/30", link.host_addr);
        let ns_cidr = format!("{}/30", link.ns_addr);
        ip(&[
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &link.ns_if,
        ])?;
        ip(&["link", "set", &link.ns_if, "netns", &self.name])?;
        ip(&["addr", "add", &host_cidr, "dev", &link.host_if])?;
        ip(&["link", "set", &link.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &self.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &ns_cidr, "dev", &link.ns_if])?;
        inside(&["link", "set", &link.ns_if, "up"])
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which executes it in
    /// place: the child's pid is the program's).
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Takes the host end of the Redis path down (a partition: nothing passes either way) or up
    /// again (healed).
    ///
    /// # Errors
    /// When `ip` refuses.
    pub fn set_redis_link(&self, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &self.redis.host_if, state])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        // Deleting the namespace deletes the veth ends in it, and with them their host peers.
        let _ = ip(&["netns", "del", &self.name]);
        for link in [&self.redis, &self.clients] {
            let _ = ip(&["link", "del", &link.host_if]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes to the real stderr: the harness captures `eprintln!`, and a skip must show.
    fn say(line: std::fmt::Arguments<'_>) {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    #[test]
    fn a_namespace_is_made_and_deleted_without_leftovers() {
        let netns = match Netns::create(900) {
            Ok(netns) => netns,
            Err(why) => {
                say(format_args!(
                    "skipped: network namespaces refused here: {why}"
                ));
                return;
            }
        };
        let name = netns.name.clone();
        let host_if = netns.redis.host_if.clone();
        // TC0: the namespace exists, with both ends addressed; the cut and the heal work
        assert!(ip_output(&["netns", "list"]).contains(&name));
        let inside = ip_output(&["netns", "exec", &name, "ip", "-4", "-o", "addr"]);
        assert!(
            inside.contains(&netns.redis.ns_addr.to_string()),
            "{inside}"
        );
        assert!(
            inside.contains(&netns.clients.ns_addr.to_string()),
            "{inside}"
        );
        netns.set_redis_link(false).unwrap();
        assert!(!ip_output(&["link", "show", &host_if]).contains(",UP"));
        netns.set_redis_link(true).unwrap();
        // TC1: dropped: nothing of it is left
        drop(netns);
        assert!(!ip_output(&["netns", "list"]).contains(&name));
        assert!(!ip_output(&["-o", "link", "show"]).contains(&host_if));
    }
}
