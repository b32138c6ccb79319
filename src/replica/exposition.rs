//! A writer of the Prometheus text exposition format, version 0.0.4: metric families
//! (`# HELP` and `# TYPE` lines, then their samples), label escaping, and histograms
//! converted from an [`hdrhistogram::Histogram`] into cumulative `_bucket{le=..}`
//! samples, `_sum` and `_count`.
//!
//! It knows the format, not raftkv's metrics (those are in `metrics::prometheus`).
//!
//! Invariants of the text it produces: every family's `# HELP` and `# TYPE` lines come
//! once, before its samples; a histogram's buckets are cumulative, in increasing `le`
//! order, and end with `le="+Inf"` equal to its `_count`.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// The `Content-Type` of a `/metrics` answer in this format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (names end in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations counted in buckets.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The bucket bounds of a histogram, in the unit its observations are recorded in,
/// and how many of those units make the exported base unit (1 000 000 for
/// microseconds exported as seconds, 1 for plain counts).
#[derive(Debug, Clone, Copy)]
pub struct Buckets {
    /// Upper bounds in recorded units, strictly increasing.
    pub bounds: &'static [u64],
    /// Recorded units per exported unit.
    pub units_per_base: u64,
}

/// Text being built; [`Exposition::finish`] returns it.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts the family `name`: its `# HELP` and `# TYPE` lines. Its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    /// One sample of the current family with an integer value.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.write_name(name, labels, None);
        let _ = writeln!(self.text, " {value}");
    }

    /// One sample with a fractional value (seconds, ratios).
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.write_name(name, labels, None);
        let _ = writeln!(self.text, " {}", format_f64(value));
    }

    /// A family of one unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], value);
    }

    /// A family of one unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram of the current family: cumulative buckets over
    /// `buckets`, `+Inf`, `_sum` (`sum` in recorded units, converted) and `_count`.
    /// A recorded value counts in a bucket when the highest value the histogram
    /// cannot tell apart from it is within the bound (3 significant digits), so a
    /// bucket never understates a latency.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        histogram: &Histogram<u64>,
        sum: u64,
        buckets: Buckets,
    ) {
        let mut counts = vec![0u64; buckets.bounds.len()];
        for value in histogram.iter_recorded() {
            let highest = value.value_iterated_to();
            if let Some(slot) = buckets.bounds.iter().position(|&b| highest <= b) {
                counts[slot] += value.count_at_value();
            }
        }
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (&bound, count) in buckets.bounds.iter().zip(counts) {
            cumulative += count;
            let le = format_f64(bound as f64 / buckets.units_per_base as f64);
            self.write_name(&bucket_name, labels, Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        self.write_name(&bucket_name, labels, Some("+Inf"));
        let _ = writeln!(self.text, " {}", histogram.len());
        let sum = sum as f64 / buckets.units_per_base as f64;
        self.sample_f64(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, histogram.len());
    }

    /// The text built.
    pub fn finish(self) -> String {
        self.text
    }

    fn write_name(&mut self, name: &str, labels: &[(&str, &str)], le: Option<&str>) {
        self.text.push_str(name);
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.text.push('{');
        let le = le.map(|le| ("le", le));
        for (i, (key, value)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            self.text.push_str(key);
            self.text.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.text.push_str("\\\\"),
                    '"' => self.text.push_str("\\\""),
                    '\n' => self.text.push_str("\\n"),
                    c => self.text.push(c),
                }
            }
            self.text.push('"');
        }
        self.text.push('}');
    }
}

/// A float as Prometheus reads it: Rust's shortest round-trip form, which never uses
/// an exponent, and `+Inf`/`-Inf`/`NaN` spelled as the format wants.
fn format_f64(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the text follows the format: HELP/TYPE before samples, escaped labels,
    //! cumulative buckets whose `+Inf` equals `_count`, sums converted to base units.
    use super::*;

    const LATENCY: Buckets = Buckets {
        bounds: &[1_000, 10_000, 100_000],
        units_per_base: 1_000_000,
    };

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for &v in values {
            h.record(v).expect("in range");
        }
        h
    }

    #[test]
    fn counter_and_gauge_have_help_and_type_first() {
        let mut x = Exposition::new();
        x.counter("raftkv_things_total", "Things.\nMore", 3);
        x.gauge("raftkv_level", "Level", 7);
        let want = "# HELP raftkv_things_total Things.\\nMore\n\
                    # TYPE raftkv_things_total counter\n\
                    raftkv_things_total 3\n\
                    # HELP raftkv_level Level\n\
                    # TYPE raftkv_level gauge\n\
                    raftkv_level 7\n";
        assert_eq!(x.finish(), want);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut x = Exposition::new();
        x.family("m", Kind::Gauge, "h");
        x.sample("m", &[("a", "x\"y"), ("b", "back\\slash\nnl")], 1);
        let text = x.finish();
        let line = text.lines().last().expect("a sample");
        assert_eq!(line, r#"m{a="x\"y",b="back\\slash\nnl"} 1"#);
    }

    #[test]
    fn floats_never_use_exponents() {
        let cases = [
            (0.0001, "0.0001"),
            (2.5, "2.5"),
            (1e-7, "0.0000001"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ];
        for (i, (value, want)) in cases.iter().enumerate() {
            assert_eq!(format_f64(*value), *want, "#{i}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_count() {
        // 500 µs and 1 ms fall in le=0.001; 5 ms in le=0.01; 2 s only in +Inf.
        let h = histogram(&[500, 1_000, 5_000, 2_000_000]);
        let mut x = Exposition::new();
        x.family("lat_seconds", Kind::Histogram, "Latency");
        x.histogram("lat_seconds", &[("peer", "2")], &h, 2_006_500, LATENCY);
        let text = x.finish();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let want = [
            r#"lat_seconds_bucket{peer="2",le="0.001"} 2"#,
            r#"lat_seconds_bucket{peer="2",le="0.01"} 3"#,
            r#"lat_seconds_bucket{peer="2",le="0.1"} 3"#,
            r#"lat_seconds_bucket{peer="2",le="+Inf"} 4"#,
            r#"lat_seconds_sum{peer="2"} 2.0065"#,
            r#"lat_seconds_count{peer="2"} 4"#,
        ];
        assert_eq!(samples, want);
    }

    #[test]
    fn empty_histogram_has_zero_buckets() {
        let mut x = Exposition::new();
        x.family("h", Kind::Histogram, "H");
        x.histogram("h", &[], &histogram(&[]), 0, LATENCY);
        let text = x.finish();
        assert!(text.contains("h_bucket{le=\"+Inf\"} 0\n"), "{text}");
        assert!(
            text.contains("h_sum 0\n") && text.contains("h_count 0\n"),
            "{text}"
        );
    }
}
