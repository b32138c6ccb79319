//! One blocking, framed connection to one node, with many requests in flight.
//!
//! [`Pipeline::submit`] encodes a request into the output buffer and returns its request
//! id; [`Pipeline::flush`] writes every buffered request in one `write_all`;
//! [`Pipeline::recv`] returns a response already received, or flushes and reads until one
//! complete response arrives, both bounded by its deadline (a node that stops reading
//! cannot block a large request's write past it). A caller that answers each response by submitting a new
//! request so sends one `write` per batch of responses received, not one per request.
//! Replies may come back in any order (a stale read is answered before an earlier write
//! commits), so callers match them by [`Response::request_id`].
//!
//! A client pointed at a Redis port by mistake gets a clear error at once instead of a
//! timeout: request ids start at [`FIRST_REQUEST_ID`], whose little-endian bytes begin
//! with CR LF, so the first request holds a complete line for a RESP server, which
//! answers it (`-ERR unknown command`). That answer, read where a frame length is
//! expected, is recognised ([`looks_like_resp`]) and reported as a Redis port.
//!
//! Invariant: `input[input_start..]` holds the bytes received and not yet decoded; the
//! buffer never holds more than one frame beyond what the caller has asked for, because
//! frames are decoded as soon as they are complete.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::codec::client::{ClientCodec, Request, RequestBody, Response};
use crate::tls::ClientTls;

use super::error::Error;
use super::stream::ClientStream;

/// Bytes read from the socket per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The id of a connection's first request: `0x0A0D` is CR LF in little-endian, so the
/// request bytes end a line for a RESP (Redis) server, which then replies (see the
/// module docs). Any id is valid in the client protocol; ids only need to be distinct
/// per connection.
pub const FIRST_REQUEST_ID: u64 = 0x0A0D;

/// A connection to one node carrying pipelined requests.
#[derive(Debug)]
pub struct Pipeline {
    addr: String,
    stream: ClientStream,
    codec: ClientCodec,
    /// Received bytes; the undecoded part starts at `input_start`.
    input: Vec<u8>,
    input_start: usize,
    /// Encoded requests not yet written.
    output: Vec<u8>,
    next_request_id: u64,
    /// Invariant: requests submitted minus responses received.
    in_flight: usize,
    /// The socket's read timeout as last set (`None`: never set). A read may wake
    /// before the caller's deadline and loop, never after it.
    read_timeout: Option<Duration>,
    /// The socket's write timeout as last set, on the same terms as `read_timeout`.
    write_timeout: Option<Duration>,
}

impl Pipeline {
    /// Connects to `addr` (`host:port`), trying each resolved address for at most
    /// `timeout`. Frames larger than `frame_bytes_max` are refused in both directions.
    ///
    /// # Errors
    /// [`Error::Io`] if no resolved address accepts the connection.
    pub fn connect(addr: &str, timeout: Duration, frame_bytes_max: u32) -> Result<Pipeline, Error> {
        Pipeline::connect_tls(addr, timeout, frame_bytes_max, None)
    }

    /// Like [`Pipeline::connect`], speaking TLS when `tls` is given (the node's
    /// certificate must chain to its CA and name the host or IP address of `addr`).
    ///
    /// # Errors
    /// [`Error::Io`] if no resolved address accepts the connection or `addr` is not a
    /// name a certificate can carry; a refused certificate shows at the first exchange.
    pub fn connect_tls(
        addr: &str,
        timeout: Duration,
        frame_bytes_max: u32,
        tls: Option<&ClientTls>,
    ) -> Result<Pipeline, Error> {
        let io_error = |source| Error::Io {
            addr: addr.to_string(),
            source,
        };
        let mut last = io::Error::new(ErrorKind::NotFound, "address resolves to nothing");
        for socket_addr in addr.to_socket_addrs().map_err(io_error)? {
            match TcpStream::connect_timeout(&socket_addr, timeout.max(Duration::from_millis(1))) {
                Ok(stream) => {
                    // Requests are small and latency-bound: never wait for Nagle.
                    stream.set_nodelay(true).map_err(io_error)?;
                    let stream = ClientStream::new(stream, addr, tls).map_err(io_error)?;
                    return Ok(Pipeline {
                        addr: addr.to_string(),
                        stream,
                        codec: ClientCodec::new(frame_bytes_max),
                        input: Vec::new(),
                        input_start: 0,
                        output: Vec::new(),
                        next_request_id: FIRST_REQUEST_ID,
                        in_flight: 0,
                        read_timeout: None,
                        write_timeout: None,
                    });
                }
                Err(error) => last = error,
            }
        }
        Err(io_error(last))
    }

    /// The address this pipeline is connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Requests submitted whose response has not been received.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Buffers `body` as a new request and returns its request id (unique on this
    /// connection). Nothing is sent before [`Pipeline::flush`] or [`Pipeline::recv`].
    ///
    /// # Errors
    /// [`Error::Invalid`] if the request does not fit in one frame.
    pub fn submit(&mut self, body: RequestBody) -> Result<u64, Error> {
        let request_id = self.next_request_id;
        let request = Request { request_id, body };
        self.codec
            .encode_request(&request, &mut self.output)
            .map_err(|error| Error::Invalid(error.to_string()))?;
        self.next_request_id += 1;
        self.in_flight += 1;
        Ok(request_id)
    }

    /// Writes every buffered request.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket fails; the pipeline should then be dropped.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = self
            .stream
            .write_all(&self.output)
            .and_then(|()| self.stream.flush());
        self.output.clear();
        result.map_err(|source| self.io_error(source))
    }

    /// Returns the next response already received, or flushes and blocks until one
    /// arrives or `deadline` passes.
    ///
    /// # Errors
    /// [`Error::Timeout`] at the deadline: the pipeline stays usable (a partial frame is
    /// kept), so a caller may wait with a short deadline and call again.
    /// [`Error::Io`] if the connection fails or closes, [`Error::Protocol`] if the node
    /// sends a frame that does not decode ([`Error::RedisPort`] if it answers in the
    /// Redis protocol): the pipeline should then be dropped.
    pub fn recv(&mut self, deadline: Instant) -> Result<Response, Error> {
        loop {
            let undecoded = &self.input[self.input_start..];
            let decoded = self.codec.decode_response(undecoded).map_err(|error| {
                if looks_like_resp(undecoded) {
                    Error::RedisPort {
                        addr: self.addr.clone(),
                    }
                } else {
                    Error::Protocol {
                        addr: self.addr.clone(),
                        reason: error.to_string(),
                    }
                }
            })?;
            if let Some((consumed, response)) = decoded {
                self.input_start += consumed;
                self.in_flight = self.in_flight.saturating_sub(1);
                return Ok(response);
            }
            self.flush_by(deadline)?;
            self.read_more(deadline)?;
        }
    }

    /// Writes every buffered request, giving up at `deadline`.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket fails or the deadline passes first (part of a frame
    /// may be sent): the pipeline should then be dropped.
    fn flush_by(&mut self, deadline: Instant) -> Result<(), Error> {
        let mut written = 0;
        let mut tried = false;
        let result = loop {
            if written == self.output.len() {
                break Ok(());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            // One attempt even at the deadline: a socket with room takes the request at
            // once, and the read that follows reports the timeout as before.
            if tried && remaining.is_zero() {
                let message = "the node did not take the request before the deadline";
                break Err(io::Error::new(ErrorKind::TimedOut, message));
            }
            tried = true;
            let remaining = remaining.max(Duration::from_millis(1));
            if self.write_timeout.is_none_or(|set| set > remaining) {
                let timeout = shortened(remaining);
                if let Err(error) = self.stream.tcp().set_write_timeout(Some(timeout)) {
                    break Err(error);
                }
                self.write_timeout = Some(timeout);
            }
            match self.stream.write(&self.output[written..]) {
                Ok(0) => break Err(io::Error::from(ErrorKind::WriteZero)),
                Ok(count) => written += count,
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) => {}
                Err(error) => break Err(error),
            }
        };
        self.output.clear();
        let result = result.and_then(|()| self.flush_stream_by(deadline));
        result.map_err(|source| self.io_error(source))
    }

    /// Writes the TLS records a TLS stream still holds (nothing to do on plain TCP),
    /// retrying a full socket until `deadline`.
    fn flush_stream_by(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            match self.stream.flush() {
                Ok(()) => return Ok(()),
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        let message = "the node did not take the request before the deadline";
                        return Err(io::Error::new(ErrorKind::TimedOut, message));
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Reads at least one byte, or fails at the deadline or on end of stream.
    fn read_more(&mut self, deadline: Instant) -> Result<(), Error> {
        // Compact first, so the buffer only holds the partial frame being received.
        if self.input_start > 0 {
            self.input.drain(..self.input_start);
            self.input_start = 0;
        }
        let filled = self.input.len();
        self.input.resize(filled + READ_CHUNK_BYTES, 0);
        let result = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break Err(Error::Timeout);
            }
            if let Err(source) = self.shorten_read_timeout(remaining) {
                break Err(self.io_error(source));
            }
            match self.stream.read(&mut self.input[filled..]) {
                Ok(0) => {
                    let closed = io::Error::new(ErrorKind::UnexpectedEof, "connection closed");
                    break Err(self.io_error(closed));
                }
                Ok(count) => break Ok(count),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                // A read timeout: loop to check the deadline (spurious wake-ups included).
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(source) => break Err(self.io_error(source)),
            }
        };
        let count = result.as_ref().map_or(0, |count| *count);
        self.input.truncate(filled + count);
        result.map(|_| ())
    }

    /// Makes sure a read wakes up within `remaining` (non-zero), with one `setsockopt`
    /// only when the timeout set is longer: it is then set to half of `remaining` (all
    /// of it under 2 ms), so a deadline that recedes across calls costs a logarithmic
    /// number of calls, not one per read.
    fn shorten_read_timeout(&mut self, remaining: Duration) -> io::Result<()> {
        if self.read_timeout.is_some_and(|set| set <= remaining) {
            return Ok(());
        }
        let timeout = shortened(remaining);
        self.stream.tcp().set_read_timeout(Some(timeout))?;
        self.read_timeout = Some(timeout);
        Ok(())
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}

/// The socket timeout for a wait of `remaining` (non-zero): half of it (all of it under
/// 2 ms), so that a deadline receding across calls costs few `setsockopt` calls.
fn shortened(remaining: Duration) -> Duration {
    if remaining > Duration::from_millis(2) {
        remaining / 2
    } else {
        remaining
    }
}

/// Whether `input`, which did not decode as a frame, starts like a RESP reply: a type
/// byte (`+`, `-`, `:`, `$`, `*`) followed by a printable character (`-ERR`, `+OK`,
/// `:1`, `$-1`, `*0`). Read as a frame length, such bytes announce hundreds of
/// megabytes, so a raftkv node never sends them.
fn looks_like_resp(input: &[u8]) -> bool {
    match input {
        [kind, next, ..] => b"+-:$*".contains(kind) && next.is_ascii_graphic(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! Goal: a RESP reply is told apart from a frame that is merely too large or
    //! malformed. Method: a table of replies a Redis server sends and of other bytes.
    use super::*;

    #[test]
    fn resp_replies_are_recognised() {
        let resp: [&[u8]; 5] = [
            b"-ERR unknown command '\x00', with args beginning with: \r\n",
            b"+OK\r\n",
            b":1\r\n",
            b"$-1\r\n",
            b"*0\r\n",
        ];
        for (i, bytes) in resp.into_iter().enumerate() {
            assert!(looks_like_resp(bytes), "#{i}");
        }
        let other: [&[u8]; 5] = [b"", b"-", b"\xff\xff\xff\xff\r\n", b"+\x00\r\n", b"x1\r\n"];
        for (i, bytes) in other.into_iter().enumerate() {
            assert!(!looks_like_resp(bytes), "#{i}");
        }
        assert_eq!(&FIRST_REQUEST_ID.to_le_bytes()[..2], b"\r\n");
    }
}
