//! The simulated network: which directed links are cut, and for each message whether
//! it is lost, duplicated, and how long each copy takes. Random per-message delays
//! reorder messages; a cut link drops everything sent over it in that direction, so
//! partitions of any shape, one-way ones included, are sets of cut links.
//!
//! Every decision draws from the simulation's one RNG, in a fixed order.

use std::collections::BTreeSet;

use raftkv::raft::NodeId;
use raftkv::raft::rng::Rng;

/// Delay of a normal message, in virtual time units (a tick is `TICK_UNITS`).
const DELAY_MIN: u64 = 1;
/// Upper bound (exclusive) of a normal delay.
const DELAY_MAX: u64 = 12;
/// Upper bound (exclusive) of a slow message's delay: older messages then arrive late.
const SLOW_DELAY_MAX: u64 = 120;

/// Loss, duplication and slowness, in parts per thousand.
#[derive(Debug, Clone, Copy, Default)]
pub struct Weather {
    /// Messages lost.
    pub drop_per_mille: u64,
    /// Messages delivered twice.
    pub duplicate_per_mille: u64,
    /// Messages delayed up to `SLOW_DELAY_MAX`.
    pub slow_per_mille: u64,
}

/// The links and the weather.
#[derive(Debug, Default)]
pub struct Network {
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Current loss, duplication and slowness.
    pub weather: Weather,
}

impl Network {
    /// Delays of the copies of a message from `from` to `to` that will arrive (none
    /// when it is lost or the link is cut).
    pub fn plan(&self, rng: &mut Rng, from: NodeId, to: NodeId) -> Vec<u64> {
        if self.cut.contains(&(from, to)) || rng.range(0, 1000) < self.weather.drop_per_mille {
            return Vec::new();
        }
        let copies = if rng.range(0, 1000) < self.weather.duplicate_per_mille {
            2
        } else {
            1
        };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    /// The delay of one message that is not lost (client traffic too).
    pub fn delay(&self, rng: &mut Rng) -> u64 {
        if rng.range(0, 1000) < self.weather.slow_per_mille {
            rng.range(DELAY_MAX, SLOW_DELAY_MAX)
        } else {
            rng.range(DELAY_MIN, DELAY_MAX)
        }
    }

    /// Replaces the cut links by a random partition of `ids`: one node isolated, two
    /// groups, a one-way cut, or random directed links.
    pub fn partition(&mut self, rng: &mut Rng, ids: &[NodeId]) {
        self.cut.clear();
        let pick = |rng: &mut Rng| ids[rng.range(0, ids.len() as u64) as usize];
        match rng.range(0, 4) {
            0 => {
                let alone = pick(rng);
                for &other in ids.iter().filter(|&&other| other != alone) {
                    self.cut.insert((alone, other));
                    self.cut.insert((other, alone));
                }
            }
            1 => {
                let side: Vec<bool> = ids.iter().map(|_| rng.range(0, 2) == 0).collect();
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        if side[i] != side[j] {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
            2 => {
                let (a, b) = (pick(rng), pick(rng));
                if a != b {
                    self.cut.insert((a, b));
                }
            }
            _ => {
                for &a in ids {
                    for &b in ids {
                        if a != b && rng.range(0, 4) == 0 {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
        }
    }

    /// Heals every link (the weather stays).
    pub fn reconnect(&mut self) {
        self.cut.clear();
    }

    /// Heals every link and clears the weather.
    pub fn heal(&mut self) {
        self.reconnect();
        self.weather = Weather::default();
    }
}
