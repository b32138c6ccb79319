//! Requests the node answered, by port, operation and outcome, with a latency
//! histogram per port and operation (`raftkv_requests_total`,
//! `raftkv_request_duration_seconds`). The driver calls [`RequestMetrics::on_request`]
//! when it hands a request to the node and [`RequestMetrics::on_response`] for every
//! reply, with its clock in microseconds (nothing here reads a clock).
//!
//! Cheap on the request path: labels are fixed `&'static str`s, so a request costs one
//! insert into the map of requests waiting and one lookup in each of the counts and
//! the histograms (allocations only the first time a label set is seen, and when the
//! waiting map grows).
//!
//! Invariant: at most [`WAITING_MAX`] requests wait; past that a request is answered
//! unmeasured (neither counted nor timed) rather than growing the map without bound.

use std::collections::{BTreeMap, HashMap};

use super::metrics::Timings;
use super::requests::ClientRef;
use crate::codec::client::{Request, RequestBody, Response, ResponseBody};
use crate::kv::{Command, CommandResult};
use crate::replica::exposition::{Buckets, Exposition, Kind};

/// Requests measured at a time; more are answered unmeasured.
pub const WAITING_MAX: usize = 65_536;

/// Longest request latency the histogram tracks exactly (60 s, in µs).
const LATENCY_US_MAX: u64 = 60_000_000;

/// Request latencies in µs, exported in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: Buckets = Buckets {
    bounds: &[
        50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 2_500_000, 5_000_000, 10_000_000,
    ],
    units_per_base: 1_000_000,
};

/// The port a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// The binary client protocol.
    Client,
    /// The Redis port.
    Redis,
    /// The HTTP port.
    Http,
}

impl Port {
    /// The `port` label.
    pub fn name(self) -> &'static str {
        match self {
            Port::Client => "client",
            Port::Redis => "redis",
            Port::Http => "http",
        }
    }
}

/// The `op` label of a request.
pub fn op_of(body: &RequestBody) -> &'static str {
    match body {
        RequestBody::Get { stale: false, .. } => "get",
        RequestBody::Get { stale: true, .. } => "get_stale",
        RequestBody::Command(command) => match command {
            Command::Get { .. } => "get_logged",
            Command::Put { .. } => "put",
            Command::Delete { .. } => "delete",
            Command::Cas { .. } => "cas",
            Command::Txn { .. } => "txn",
            Command::RegisterSession => "register_session",
            Command::Rmw { .. } => "rmw",
            // Refused from clients: only the leader writes them.
            Command::At { .. } | Command::DeleteExpired { .. } => "timed",
            Command::Publish { .. } => "publish",
        },
        RequestBody::Range { stale: false, .. } => "range",
        RequestBody::Range { stale: true, .. } => "range_stale",
        RequestBody::Ttl { stale: false, .. } => "ttl",
        RequestBody::Ttl { stale: true, .. } => "ttl_stale",
        RequestBody::Status => "status",
        RequestBody::Metrics => "metrics",
        RequestBody::MemberChange(_) => "member_change",
        RequestBody::TransferLeader { .. } => "transfer_leader",
        RequestBody::Backup(_) => "snapshot_save",
        RequestBody::Watch { .. } => "watch",
    }
}

/// The `outcome` label of a reply.
pub fn outcome_of(body: &ResponseBody) -> &'static str {
    match body {
        ResponseBody::Result(CommandResult::CasFailed { .. }) => "cas_failed",
        ResponseBody::Result(CommandResult::SessionExpired | CommandResult::StaleSequence) => {
            "session_error"
        }
        ResponseBody::Result(_)
        | ResponseBody::Range(_)
        | ResponseBody::Status(_)
        | ResponseBody::Metrics(_)
        | ResponseBody::Backup(_)
        | ResponseBody::Watch(_) => "ok",
        ResponseBody::NotLeader { .. } => "not_leader",
        ResponseBody::Unavailable(_) => "unavailable",
        ResponseBody::Error(text) if text.starts_with("NOSPACE") => "nospace",
        ResponseBody::Error(_) => "error",
    }
}

/// The requests waiting and what was measured of those answered.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    /// (client, request id) -> (port, op, received at µs).
    waiting: HashMap<(ClientRef, u64), (Port, &'static str, u64)>,
    counts: BTreeMap<(Port, &'static str, &'static str), u64>,
    latency: BTreeMap<(Port, &'static str), Timings>,
}

impl RequestMetrics {
    /// Nothing measured.
    pub fn new() -> RequestMetrics {
        RequestMetrics::default()
    }

    /// `request` from `client` on `port` was handed to the node at `now_us`.
    pub fn on_request(&mut self, port: Port, client: ClientRef, request: &Request, now_us: u64) {
        if self.waiting.len() >= WAITING_MAX {
            return;
        }
        let op = op_of(&request.body);
        self.waiting
            .insert((client, request.request_id), (port, op, now_us));
    }

    /// `response` to `client` left at `now_us`: counts and times the request it answers.
    pub fn on_response(&mut self, client: ClientRef, response: &Response, now_us: u64) {
        let Some((port, op, received_us)) = self.waiting.remove(&(client, response.request_id))
        else {
            return;
        };
        let outcome = outcome_of(&response.body);
        *self.counts.entry((port, op, outcome)).or_default() += 1;
        self.latency
            .entry((port, op))
            .or_insert_with(|| Timings::new(LATENCY_US_MAX))
            .record(now_us.saturating_sub(received_us));
    }

    /// `client` closed: its requests will not be answered.
    pub fn on_client_closed(&mut self, client: ClientRef) {
        self.waiting.retain(|(waiting, _), _| *waiting != client);
    }

    /// The counts and histograms in the Prometheus text format.
    pub fn write_prometheus(&self, x: &mut Exposition) {
        let name = "raftkv_requests_total";
        x.family(
            name,
            Kind::Counter,
            "Requests answered by the node, by port, operation and outcome.",
        );
        for ((port, op, outcome), count) in &self.counts {
            let labels = [("port", port.name()), ("op", *op), ("outcome", *outcome)];
            x.sample(name, &labels, *count);
        }
        let name = "raftkv_request_duration_seconds";
        x.family(
            name,
            Kind::Histogram,
            "Time from a request reaching the node to its answer, by port and operation.",
        );
        for ((port, op), timings) in &self.latency {
            let labels = [("port", port.name()), ("op", *op)];
            let (h, sum) = (timings.histogram(), timings.sum());
            x.histogram(name, &labels, h, sum, LATENCY_BUCKETS);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: a reply counts and times the request it answers, under its port, op and
    //! outcome; replies to unknown or forgotten requests count nothing.
    use super::*;

    const A: ClientRef = ClientRef {
        key: 1,
        generation: 1,
    };
    const B: ClientRef = ClientRef {
        key: 2,
        generation: 1,
    };

    fn request(request_id: u64, body: RequestBody) -> Request {
        Request { request_id, body }
    }

    fn response(request_id: u64, body: ResponseBody) -> Response {
        Response { request_id, body }
    }

    fn text(m: &RequestMetrics) -> String {
        let mut x = Exposition::new();
        m.write_prometheus(&mut x);
        x.finish()
    }

    #[test]
    fn replies_count_and_time_their_requests() {
        let mut m = RequestMetrics::new();
        let get = || RequestBody::Get {
            key: b"k".to_vec(),
            stale: false,
        };
        m.on_request(Port::Redis, A, &request(1, get()), 1_000);
        m.on_request(Port::Client, B, &request(1, RequestBody::Status), 1_000);
        m.on_request(Port::Redis, A, &request(2, get()), 1_100);
        m.on_response(
            A,
            &response(2, ResponseBody::Unavailable("x".into())),
            1_400,
        );
        m.on_response(
            A,
            &response(1, ResponseBody::Result(CommandResult::NotFound)),
            3_000,
        );
        m.on_response(
            A,
            &response(1, ResponseBody::Result(CommandResult::Ok)),
            3_100,
        );
        m.on_client_closed(B);
        m.on_response(
            B,
            &response(1, ResponseBody::Error("NOSPACE".into())),
            3_200,
        );
        let text = text(&m);
        let want = [
            r#"raftkv_requests_total{port="redis",op="get",outcome="ok"} 1"#,
            r#"raftkv_requests_total{port="redis",op="get",outcome="unavailable"} 1"#,
            r#"raftkv_request_duration_seconds_bucket{port="redis",op="get",le="0.00025"} 0"#,
            r#"raftkv_request_duration_seconds_bucket{port="redis",op="get",le="0.0005"} 1"#,
            r#"raftkv_request_duration_seconds_bucket{port="redis",op="get",le="0.0025"} 2"#,
            r#"raftkv_request_duration_seconds_sum{port="redis",op="get"} 0.0023"#,
            r#"raftkv_request_duration_seconds_count{port="redis",op="get"} 2"#,
        ];
        for (i, line) in want.iter().enumerate() {
            assert!(
                text.lines().any(|l| l == *line),
                "#{i}: {line} not in\n{text}"
            );
        }
        assert!(
            !text.contains("status"),
            "a closed client's request counted:\n{text}"
        );
    }

    #[test]
    fn outcomes_and_ops_have_fixed_names() {
        let cases = [
            (ResponseBody::Error("NOSPACE node 1 ...".into()), "nospace"),
            (ResponseBody::Error("too large".into()), "error"),
            (
                ResponseBody::NotLeader {
                    leader_id: 2,
                    leader_client_addr: None,
                },
                "not_leader",
            ),
            (
                ResponseBody::Result(CommandResult::StaleSequence),
                "session_error",
            ),
        ];
        for (i, (body, want)) in cases.iter().enumerate() {
            assert_eq!(outcome_of(body), *want, "#{i}");
        }
        assert_eq!(
            op_of(&RequestBody::Command(Command::RegisterSession)),
            "register_session"
        );
    }
}
