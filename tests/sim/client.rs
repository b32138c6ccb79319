//! A simulated client: one operation at a time (Put, Get or Cas on a few shared keys),
//! sent as the real client protocol's `Request` to the node it believes leads, retried
//! on `NotLeader`, on `Unavailable` and on timeout, with a session so that a retried
//! write applies once (Raft thesis section 6.3). Reads are linearizable `Get`s
//! (`stale: false`, served by the replica's batched ReadIndex) or Gets ordered through
//! the log.
//!
//! Each operation ends in the history with its invoke and complete times and an
//! outcome: a definite answer; `Failed` when every attempt was refused before being
//! proposed; `Unknown` when some attempt may have been applied but no answer came.

use std::collections::BTreeMap;

use raftkv::check::{KvCall, Operation, Outcome};
use raftkv::codec::client::{Request, RequestBody, ResponseBody};
use raftkv::kv::{Command, CommandResult, Session};
use raftkv::raft::NodeId;
use raftkv::raft::rng::Rng;
use raftkv::replica::ClientRef;

/// Who waits for an answer: a client's operation and the attempt that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// The client.
    pub client: usize,
    /// The client's operation.
    pub op_id: u64,
    /// The attempt of that operation.
    pub attempt: u32,
}

/// Bits of a request id that carry the attempt.
const ATTEMPT_BITS: u32 = 20;

impl ReplyTo {
    /// The connection the replica sees: one per client.
    pub fn client_ref(&self) -> ClientRef {
        ClientRef {
            key: self.client,
            generation: 0,
        }
    }

    /// The request id carrying the operation and the attempt.
    pub fn request_id(&self) -> u64 {
        (self.op_id << ATTEMPT_BITS) | u64::from(self.attempt)
    }

    /// Who a reply to `client` for `request_id` is for.
    pub fn of_reply(client: ClientRef, request_id: u64) -> ReplyTo {
        ReplyTo {
            client: client.key,
            op_id: request_id >> ATTEMPT_BITS,
            attempt: (request_id & ((1 << ATTEMPT_BITS) - 1)) as u32,
        }
    }
}

/// The keys clients share: few, so that operations contend.
const KEYS: [&[u8]; 3] = [b"a", b"b", b"c"];

#[derive(Debug, Clone)]
enum Kind {
    Register,
    Write {
        key: Vec<u8>,
        call: KvCall,
        seq: u64,
    },
    Read {
        key: Vec<u8>,
        through_log: bool,
    },
}

#[derive(Debug, Clone)]
struct InFlight {
    op_id: u64,
    attempt: u32,
    kind: Kind,
    invoke: u64,
    /// Some attempt may have been proposed (it was not refused outright).
    uncertain: bool,
}

/// What a client wants sent.
#[derive(Debug)]
pub struct Send {
    /// The node to send to.
    pub to: NodeId,
    /// Who the answer goes to.
    pub from: ReplyTo,
    /// The request.
    pub request: Request,
}

/// One client.
#[derive(Debug)]
pub struct Client {
    index: usize,
    session: Option<u64>,
    seq: u64,
    target: NodeId,
    op_id_next: u64,
    current: Option<InFlight>,
    /// Values this client saw, per key, to make cas operations that may succeed.
    seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Client {
    /// Client number `index`, first talking to node `target`.
    pub fn new(index: usize, target: NodeId) -> Client {
        Client {
            index,
            session: None,
            seq: 0,
            target,
            op_id_next: 0,
            current: None,
            seen: BTreeMap::new(),
        }
    }

    /// Whether an operation is in flight.
    pub fn busy(&self) -> bool {
        self.current.is_some()
    }

    /// Starts a new operation (registering a session first if needed).
    pub fn start(&mut self, rng: &mut Rng, now: u64) -> Send {
        let kind = match self.session {
            None => Kind::Register,
            Some(_) => self.random_kind(rng),
        };
        self.op_id_next += 1;
        self.current = Some(InFlight {
            op_id: self.op_id_next,
            attempt: 0,
            kind,
            invoke: now,
            uncertain: false,
        });
        self.send()
    }

    fn random_kind(&mut self, rng: &mut Rng) -> Kind {
        let key = KEYS[rng.range(0, KEYS.len() as u64) as usize].to_vec();
        let roll = rng.range(0, 100);
        if roll < 35 {
            return Kind::Read {
                key,
                through_log: roll < 8,
            };
        }
        self.seq += 1;
        let value = format!("c{}s{}", self.index, self.seq).into_bytes();
        let call = if roll < 70 {
            KvCall::Put(value)
        } else {
            let expected = match rng.range(0, 3) {
                0 => None,
                _ => self.seen.get(&key).cloned().flatten(),
            };
            KvCall::Cas {
                expected,
                new: value,
            }
        };
        Kind::Write {
            key,
            call,
            seq: self.seq,
        }
    }

    /// The request for the current attempt of the current operation.
    fn send(&self) -> Send {
        let current = self.current.as_ref().expect("an operation in flight");
        let from = ReplyTo {
            client: self.index,
            op_id: current.op_id,
            attempt: current.attempt,
        };
        let body = match &current.kind {
            Kind::Register => RequestBody::Command(Command::RegisterSession),
            Kind::Read {
                key,
                through_log: false,
            } => RequestBody::Get {
                key: key.clone(),
                stale: false,
            },
            Kind::Read {
                key,
                through_log: true,
            } => RequestBody::Command(Command::Get { key: key.clone() }),
            Kind::Write { key, call, seq } => {
                let session = Session {
                    client_id: self.session.expect("a registered session"),
                    seq: *seq,
                };
                let key = key.clone();
                let command = match call.clone() {
                    KvCall::Put(value) => Command::Put {
                        session,
                        key,
                        value,
                    },
                    KvCall::Cas { expected, new } => Command::Cas {
                        session,
                        key,
                        expected,
                        new,
                    },
                    KvCall::Get | KvCall::Delete => unreachable!("clients send no such write"),
                };
                RequestBody::Command(command)
            }
        };
        Send {
            to: self.target,
            from,
            request: Request {
                request_id: from.request_id(),
                body,
            },
        }
    }

    /// The (op_id, attempt) a timeout for the current attempt carries.
    pub fn attempt(&self) -> Option<(u64, u32)> {
        self.current.as_ref().map(|c| (c.op_id, c.attempt))
    }

    /// The current attempt timed out: it may have been proposed; try another node.
    pub fn on_timeout(&mut self, rng: &mut Rng, nodes: u64) -> Send {
        let current = self.current.as_mut().expect("an operation in flight");
        current.uncertain = true;
        current.attempt += 1;
        self.target = rng.range(1, nodes + 1);
        self.send()
    }

    /// Handles an answer. Returns a retry to send, and the finished operation, if any.
    pub fn on_reply(
        &mut self,
        rng: &mut Rng,
        nodes: u64,
        from: ReplyTo,
        body: ResponseBody,
        now: u64,
    ) -> Result<(Option<Send>, Option<Operation>), String> {
        let Some(current) = self.current.as_mut() else {
            return Ok((None, None));
        };
        if current.op_id != from.op_id {
            return Ok((None, None));
        }
        let outcome = match body {
            ResponseBody::NotLeader { leader_id, .. } => {
                if from.attempt != current.attempt {
                    return Ok((None, None));
                }
                current.attempt += 1;
                self.target = leader_id;
                return Ok((Some(self.send()), None));
            }
            ResponseBody::Unavailable(_) => {
                // No leader known, leadership lost, a deadline passed: the attempt
                // may still be applied; try again, anywhere.
                if from.attempt != current.attempt {
                    return Ok((None, None));
                }
                current.uncertain = true;
                current.attempt += 1;
                self.target = rng.range(1, nodes + 1);
                return Ok((Some(self.send()), None));
            }
            ResponseBody::Result(result) => match self.outcome_of(result)? {
                Some(outcome) => outcome,
                None => return Ok((None, None)),
            },
            other => {
                return Err(format!("client {}: reply {other:?}", self.index));
            }
        };
        Ok((None, self.finish(outcome, now)))
    }

    /// Maps an applied result to an outcome; `None` for a registration (no history).
    fn outcome_of(&mut self, result: CommandResult) -> Result<Option<Outcome>, String> {
        let current = self.current.as_ref().expect("an operation in flight");
        Ok(Some(match (result, &current.kind) {
            (CommandResult::Registered { client_id }, Kind::Register) => {
                self.session = Some(client_id);
                self.current = None;
                return Ok(None);
            }
            (CommandResult::Value(value), Kind::Read { .. }) => Outcome::Read(value),
            (CommandResult::Ok, Kind::Write { .. }) => Outcome::Ok,
            (CommandResult::CasFailed { .. }, Kind::Write { .. }) => Outcome::CasFailed,
            (CommandResult::SessionExpired | CommandResult::StaleSequence, Kind::Write { .. }) => {
                self.session = None;
                if current.uncertain {
                    Outcome::Unknown
                } else {
                    Outcome::Failed
                }
            }
            (result, kind) => {
                return Err(format!(
                    "client {}: result {result:?} for {kind:?}",
                    self.index
                ));
            }
        }))
    }

    fn finish(&mut self, outcome: Outcome, now: u64) -> Option<Operation> {
        let current = self.current.take()?;
        let (key, call) = match current.kind {
            Kind::Register => return None,
            Kind::Read { key, .. } => (key, KvCall::Get),
            Kind::Write { key, call, .. } => (key, call),
        };
        match (&outcome, &call) {
            (Outcome::Read(value), _) => {
                self.seen.insert(key.clone(), value.clone());
            }
            (Outcome::Ok, KvCall::Put(value) | KvCall::Cas { new: value, .. }) => {
                self.seen.insert(key.clone(), Some(value.clone()));
            }
            _ => {}
        }
        Some(Operation {
            client: self.index as u64,
            key,
            call,
            outcome,
            invoke: current.invoke,
            complete: now,
        })
    }
}
