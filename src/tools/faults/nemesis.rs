//! The nemesis: injects one fault at a time into a [`FaultCluster`] and heals it.
//!
//! Faults: kill -9 of a node (restarted on heal, its data dir kept), SIGSTOP of a node
//! (SIGCONT on heal), partitions through the link proxies (the leader isolated, a random
//! majority/minority split, a bridge where one node sees both halves that cannot see each
//! other, one-way loss where a node can hear but not speak or the reverse, a stalled
//! leader whose links hold their data until the heal), and delay on every link.
//!
//! Invariant: [`Nemesis::heal`] returns the cluster to all links passing and all nodes
//! running, whatever was injected before.

use std::io;
use std::str::FromStr;

use crate::raft::rng::Rng;

use super::cluster::FaultCluster;
use super::proxy::LinkMode;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// kill -9 of the leader or a random node; restart on heal.
    Kill,
    /// SIGSTOP of the leader or a random node; SIGCONT on heal.
    Pause,
    /// The leader cut from every other node (both directions).
    IsolateLeader,
    /// A random split into a majority and a minority.
    MajorityMinority,
    /// Two halves that cannot talk, and one node that talks to both.
    Bridge,
    /// A node's outgoing (or incoming) links dropped, the other direction intact.
    OneWay,
    /// The leader's links stalled: nothing forwarded, data held until the heal.
    StallLeader,
    /// Every link delayed by the same random 20-150 ms.
    Delay,
}

impl FaultKind {
    /// Every kind, in the order `--nemesis all` cycles through.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::IsolateLeader,
        FaultKind::MajorityMinority,
        FaultKind::Bridge,
        FaultKind::OneWay,
        FaultKind::StallLeader,
        FaultKind::Delay,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::MajorityMinority => "majority-minority",
            FaultKind::Bridge => "bridge",
            FaultKind::OneWay => "one-way",
            FaultKind::StallLeader => "stall-leader",
            FaultKind::Delay => "delay",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(name: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown nemesis `{name}`; known: all, {}", names.join(", "))
            })
    }
}

/// Parses `all` or a comma-separated list of fault names.
///
/// # Errors
/// The message names the unknown fault and lists the known ones.
pub fn parse_kinds(text: &str) -> Result<Vec<FaultKind>, String> {
    if text == "all" {
        return Ok(FaultKind::ALL.to_vec());
    }
    let kinds = text
        .split(',')
        .map(|name| name.trim().parse())
        .collect::<Result<Vec<_>, _>>()?;
    if kinds.is_empty() {
        return Err("no nemesis given".into());
    }
    Ok(kinds)
}

/// Chooses and applies faults.
pub struct Nemesis {
    kinds: Vec<FaultKind>,
    rng: Rng,
    next: usize,
}

impl Nemesis {
    /// A nemesis cycling through `kinds` (each fault's target chosen by `seed`).
    pub fn new(kinds: Vec<FaultKind>, seed: u64) -> Nemesis {
        Nemesis {
            kinds,
            rng: Rng::new(seed),
            next: 0,
        }
    }

    /// Injects the next fault and describes it (e.g. `kill n2 (leader)`).
    ///
    /// # Errors
    /// Only from the cluster's process handling.
    pub fn inject(&mut self, cluster: &mut FaultCluster) -> io::Result<String> {
        let Some(&kind) = self.kinds.get(self.next % self.kinds.len().max(1)) else {
            return Ok("none".into());
        };
        self.next += 1;
        let count = cluster.len();
        let leader = cluster.leader();
        let random = self.rng.range(0, count as u64) as usize;
        let target = match leader {
            Some(leader) if self.rng.range(0, 3) > 0 => leader,
            _ => random,
        };
        let role = |node: usize| {
            if Some(node) == leader {
                " (leader)"
            } else {
                ""
            }
        };
        let description = match kind {
            FaultKind::Kill => {
                cluster.kill(target);
                format!("kill n{}{}", target + 1, role(target))
            }
            FaultKind::Pause => {
                cluster.pause(target, true);
                format!("pause n{}{}", target + 1, role(target))
            }
            FaultKind::IsolateLeader | FaultKind::StallLeader => {
                let others: Vec<usize> = (0..count).filter(|&n| n != target).collect();
                let mode = if kind == FaultKind::StallLeader {
                    LinkMode::Stall
                } else {
                    LinkMode::Drop
                };
                cut(cluster, &[target], &others, mode);
                format!("{} n{}{}", kind.name(), target + 1, role(target))
            }
            FaultKind::MajorityMinority => {
                let order = self.shuffled(count);
                let (minority, majority) = order.split_at(count / 2);
                cut(cluster, minority, majority, LinkMode::Drop);
                format!(
                    "split minority {} | majority {}",
                    names(minority),
                    names(majority)
                )
            }
            FaultKind::Bridge => {
                let mut order = self.shuffled(count);
                let bridge = order.remove(0);
                let (left, right) = order.split_at(order.len() / 2);
                cut(cluster, left, right, LinkMode::Drop);
                format!(
                    "bridge n{} between {} and {}",
                    bridge + 1,
                    names(left),
                    names(right)
                )
            }
            FaultKind::OneWay => {
                let outgoing = self.rng.range(0, 2) == 0;
                for other in (0..count).filter(|&n| n != target) {
                    let (from, to) = if outgoing {
                        (target, other)
                    } else {
                        (other, target)
                    };
                    cluster.set_link(from, to, LinkMode::Drop);
                }
                let way = if outgoing {
                    "cannot send"
                } else {
                    "cannot hear"
                };
                format!("one-way: n{}{} {way}", target + 1, role(target))
            }
            FaultKind::Delay => {
                let ms = self.rng.range(20, 151);
                for from in 0..count {
                    for to in 0..count {
                        cluster.set_link(from, to, LinkMode::Delay(ms));
                    }
                }
                format!("delay {ms} ms on every link")
            }
        };
        Ok(description)
    }

    /// Ends every fault: links pass, paused nodes continue, killed nodes restart.
    ///
    /// # Errors
    /// Restarting a node failed.
    pub fn heal(&mut self, cluster: &mut FaultCluster) -> io::Result<()> {
        cluster.heal()
    }

    fn shuffled(&mut self, count: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..count).collect();
        for i in (1..count).rev() {
            let j = self.rng.range(0, i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }
}

/// Sets every link between `a` and `b`, both directions, to `mode`.
fn cut(cluster: &FaultCluster, a: &[usize], b: &[usize], mode: LinkMode) {
    for &x in a {
        for &y in b {
            cluster.set_link(x, y, mode);
            cluster.set_link(y, x, mode);
        }
    }
}

fn names(nodes: &[usize]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| format!("n{}", n + 1)).collect();
    format!("{{{}}}", names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_names_and_all() {
        assert_eq!(parse_kinds("all").expect("all"), FaultKind::ALL.to_vec());
        assert_eq!(
            parse_kinds("kill, bridge").expect("list"),
            vec![FaultKind::Kill, FaultKind::Bridge]
        );
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        let error = parse_kinds("kill,flood").expect_err("unknown");
        assert!(
            error.contains("flood") && error.contains("one-way"),
            "{error}"
        );
    }
}
