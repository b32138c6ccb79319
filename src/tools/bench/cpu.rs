//! CPU time of the spawned nodes over the measured window, read from `/proc/PID/stat`.
//!
//! [`CpuMeter::start`] and [`CpuMeter::stop`] each take one sample of every node's
//! user + system time (the `utime` and `stime` fields, in clock ticks); the report
//! divides the difference by the requests completed in the window (CPU per request)
//! and by the window's length (cores busy). An external cluster has no meter: its
//! processes are not ours to read.
//!
//! Invariant: a node's figure is reported only when both samples of it were read; a
//! node whose `/proc` entry vanished (it died) is left out, not counted as zero.

use serde::Serialize;

/// One spawned node to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeteredNode {
    /// The node's id.
    pub id: u64,
    /// Its process id.
    pub pid: u32,
}

/// The CPU one node spent in the measured window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeCpu {
    /// The node's id.
    pub id: u64,
    /// `leader` or `follower`, by the leader found before the run.
    pub role: String,
    /// CPU time (user + system) divided by the requests completed.
    pub cpu_us_per_op: f64,
    /// CPU time divided by the window's length: cores kept busy.
    pub cores: f64,
}

/// Samples of the nodes' CPU time at the start and the end of the window.
#[derive(Debug, Default)]
pub struct CpuMeter {
    nodes: Vec<MeteredNode>,
    started: Vec<Option<u64>>,
    stopped: Vec<Option<u64>>,
}

impl CpuMeter {
    /// A meter of `nodes` (empty: measures nothing).
    pub fn new(nodes: Vec<MeteredNode>) -> CpuMeter {
        CpuMeter {
            nodes,
            started: Vec::new(),
            stopped: Vec::new(),
        }
    }

    /// Whether the window's start has been sampled.
    pub fn is_started(&self) -> bool {
        !self.started.is_empty() || self.nodes.is_empty()
    }

    /// Samples the start of the window.
    pub fn start(&mut self) {
        self.started = self.sample();
    }

    /// Samples the end of the window.
    pub fn stop(&mut self) {
        self.stopped = self.sample();
    }

    fn sample(&self) -> Vec<Option<u64>> {
        self.nodes
            .iter()
            .map(|node| process_cpu_ticks(node.pid))
            .collect()
    }

    /// Each measured node's figures for `completed` requests in `elapsed_secs`;
    /// `leader` is the id of the leader found before the run.
    pub fn report(&self, leader: Option<u64>, completed: u64, elapsed_secs: f64) -> Vec<NodeCpu> {
        let ticks_per_sec = clock_ticks_per_sec();
        self.nodes
            .iter()
            .zip(self.started.iter().zip(&self.stopped))
            .filter_map(|(node, (start, stop))| {
                let ticks = stop.as_ref()?.checked_sub(*start.as_ref()?)?;
                let cpu_secs = ticks as f64 / ticks_per_sec;
                Some(NodeCpu {
                    id: node.id,
                    role: if leader == Some(node.id) {
                        "leader"
                    } else {
                        "follower"
                    }
                    .into(),
                    cpu_us_per_op: if completed > 0 {
                        cpu_secs * 1e6 / completed as f64
                    } else {
                        0.0
                    },
                    cores: if elapsed_secs > 0.0 {
                        cpu_secs / elapsed_secs
                    } else {
                        0.0
                    },
                })
            })
            .collect()
    }
}

/// User + system time of process `pid` in clock ticks, or `None` if it cannot be read.
fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&stat)
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces or parentheses, so fields are counted after
/// the last `)`: there, `utime` and `stime` are the 12th and 13th.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the running system; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    //! Goal: the stat parser finds utime and stime even behind an awkward command name,
    //! and the figures divide by requests and seconds. Method: fixed stat lines, and
    //! this test process's own stat file.
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (raft kv) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    123 45 0 0 20 0 1 0 100 2000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(168));
        assert_eq!(parse_stat_cpu_ticks("12 (short) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_can_be_sampled_and_reported() {
        let pid = std::process::id();
        let mut meter = CpuMeter::new(vec![MeteredNode { id: 7, pid }]);
        assert!(!meter.is_started());
        meter.start();
        assert!(meter.is_started());
        // Burn CPU until the kernel has counted at least two ticks of it (bounded).
        let first = process_cpu_ticks(pid).expect("own stat");
        let begin = std::time::Instant::now();
        let mut x = 0u64;
        while process_cpu_ticks(pid).expect("own stat") < first + 2
            && begin.elapsed() < std::time::Duration::from_secs(10)
        {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        meter.stop();
        let report = meter.report(Some(7), 1000, 0.06);
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].role, "leader");
        assert!(report[0].cpu_us_per_op > 0.0, "{report:?}");
        assert!(meter.report(Some(1), 0, 0.0)[0].cores == 0.0);
    }

    #[test]
    fn a_vanished_process_is_left_out() {
        let mut meter = CpuMeter::new(vec![MeteredNode {
            id: 1,
            pid: u32::MAX,
        }]);
        meter.start();
        meter.stop();
        assert!(meter.report(None, 10, 1.0).is_empty());
    }
}
