//! The benchmark's final report: what ran, what it measured, as text or JSON, and the
//! full latency histogram in HdrHistogram's percentile-distribution (`.hgrm`) format.
//!
//! Latencies are recorded in nanoseconds and reported in microseconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::cpu::NodeCpu;

/// The configuration of a run, as reported.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunConfig {
    /// `spawned` or `external`.
    pub cluster: String,
    /// Number of nodes (spawned or found in the leader's status).
    pub nodes: usize,
    /// The fsync mode of spawned nodes, or `unknown` for an external cluster.
    pub fsync: String,
    /// `put`, `get`, `mixed` or `cas`.
    pub workload: String,
    /// Fraction of reads in `mixed`.
    pub read_ratio: Option<f64>,
    /// Whether reads were stale (served by any node).
    pub stale: bool,
    /// Key space size.
    pub keys: u64,
    /// `uniform` or `zipf(S)`.
    pub distribution: String,
    /// Bytes per key.
    pub key_bytes: usize,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// `closed loop` or `open loop at R/s (latency from intended send time)`.
    pub mode: String,
    /// Seconds of warm-up not measured.
    pub warmup_secs: f64,
    /// `N requests` or `S s`.
    pub length: String,
}

/// The leader at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeaderSnapshot {
    /// Node id.
    pub id: u64,
    /// Term.
    pub term: u64,
    /// Client address.
    pub addr: String,
}

/// Latency summary, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    /// Requests measured.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl Latency {
    /// The summary of a histogram of nanoseconds.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Latency {
        let us = |nanos: u64| nanos as f64 / 1000.0;
        Latency {
            count: histogram.len(),
            mean_us: histogram.mean() / 1000.0,
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// What ran.
    pub config: RunConfig,
    /// The leader before the run, if found.
    pub leader_start: Option<LeaderSnapshot>,
    /// The leader after the run, if found.
    pub leader_end: Option<LeaderSnapshot>,
    /// Seconds of the measured window.
    pub elapsed_secs: f64,
    /// Requests answered in the measured window (errors excluded).
    pub completed: u64,
    /// `completed / elapsed_secs`.
    pub throughput_ops_per_sec: f64,
    /// Latency of the completed requests.
    pub latency: Latency,
    /// Failed requests by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Reads of absent keys (an answer, not an error).
    pub not_found: u64,
    /// Compare-and-swaps that did not match (an answer, not an error).
    pub cas_failed: u64,
    /// `NotLeader` answers followed.
    pub redirects: u64,
    /// Requests re-sent after a lost connection or an `Unavailable` answer.
    pub retries: u64,
    /// Things that went wrong around the run (a spawned node that exited).
    pub warnings: Vec<String>,
    /// CPU time of each spawned node over the window (empty for an external cluster).
    pub node_cpu: Vec<NodeCpu>,
}

impl Report {
    /// The report as human-readable text.
    pub fn render_text(&self) -> String {
        let config = &self.config;
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(format!(
            "cluster      {} ({} nodes, fsync {})",
            config.cluster, config.nodes, config.fsync
        ));
        let reads = match (config.workload.as_str(), config.read_ratio) {
            ("mixed", Some(ratio)) => format!(", {:.0}% reads", ratio * 100.0),
            _ => String::new(),
        };
        let stale = if config.stale { ", stale reads" } else { "" };
        line(format!("workload     {}{reads}{stale}", config.workload));
        line(format!(
            "keys         {} x {} B, {}; values {} B",
            config.keys, config.key_bytes, config.distribution, config.value_bytes
        ));
        line(format!(
            "load         {} connections x {} pipeline, {}",
            config.connections, config.pipeline, config.mode
        ));
        line(format!(
            "length       {} after {} s warm-up",
            config.length, config.warmup_secs
        ));
        line(format!(
            "leader       start {}, end {}",
            leader_text(self.leader_start.as_ref()),
            leader_text(self.leader_end.as_ref())
        ));
        line(format!(
            "throughput   {:.0} ops/s ({} ops in {:.2} s)",
            self.throughput_ops_per_sec, self.completed, self.elapsed_secs
        ));
        let latency = &self.latency;
        line(format!(
            "latency us   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
            micros(latency.p50_us),
            micros(latency.p90_us),
            micros(latency.p99_us),
            micros(latency.p999_us),
            micros(latency.max_us),
            micros(latency.mean_us)
        ));
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, count)| format!("{kind} {count}"))
                .collect();
            kinds.join(", ")
        };
        line(format!("errors       {errors}"));
        line(format!(
            "answers      not found {}, cas failed {}",
            self.not_found, self.cas_failed
        ));
        line(format!(
            "client       redirects {}, retries {}",
            self.redirects, self.retries
        ));
        for node in &self.node_cpu {
            line(format!(
                "cpu          node {} ({}): {:.2} us/op, {:.2} cores",
                node.id, node.role, node.cpu_us_per_op, node.cores
            ));
        }
        for warning in &self.warnings {
            line(format!("warning      {warning}"));
        }
        out
    }

    /// The report as pretty-printed JSON.
    pub fn render_json(&self) -> String {
        // Serializing plain structs of numbers, strings and string-keyed maps cannot fail.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }
}

fn leader_text(leader: Option<&LeaderSnapshot>) -> String {
    match leader {
        Some(leader) => format!("node {} term {} ({})", leader.id, leader.term, leader.addr),
        None => "unknown".into(),
    }
}

/// Microseconds with precision that suits their size.
fn micros(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else if value < 1000.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// The histogram (nanoseconds) in HdrHistogram's `.hgrm` percentile-distribution format,
/// values in microseconds, for the HdrHistogram plotter.
pub fn percentile_distribution(histogram: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        let value = step.value_iterated_to() as f64 / 1000.0;
        if quantile < 1.0 {
            let inverse = 1.0 / (1.0 - quantile);
            let _ = writeln!(
                out,
                "{value:>12.3} {quantile:>14.12} {total:>10} {inverse:>14.2}"
            );
        } else {
            let _ = writeln!(out, "{value:>12.3} {quantile:>14.12} {total:>10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / 1000.0,
        histogram.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / 1000.0,
        histogram.len()
    );
    out
}

#[cfg(test)]
mod tests {
    //! Goal: the summary reads the right quantiles and the renderings carry every field
    //! the issue asks for. Method: a histogram of 1..=1000 us, rendered and parsed back.
    use super::*;

    fn histogram() -> Histogram<u64> {
        let mut histogram = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
        for micros in 1..=1000u64 {
            histogram.record(micros * 1000).expect("in range");
        }
        histogram
    }

    fn report() -> Report {
        Report {
            config: RunConfig {
                cluster: "spawned".into(),
                nodes: 3,
                fsync: "always".into(),
                workload: "mixed".into(),
                read_ratio: Some(0.9),
                stale: false,
                keys: 1000,
                distribution: "zipf(0.99)".into(),
                key_bytes: 16,
                value_bytes: 64,
                connections: 64,
                pipeline: 16,
                mode: "closed loop".into(),
                warmup_secs: 1.0,
                length: "10 s".into(),
            },
            leader_start: Some(LeaderSnapshot {
                id: 1,
                term: 2,
                addr: "127.0.0.1:7001".into(),
            }),
            leader_end: None,
            elapsed_secs: 2.0,
            completed: 1000,
            throughput_ops_per_sec: 500.0,
            latency: Latency::from_histogram(&histogram()),
            errors: BTreeMap::from([("timeout".to_string(), 2)]),
            not_found: 3,
            cas_failed: 0,
            redirects: 1,
            retries: 4,
            warnings: vec!["node 2 exited".into()],
            node_cpu: vec![NodeCpu {
                id: 1,
                role: "leader".into(),
                cpu_us_per_op: 2.5,
                cores: 0.75,
            }],
        }
    }

    #[test]
    fn latency_summary_reads_quantiles_in_microseconds() {
        let latency = Latency::from_histogram(&histogram());
        let cases = [
            ("p50", latency.p50_us, 500.0),
            ("p90", latency.p90_us, 900.0),
            ("p99", latency.p99_us, 990.0),
            ("p999", latency.p999_us, 999.0),
            ("max", latency.max_us, 1000.0),
            ("mean", latency.mean_us, 500.5),
        ];
        for (name, got, want) in cases {
            // Three significant digits: within 0.1%.
            assert!(
                (got - want).abs() <= want * 0.001 + 0.5,
                "{name}: {got} vs {want}"
            );
        }
        assert_eq!(latency.count, 1000);
    }

    #[test]
    fn text_and_json_carry_every_field() {
        let report = report();
        let text = report.render_text();
        for needle in [
            "spawned (3 nodes, fsync always)",
            "mixed, 90% reads",
            "zipf(0.99)",
            "64 connections x 16 pipeline, closed loop",
            "start node 1 term 2 (127.0.0.1:7001), end unknown",
            "500 ops/s (1000 ops in 2.00 s)",
            "p50 500.",
            "p99.9 999.",
            "timeout 2",
            "redirects 1, retries 4",
            "warning      node 2 exited",
            "cpu          node 1 (leader): 2.50 us/op, 0.75 cores",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let json: serde_json::Value = serde_json::from_str(&report.render_json()).expect("json");
        assert_eq!(json["config"]["connections"], 64);
        assert_eq!(json["errors"]["timeout"], 2);
        assert_eq!(json["latency"]["count"], 1000);
        assert!(json["leader_end"].is_null());
        assert_eq!(json["node_cpu"][0]["cpu_us_per_op"], 2.5);
    }

    #[test]
    fn percentile_distribution_ends_at_the_total_count() {
        let text = percentile_distribution(&histogram());
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|line| line.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert!(rows.len() > 10, "{text}");
        let last = rows.last().expect("rows");
        assert_eq!(last[2], "1000", "{text}");
        assert!(text.contains("Total count    =         1000"), "{text}");
    }
}
