//! The workload: concurrent client threads doing get (40 %), put (25 %), delete (5 %) and
//! cas (30 %) on a small key set, each operation recorded with its invoke and complete
//! times and its outcome.
//!
//! Values are unique per write (`c{client}-{n}`), so a read names the write it saw. A cas
//! expects the value its client last saw for that key, so some succeed and some fail.
//! Outcomes: a put or cas that returns any error is `Unknown` (the client library retries
//! internally, so even an `Unavailable` may come after a send that was applied); a get
//! that fails is `Unknown` too (the checker ignores it). Nothing is ever `Failed`: no
//! error of the client library proves a write was not applied.
//!
//! Invariant: every thread stops within one request timeout of the stop flag being set.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::check::{KvCall, Operation, Outcome};
use crate::client::{CasOutcome, Client, ClientOptions};
use crate::raft::rng::Rng;
use crate::tls::ClientTls;

/// Settings of the workload.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Concurrent client threads.
    pub clients: usize,
    /// Size of the key set (`k0`, `k1`, ...).
    pub keys: usize,
    /// Timeout of one client call, retries included.
    pub request_timeout: Duration,
    /// Seed of the operation mix.
    pub seed: u64,
    /// Read with local (stale) reads from a random node instead of linearizable reads.
    /// Not linearizable by design: a self-test showing that the suite catches stale reads
    /// of a real cluster under partitions.
    pub stale_reads: bool,
    /// Speak TLS to the nodes (a cluster started with `tls`).
    pub tls: Option<ClientTls>,
}

/// The key names of a key set of `count` keys.
pub fn key_names(count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|k| format!("k{k}").into_bytes()).collect()
}

/// Microseconds since `clock`: the one clock every recorder shares.
pub fn micros_since(clock: Instant) -> u64 {
    clock.elapsed().as_micros() as u64
}

/// The client options of the suite: short timeouts so operations never hang; TLS when
/// the cluster speaks it.
pub fn client_options(request_timeout: Duration, tls: Option<&ClientTls>) -> ClientOptions {
    ClientOptions {
        request_timeout,
        tls: tls.cloned(),
        connect_timeout: request_timeout.min(Duration::from_millis(500)),
        backoff_min_ms: 5,
        backoff_max_ms: 100,
        ..ClientOptions::default()
    }
}

/// Starts the client threads; each returns its operations once `stop` is set.
///
/// # Errors
/// A thread could not be spawned or a client could not be built.
pub fn spawn(
    addrs: &[String],
    options: &WorkloadOptions,
    stop: &Arc<AtomicBool>,
    clock: Instant,
) -> std::io::Result<Vec<JoinHandle<Vec<Operation>>>> {
    let keys = key_names(options.keys);
    let mut handles = Vec::with_capacity(options.clients);
    for c in 0..options.clients {
        let client_number = c as u64 + 1;
        let client = Client::connect(
            addrs,
            client_options(options.request_timeout, options.tls.as_ref()),
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut stale = Vec::new();
        if options.stale_reads {
            for addr in addrs {
                let client = Client::connect(
                    std::slice::from_ref(addr),
                    client_options(options.request_timeout, options.tls.as_ref()),
                )
                .map_err(|e| std::io::Error::other(e.to_string()))?;
                stale.push(client);
            }
        }
        let mut worker = Worker {
            client,
            stale,
            number: client_number,
            rng: Rng::new(options.seed ^ client_number.wrapping_mul(0x9e37_79b9)),
            keys: keys.clone(),
            seen: HashMap::new(),
            writes: 0,
            clock,
        };
        let stop = Arc::clone(stop);
        let handle = thread::Builder::new()
            .name(format!("client-{client_number}"))
            .spawn(move || {
                let mut history = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    history.push(worker.one_operation());
                }
                history
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

struct Worker {
    client: Client,
    /// One client per node for stale reads (empty: linearizable reads).
    stale: Vec<Client>,
    number: u64,
    rng: Rng,
    keys: Vec<Vec<u8>>,
    /// The last value this client saw per key: the `expected` of its next cas.
    seen: HashMap<Vec<u8>, Option<Vec<u8>>>,
    writes: u64,
    clock: Instant,
}

impl Worker {
    fn one_operation(&mut self) -> Operation {
        let key = self.keys[self.rng.range(0, self.keys.len() as u64) as usize].clone();
        let dice = self.rng.range(0, 100);
        let invoke = micros_since(self.clock);
        let (call, outcome) = match dice {
            0..40 => (KvCall::Get, self.get(&key)),
            40..65 => {
                let value = self.next_value();
                let outcome = self.put(&key, &value);
                (KvCall::Put(value), outcome)
            }
            65..70 => (KvCall::Delete, self.delete(&key)),
            _ => {
                let expected = self.seen.get(&key).cloned().flatten();
                let new = self.next_value();
                let outcome = self.cas(&key, expected.as_deref(), &new);
                (KvCall::Cas { expected, new }, outcome)
            }
        };
        Operation {
            client: self.number,
            key,
            call,
            outcome,
            invoke,
            complete: micros_since(self.clock),
        }
    }

    fn next_value(&mut self) -> Vec<u8> {
        self.writes += 1;
        format!("c{}-{}", self.number, self.writes).into_bytes()
    }

    fn get(&mut self, key: &[u8]) -> Outcome {
        let result = if self.stale.is_empty() {
            self.client.get(key)
        } else {
            let node = self.rng.range(0, self.stale.len() as u64) as usize;
            self.stale[node].get_stale(key)
        };
        match result {
            Ok(value) => {
                self.seen.insert(key.to_vec(), value.clone());
                Outcome::Read(value)
            }
            Err(_) => Outcome::Unknown,
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Outcome {
        match self.client.put(key, value) {
            Ok(()) => {
                self.seen.insert(key.to_vec(), Some(value.to_vec()));
                Outcome::Ok
            }
            Err(_) => Outcome::Unknown,
        }
    }

    /// A delete of an absent key is still a write of "absent": `Ok` either way.
    fn delete(&mut self, key: &[u8]) -> Outcome {
        match self.client.delete(key) {
            Ok(_) => {
                self.seen.insert(key.to_vec(), None);
                Outcome::Ok
            }
            Err(_) => Outcome::Unknown,
        }
    }

    fn cas(&mut self, key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> Outcome {
        match self.client.cas(key, expected, new) {
            Ok(CasOutcome::Swapped) => {
                self.seen.insert(key.to_vec(), Some(new.to_vec()));
                Outcome::Ok
            }
            Ok(CasOutcome::Failed { current }) => {
                self.seen.insert(key.to_vec(), current);
                Outcome::CasFailed
            }
            Err(_) => Outcome::Unknown,
        }
    }
}
