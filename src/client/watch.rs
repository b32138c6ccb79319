//! A native watch stream ([`crate::codec::client::RequestBody::Watch`]): one connection to
//! one node, which sends the changes it applies to a key or prefix until the connection
//! closes. Any node serves it from what it applies, so no leader is needed.
//!
//! Invariant: the stream's events come in log order (increasing revisions); the caller
//! sees `Started` first, then every event of its key or prefix from the next entry on.

use std::time::{Duration, Instant};

use super::cluster::ClientOptions;
use super::error::Error;
use super::pipeline::Pipeline;
use crate::codec::client::{RequestBody, ResponseBody, WatchEvent};

/// How long one wait for the next event lasts before waiting again (a quiet key is not
/// an error).
const WAIT_SLICE: Duration = Duration::from_secs(3600);

/// Watches `key` (or the keys starting with it, with `prefix`) on the first node of
/// `addrs` that accepts the connection, calling `on_event` for each event (the first is
/// `Started`) until it returns false.
///
/// # Errors
/// No node could be reached, the node refused the watch, or the connection failed or
/// closed (the stream ends; a new watch starts from the next change).
pub fn watch(
    addrs: &[String],
    key: &[u8],
    prefix: bool,
    options: &ClientOptions,
    mut on_event: impl FnMut(&WatchEvent) -> bool,
) -> Result<(), Error> {
    let mut last_error = Error::Unavailable("no member address given".into());
    for addr in addrs {
        let mut pipeline =
            match Pipeline::connect(addr, options.connect_timeout, options.frame_bytes_max) {
                Ok(pipeline) => pipeline,
                Err(error) => {
                    last_error = error;
                    continue;
                }
            };
        pipeline.submit(RequestBody::Watch {
            key: key.to_vec(),
            prefix,
        })?;
        loop {
            let response = match pipeline.recv(Instant::now() + WAIT_SLICE) {
                Err(Error::Timeout) => continue,
                other => other?,
            };
            match response.body {
                ResponseBody::Watch(event) => {
                    if !on_event(&event) {
                        return Ok(());
                    }
                }
                ResponseBody::Error(message) => return Err(Error::Refused(message)),
                ResponseBody::Unavailable(reason) => return Err(Error::Unavailable(reason)),
                other => {
                    return Err(Error::Protocol {
                        addr: addr.clone(),
                        reason: format!("unexpected answer to a watch: {other:?}"),
                    });
                }
            }
        }
    }
    Err(last_error)
}
