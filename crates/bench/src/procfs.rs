//! What `/proc` says about a process and the machine: CPU time, resident
//! memory, kernel socket memory.

use std::fs;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// A process to measure.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pid: u32,
    ticks: f64,
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// User + system CPU seconds so far (utime + stime).
    pub cpu_secs: f64,
    /// Resident set size, KiB (VmRSS).
    pub rss_kib: u64,
    /// Anonymous resident memory, KiB (RssAnon).
    pub anon_kib: u64,
    /// Threads.
    pub threads: u64,
}

impl Probe {
    /// A probe of `pid`.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            ticks: clock_ticks(),
        }
    }

    /// Reads CPU and memory now; zeros when the process is gone.
    pub fn read(&self) -> Reading {
        let mut reading = Reading::default();
        if let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // Fields after the command name, which may hold spaces: state is
            // field 3, utime 14, stime 15.
            if let Some((_, rest)) = stat.rsplit_once(") ") {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
                reading.cpu_secs =
                    (field(14).unwrap_or(0.0) + field(15).unwrap_or(0.0)) / self.ticks;
            }
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{}/status", self.pid)) {
            for line in status.lines() {
                let value = || {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("VmRSS:") {
                    reading.rss_kib = value();
                } else if line.starts_with("RssAnon:") {
                    reading.anon_kib = value();
                } else if line.starts_with("Threads:") {
                    reading.threads = value();
                }
            }
        }
        reading
    }
}

/// Kernel memory that grows with TCP connections, system-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelMemory {
    /// Slab (kernel objects: sockets, inodes, …), KiB.
    pub slab_kib: u64,
    /// TCP buffer memory (`/proc/net/sockstat` `mem`, pages → KiB).
    pub tcp_buffers_kib: u64,
    /// TCP sockets in use.
    pub tcp_inuse: u64,
}

impl KernelMemory {
    /// Reads it now.
    pub fn read() -> Self {
        let mut out = Self::default();
        if let Ok(meminfo) = fs::read_to_string("/proc/meminfo") {
            out.slab_kib = meminfo
                .lines()
                .find(|l| l.starts_with("Slab:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        if let Ok(sockstat) = fs::read_to_string("/proc/net/sockstat") {
            if let Some(line) = sockstat.lines().find(|l| l.starts_with("TCP:")) {
                let words: Vec<&str> = line.split_whitespace().collect();
                let after = |key: &str| {
                    words
                        .iter()
                        .position(|w| *w == key)
                        .and_then(|i| words.get(i + 1))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                out.tcp_inuse = after("inuse");
                out.tcp_buffers_kib = after("mem") * 4;
            }
        }
        out
    }

    /// Total kernel memory counted here, KiB.
    pub fn total_kib(&self) -> u64 {
        self.slab_kib + self.tcp_buffers_kib
    }
}

/// The 1, 5 and 15 minute load averages (other work on a shared machine
/// skews every figure).
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The machine, for the report.
pub fn machine() -> serde_json::Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("?")
        .to_owned();
    let ports = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let command = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    serde_json::json!({
        "cpu": model,
        "cores": cores,
        "memory_gib": (mem_kib as f64 / 1_048_576.0 * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
        "open_files_limit": nofile,
        "ephemeral_ports": ports.split_whitespace().collect::<Vec<_>>().join("-"),
        "rustc": command("rustc", &["-V"]),
        "git": command("git", &["describe", "--always", "--dirty"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let reading = Probe::new(std::process::id()).read();
        assert!(reading.rss_kib > 0);
        assert!(reading.anon_kib > 0);
        assert!(reading.threads >= 1);
    }

    #[test]
    fn a_gone_process_reads_as_zero() {
        assert_eq!(Probe::new(u32::MAX).read(), Reading::default());
    }
}
