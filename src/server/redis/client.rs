//! Who a Redis connection is and what it says about itself: its [`Identity`] (id and
//! addresses, set by the loop at accept), its `CLIENT LIST` line, CLIENT KILL's
//! filters, HELLO's reply map, and the [`LocalQuery`]s only the loop can answer.
//!
//! Invariant: nothing here reads a clock or does IO; ages come from the loop's clock as
//! fed to [`RedisConn::set_now_ms`].

use super::command::{Bytes, KillFilter};
use super::notify::NotifyFlags;
use super::pubsub::PubsubQuery;
use super::{RedisConn, info};
use crate::codec::resp::RespValue;

/// Who the connection is, set by the loop when it accepts it (`CLIENT ID/INFO/LIST`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The connection's id, unique in the node's lifetime (`CLIENT ID`, `HELLO`).
    pub id: u64,
    /// The client's `ip:port`.
    pub addr: String,
    /// The server side's `ip:port`.
    pub laddr: String,
    /// The loop's clock (ms) when the connection was accepted.
    pub opened_ms: u64,
}

/// A question only the loop can answer (it sees every connection and the wall clock);
/// taken with [`RedisConn::take_local_queries`], answered with
/// [`RedisConn::on_local_answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalQuery {
    /// CLIENT LIST: the answer is every Redis connection's [`RedisConn::client_line`]
    /// joined, as a bulk (verbatim in RESP3) string.
    ClientList,
    /// CLIENT KILL: the loop closes the matching connections (see
    /// [`RedisConn::kill_matches`]) and answers the reply.
    ClientKill(KillFilter),
    /// TIME: `[unix seconds, microseconds]`.
    Time,
    /// PUBSUB, and PUBLISH's receiver count: the node's pub/sub index answers.
    Pubsub(PubsubQuery),
    /// `CONFIG GET patterns...`, with the node's `notify-keyspace-events`.
    ConfigGet(Vec<Bytes>),
    /// `CONFIG SET notify-keyspace-events`: the node's setting changes.
    ConfigSet(NotifyFlags),
}

impl RedisConn {
    /// The connection's `CLIENT LIST` line (no line end), as redis-server writes it;
    /// the figures raftkv does not track (memory, buffers) are 0.
    pub fn client_line(&self) -> String {
        let age_s = self.now_ms.saturating_sub(self.identity.opened_ms) / 1000;
        let idle_s = self.now_ms.saturating_sub(self.last_command_ms) / 1000;
        let multi = self.multi.as_ref().map_or(-1, |queued| queued.len() as i64);
        let name = String::from_utf8_lossy(self.name.as_deref().unwrap_or_default());
        let (sub, psub) = self.subscriptions.sizes();
        let flags = match (self.multi.is_some(), sub + psub > 0) {
            (true, _) => "x",
            (false, true) => "P",
            (false, false) => "N",
        };
        format!(
            "id={} addr={} laddr={} fd=-1 name={name} age={age_s} idle={idle_s} flags={} \
             db=0 sub={sub} psub={psub} ssub=0 multi={multi} watch={} qbuf=0 qbuf-free=0 \
             argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r \
             cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.identity.id,
            self.identity.addr,
            self.identity.laddr,
            flags,
            self.shared.watched.len(),
            self.last_command,
            self.protocol.version(),
            String::from_utf8_lossy(&self.lib_name),
            String::from_utf8_lossy(&self.lib_ver),
        )
    }

    /// Whether CLIENT KILL `filter`, sent by connection `caller`, closes this one.
    pub fn kill_matches(&self, filter: &KillFilter, caller: u64) -> bool {
        (!filter.skip_me || self.identity.id != caller)
            && filter.id.is_none_or(|id| id == self.identity.id)
            && filter
                .addr
                .as_ref()
                .is_none_or(|a| *a == self.identity.addr)
            && filter
                .laddr
                .as_ref()
                .is_none_or(|a| *a == self.identity.laddr)
    }

    /// A pseudo-random number for RANDOMKEY (SplitMix64 over the connection's id, the
    /// clock and its request count: varied enough to pick a key, not for secrets).
    pub(super) fn random(&self) -> u64 {
        let mut z = self
            .identity
            .id
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(self.now_ms)
            .wrapping_add(self.next_request_id.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// HELLO's reply: the server's map (a flat array in RESP2).
    pub(super) fn hello_reply(&self) -> RespValue {
        let field = |name: &str, value| (RespValue::bulk(name), value);
        RespValue::Map(vec![
            field("server", RespValue::bulk("redis")),
            field("version", RespValue::bulk(info::REDIS_VERSION)),
            field("proto", RespValue::Integer(self.protocol.version())),
            field("id", RespValue::Integer(self.identity.id as i64)),
            field("mode", RespValue::bulk("standalone")),
            field("role", RespValue::bulk("master")),
            field("modules", RespValue::Array(Some(Vec::new()))),
        ])
    }
}
