//! The buffers of one socket: bytes in, frames out; frames in, bytes out.
//!
//! Generic over `Read + Write` so tests drive it with mock streams and the event loop with
//! a [`super::transport::Transport`] (a TCP socket, with or without TLS). Reads drain until `WouldBlock` (edge-triggered readiness) but at
//! most a caller-given number of bytes per call, so one busy socket cannot starve the loop;
//! `Interrupted` is retried. Decoded frames are consumed by advancing a read cursor; the
//! consumed prefix is dropped only when it is at least half of the buffer, so consuming is
//! amortized O(1) per byte. Output is queued (or framed straight into the buffer) and
//! written by [`Connection::flush`]; queuing past `output_bytes_max` unwritten bytes is
//! refused, and the loop then disconnects the slow reader instead of growing memory.
//! Replies are encoded straight into the output buffer ([`Connection::queue_frame`],
//! [`Connection::queue_with`]), so the limit is checked on the bytes as they are
//! produced, with no second copy. The soft limit (stop reading a connection that owes
//! too much) is the event loop's decision, made from [`Connection::pending_output_bytes`].
//!
//! The input buffer is zero-initialized once as it grows and then reused: received bytes
//! occupy `input[..input_filled]` and reads land in the initialized tail after it, so no
//! read pays a memset of its chunk.
//!
//! Invariants: `read_pos <= input_filled <= input.len()`, `write_pos <= output.len()`, and
//! the unwritten output `output.len() - write_pos` never exceeds `output_bytes_max`.

use std::io::{self, ErrorKind, Read, Write};

use crate::codec::frame::{FrameCodec, FrameTooLarge};
use crate::wire::DecodeError;

/// Bytes requested from the socket per `read` call.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// An empty buffer with more capacity than this is shrunk, so one burst (a snapshot
/// chunk, a large batch) does not pin its memory for the connection's lifetime.
const IDLE_CAPACITY_MAX: usize = 256 * 1024;

/// Consecutive `Interrupted` results tolerated in one call before giving up for this turn.
const INTERRUPTED_RETRIES_MAX: u32 = 64;

/// What one [`Connection::read_available`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Bytes appended to the input buffer.
    pub bytes: usize,
    /// The peer closed its side (read returned 0). Buffered input is still decodable.
    pub closed: bool,
    /// The socket reported `WouldBlock`: nothing more until the next readable event.
    /// When `false` and not `closed`, the byte limit stopped the read and the loop must
    /// read again on a later turn (an edge-triggered poll will not report it again).
    pub drained: bool,
}

/// What one [`Connection::flush`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// Every queued byte was written.
    Done,
    /// The socket would block with bytes still queued: register WRITABLE interest.
    Partial,
}

/// Queuing this output would exceed `output_bytes_max` unwritten bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("output buffer limit exceeded: {pending} bytes pending + {queued} queued > {max}")]
pub struct OutputLimitExceeded {
    /// Unwritten bytes before the refused queue call.
    pub pending: usize,
    /// Bytes the refused call tried to add.
    pub queued: usize,
    /// The configured limit.
    pub max: usize,
}

/// Why [`Connection::queue_frame`] queued nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueFrameError {
    /// The body exceeds the frame limit: the peer would refuse it. The connection is
    /// fine; the caller drops or replaces the message.
    #[error(transparent)]
    TooLarge(#[from] FrameTooLarge),
    /// The output buffer is full: the peer is not reading; disconnect it.
    #[error(transparent)]
    Output(#[from] OutputLimitExceeded),
}

/// One socket with its input and output buffers.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    /// Initialized storage; only `input[..input_filled]` holds received bytes.
    input: Vec<u8>,
    /// Received bytes in `input`; the rest is reusable initialized space.
    input_filled: usize,
    /// Invariant: bytes before `read_pos` have been consumed.
    read_pos: usize,
    output: Vec<u8>,
    /// Invariant: bytes before `write_pos` have been written to the socket.
    write_pos: usize,
    output_bytes_max: usize,
}

impl<S: Read + Write> Connection<S> {
    /// Wraps `stream`; at most `output_bytes_max` unwritten bytes may be queued.
    pub fn new(stream: S, output_bytes_max: usize) -> Connection<S> {
        Connection {
            stream,
            input: Vec::new(),
            input_filled: 0,
            read_pos: 0,
            output: Vec::new(),
            write_pos: 0,
            output_bytes_max,
        }
    }

    /// The underlying stream (for poll registration).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably (for poll registration).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Reads until the socket would block, the peer closes, or about `limit` bytes were
    /// read in this call (at least one chunk is attempted).
    ///
    /// # Errors
    /// Any IO error other than `WouldBlock` and `Interrupted`; the connection is then dead.
    pub fn read_available(&mut self, limit: usize) -> io::Result<ReadOutcome> {
        self.compact_input();
        let mut outcome = ReadOutcome {
            bytes: 0,
            closed: false,
            drained: false,
        };
        let mut interrupted = 0;
        loop {
            if outcome.bytes >= limit && outcome.bytes > 0 {
                return Ok(outcome);
            }
            let start = self.input_filled;
            let end = start + READ_CHUNK_BYTES;
            if self.input.len() < end {
                self.input.resize(end, 0);
            }
            let result = self.stream.read(&mut self.input[start..end]);
            self.input_filled += *result.as_ref().unwrap_or(&0);
            match result {
                Ok(0) => {
                    outcome.closed = true;
                    return Ok(outcome);
                }
                Ok(n) => outcome.bytes += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    outcome.drained = true;
                    return Ok(outcome);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    interrupted += 1;
                    if interrupted >= INTERRUPTED_RETRIES_MAX {
                        return Ok(outcome);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The received bytes not yet consumed.
    pub fn input(&self) -> &[u8] {
        &self.input[self.read_pos..self.input_filled]
    }

    /// Marks the first `count` bytes of [`Connection::input`] as consumed.
    ///
    /// # Panics
    /// If `count` exceeds the unconsumed input (a programming error).
    pub fn consume(&mut self, count: usize) {
        assert!(
            count <= self.input_filled - self.read_pos,
            "consumed past the input"
        );
        self.read_pos += count;
    }

    /// Decodes and consumes the next complete frame; `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`DecodeError`] when the frame is invalid (e.g. too large): close the connection.
    pub fn next_frame(&mut self, codec: &FrameCodec) -> Result<Option<&[u8]>, DecodeError> {
        let start = self.read_pos;
        let Some((consumed, body)) = codec.decode(&self.input[start..self.input_filled])? else {
            return Ok(None);
        };
        let body_len = body.len();
        self.read_pos += consumed;
        let end = start + consumed;
        Ok(Some(&self.input[end - body_len..end]))
    }

    /// Queues raw bytes for sending.
    ///
    /// # Errors
    /// [`OutputLimitExceeded`] (nothing is queued): disconnect this peer.
    pub fn queue(&mut self, bytes: &[u8]) -> Result<(), OutputLimitExceeded> {
        self.check_room(bytes.len())?;
        self.output.extend_from_slice(bytes);
        Ok(())
    }

    /// Encodes one frame straight into the output buffer, the body written by `write_body`.
    ///
    /// # Errors
    /// Nothing is queued on either error: [`QueueFrameError::TooLarge`] when the body
    /// exceeds the codec's frame limit (the connection stays usable),
    /// [`QueueFrameError::Output`] when the output limit is reached (disconnect it).
    pub fn queue_frame(
        &mut self,
        codec: &FrameCodec,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), QueueFrameError> {
        let start = self.output.len();
        codec.encode_with(&mut self.output, write_body)?;
        let added = self.output.len() - start;
        let room = self.check_room_after(added);
        if room.is_err() {
            self.output.truncate(start);
        }
        Ok(room?)
    }

    /// Encodes bytes straight into the output buffer with `write`.
    ///
    /// # Errors
    /// [`OutputLimitExceeded`] (what `write` added is taken back out): disconnect.
    pub fn queue_with(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), OutputLimitExceeded> {
        let start = self.output.len();
        write(&mut self.output);
        let added = self.output.len() - start;
        let room = self.check_room_after(added);
        if room.is_err() {
            self.output.truncate(start);
        }
        room
    }

    /// Unwritten output bytes.
    pub fn pending_output_bytes(&self) -> usize {
        self.output.len() - self.write_pos
    }

    /// Writes queued output until done or the socket would block, then flushes the
    /// stream (a TLS transport writes the records it still holds).
    ///
    /// # Errors
    /// Any IO error other than `WouldBlock` and `Interrupted`, and `WriteZero` when the
    /// socket accepts no bytes; the connection is then dead.
    pub fn flush(&mut self) -> io::Result<FlushOutcome> {
        let mut interrupted = 0;
        while self.write_pos < self.output.len() {
            match self.stream.write(&self.output[self.write_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.write_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.compact_output();
                    return Ok(FlushOutcome::Partial);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    interrupted += 1;
                    if interrupted >= INTERRUPTED_RETRIES_MAX {
                        self.compact_output();
                        return Ok(FlushOutcome::Partial);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.output.shrink_to(IDLE_CAPACITY_MAX);
        self.write_pos = 0;
        // A TLS transport may still hold records of what it took.
        match self.stream.flush() {
            Ok(()) => Ok(FlushOutcome::Done),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                Ok(FlushOutcome::Partial)
            }
            Err(e) => Err(e),
        }
    }

    fn check_room(&self, adding: usize) -> Result<(), OutputLimitExceeded> {
        self.limit_error(self.pending_output_bytes(), adding)
    }

    /// Like `check_room` for `added` bytes already appended to `output`.
    fn check_room_after(&self, added: usize) -> Result<(), OutputLimitExceeded> {
        self.limit_error(self.pending_output_bytes() - added, added)
    }

    fn limit_error(&self, pending: usize, adding: usize) -> Result<(), OutputLimitExceeded> {
        if pending.saturating_add(adding) > self.output_bytes_max {
            return Err(OutputLimitExceeded {
                pending,
                queued: adding,
                max: self.output_bytes_max,
            });
        }
        Ok(())
    }

    /// Drops the consumed input prefix once it is at least half the received bytes
    /// (amortized O(1)), keeping the initialized storage for the next reads.
    fn compact_input(&mut self) {
        if self.read_pos == self.input_filled {
            self.input.truncate(IDLE_CAPACITY_MAX);
            self.input.shrink_to(IDLE_CAPACITY_MAX);
            self.input_filled = 0;
            self.read_pos = 0;
        } else if self.read_pos >= self.input_filled / 2 {
            self.input.copy_within(self.read_pos..self.input_filled, 0);
            self.input_filled -= self.read_pos;
            self.read_pos = 0;
        }
    }

    /// Drops the written output prefix once it is at least half the buffer.
    fn compact_output(&mut self) {
        if self.write_pos >= self.output.len() / 2 {
            self.output.drain(..self.write_pos);
            self.write_pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the buffers survive every socket behaviour the loop can meet: short reads,
    //! `WouldBlock`, `Interrupted`, partial writes, EOF, errors. Method: a scripted stream.
    use super::*;
    use std::collections::VecDeque;

    /// One scripted result per read or write call; an empty script means `WouldBlock`.
    #[derive(Debug, Default)]
    struct MockStream {
        reads: VecDeque<io::Result<Vec<u8>>>,
        /// Each entry: how many bytes the next write accepts, or an error.
        writes: VecDeque<io::Result<usize>>,
        written: Vec<u8>,
        read_calls: usize,
    }

    impl Read for MockStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.read_calls += 1;
            match self.reads.pop_front() {
                None => Err(ErrorKind::WouldBlock.into()),
                Some(Err(e)) => Err(e),
                Some(Ok(mut bytes)) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.reads.push_front(Ok(bytes.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl Write for MockStream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self.writes.pop_front() {
                None => Err(ErrorKind::WouldBlock.into()),
                Some(Err(e)) => Err(e),
                Some(Ok(n)) => {
                    let n = n.min(buf.len());
                    self.written.extend_from_slice(&buf[..n]);
                    Ok(n)
                }
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameCodec::new(1024)
            .encode_with(&mut out, |b| b.extend_from_slice(body))
            .unwrap();
        out
    }

    fn connection(reads: Vec<io::Result<Vec<u8>>>) -> Connection<MockStream> {
        let stream = MockStream {
            reads: reads.into(),
            ..MockStream::default()
        };
        Connection::new(stream, 100)
    }

    #[test]
    fn reads_until_would_block_retrying_interrupted() {
        let mut conn = connection(vec![
            Ok(b"ab".to_vec()),
            Err(ErrorKind::Interrupted.into()),
            Ok(b"cd".to_vec()),
        ]);
        let outcome = conn.read_available(1 << 20).unwrap();
        assert_eq!(
            outcome,
            ReadOutcome {
                bytes: 4,
                closed: false,
                drained: true
            }
        );
        assert_eq!(conn.input(), b"abcd");
    }

    #[test]
    fn byte_limit_stops_reading_and_says_not_drained() {
        let big = vec![7u8; 3 * READ_CHUNK_BYTES];
        let mut conn = connection(vec![Ok(big)]);
        let first = conn.read_available(READ_CHUNK_BYTES).unwrap();
        assert_eq!(
            first,
            ReadOutcome {
                bytes: READ_CHUNK_BYTES,
                closed: false,
                drained: false
            }
        );
        let second = conn.read_available(usize::MAX).unwrap();
        assert_eq!(second.bytes, 2 * READ_CHUNK_BYTES);
        assert!(second.drained);
        assert_eq!(conn.input().len(), 3 * READ_CHUNK_BYTES);
    }

    #[test]
    fn eof_is_reported_with_the_bytes_before_it() {
        let mut conn = connection(vec![Ok(b"xyz".to_vec()), Ok(Vec::new())]);
        let outcome = conn.read_available(1 << 20).unwrap();
        assert_eq!(
            outcome,
            ReadOutcome {
                bytes: 3,
                closed: true,
                drained: false
            }
        );
        assert_eq!(conn.input(), b"xyz");
    }

    #[test]
    fn read_errors_are_returned() {
        let mut conn = connection(vec![Err(ErrorKind::ConnectionReset.into())]);
        let error = conn.read_available(1 << 20).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionReset);
    }

    #[test]
    fn endless_interrupts_end_the_call_without_error() {
        let reads = (0..1000)
            .map(|_| Err(ErrorKind::Interrupted.into()))
            .collect();
        let mut conn = connection(reads);
        let outcome = conn.read_available(1 << 20).unwrap();
        assert_eq!(
            outcome,
            ReadOutcome {
                bytes: 0,
                closed: false,
                drained: false
            }
        );
        assert_eq!(conn.stream().read_calls, INTERRUPTED_RETRIES_MAX as usize);
    }

    #[test]
    fn frames_split_across_reads_are_decoded_in_order() {
        let mut bytes = frame(b"one");
        bytes.extend(frame(b""));
        bytes.extend(frame(b"three"));
        let codec = FrameCodec::new(1024);
        // Deliver the stream one byte per read, decoding after each.
        let mut conn = connection(bytes.iter().map(|b| Ok(vec![*b])).collect());
        let mut frames = Vec::new();
        for _ in 0..bytes.len() {
            conn.read_available(1).unwrap();
            while let Some(body) = conn.next_frame(&codec).unwrap() {
                frames.push(body.to_vec());
            }
        }
        assert_eq!(
            frames,
            vec![b"one".to_vec(), b"".to_vec(), b"three".to_vec()]
        );
        assert!(conn.input().is_empty());
    }

    #[test]
    fn oversized_frame_is_an_error() {
        let mut conn = connection(vec![Ok(u32::MAX.to_le_bytes().to_vec())]);
        conn.read_available(1 << 20).unwrap();
        let error = conn.next_frame(&FrameCodec::new(1024)).unwrap_err();
        assert!(matches!(error, DecodeError::TooLarge { .. }));
    }

    #[test]
    fn consumed_input_is_compacted_and_the_rest_kept() {
        let mut conn = connection(vec![Ok(b"0123456789".to_vec()), Ok(b"ab".to_vec())]);
        conn.read_available(1).unwrap();
        conn.consume(8);
        assert_eq!(conn.input(), b"89");
        conn.read_available(1).unwrap();
        assert_eq!(conn.read_pos, 0, "prefix dropped before reading");
        assert_eq!(conn.input(), b"89ab");
    }

    #[test]
    fn repeated_reads_reuse_the_initialized_buffer() {
        let reads = (0..100u8).map(|i| Ok(vec![i; 100])).collect();
        let mut conn = connection(reads);
        let mut received = Vec::new();
        for _ in 0..100 {
            conn.read_available(1).unwrap();
            assert_eq!(conn.input().len(), 100, "exactly the bytes of this read");
            received.extend_from_slice(conn.input());
            conn.consume(100);
        }
        let expected: Vec<u8> = (0..100u8).flat_map(|i| [i; 100]).collect();
        assert_eq!(received, expected);
        assert_eq!(
            conn.input.len(),
            READ_CHUNK_BYTES,
            "one chunk initialized once, then reused"
        );
    }

    #[test]
    fn idle_input_storage_is_capped() {
        let big = vec![1u8; 2 * IDLE_CAPACITY_MAX];
        let mut conn = connection(vec![Ok(big), Ok(b"z".to_vec())]);
        conn.read_available(2 * IDLE_CAPACITY_MAX).unwrap();
        conn.consume(2 * IDLE_CAPACITY_MAX);
        conn.read_available(1).unwrap();
        assert_eq!(conn.input(), b"z");
        assert!(conn.input.capacity() <= IDLE_CAPACITY_MAX);
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut conn = connection(Vec::new());
        conn.queue(b"hello world").unwrap();
        conn.stream_mut().writes = vec![Ok(3), Err(ErrorKind::Interrupted.into()), Ok(2)].into();
        assert_eq!(conn.flush().unwrap(), FlushOutcome::Partial);
        assert_eq!(conn.pending_output_bytes(), 6);
        conn.queue(b"!").unwrap();
        conn.stream_mut().writes = vec![Ok(100)].into();
        assert_eq!(conn.flush().unwrap(), FlushOutcome::Done);
        assert_eq!(conn.stream().written, b"hello world!");
        assert_eq!(conn.pending_output_bytes(), 0);
    }

    #[test]
    fn queue_with_checks_the_bytes_it_encoded() {
        let mut conn = connection(Vec::new());
        conn.queue_with(|out| out.extend_from_slice(&[1; 60]))
            .unwrap();
        let refused = conn.queue_with(|out| out.extend_from_slice(&[2; 41]));
        assert_eq!(
            refused,
            Err(OutputLimitExceeded {
                pending: 60,
                queued: 41,
                max: 100
            })
        );
        assert_eq!(conn.pending_output_bytes(), 60);
        conn.queue_with(|out| out.extend_from_slice(&[3; 40]))
            .unwrap();
        assert_eq!(conn.pending_output_bytes(), 100);
    }

    #[test]
    fn write_errors_and_write_zero_are_returned() {
        let mut conn = connection(Vec::new());
        conn.queue(b"x").unwrap();
        conn.stream_mut().writes = vec![Err(ErrorKind::BrokenPipe.into())].into();
        assert_eq!(conn.flush().unwrap_err().kind(), ErrorKind::BrokenPipe);
        conn.stream_mut().writes = vec![Ok(0)].into();
        assert_eq!(conn.flush().unwrap_err().kind(), ErrorKind::WriteZero);
    }

    #[test]
    fn output_limit_refuses_and_leaves_the_buffer_unchanged() {
        let codec = FrameCodec::new(1024);
        let mut conn = connection(Vec::new());
        conn.queue(&[1; 90]).unwrap();
        assert_eq!(
            conn.queue(&[2; 11]),
            Err(OutputLimitExceeded {
                pending: 90,
                queued: 11,
                max: 100
            })
        );
        conn.queue_frame(&codec, |b| b.extend_from_slice(&[3; 6]))
            .unwrap();
        assert_eq!(conn.pending_output_bytes(), 100);
        let refused = conn.queue_frame(&codec, |b| b.push(4));
        assert_eq!(
            refused,
            Err(QueueFrameError::Output(OutputLimitExceeded {
                pending: 100,
                queued: 5,
                max: 100
            }))
        );
        assert_eq!(conn.pending_output_bytes(), 100);
        // Written bytes no longer count against the limit.
        conn.stream_mut().writes = vec![Ok(50)].into();
        assert_eq!(conn.flush().unwrap(), FlushOutcome::Partial);
        conn.queue(&[5; 50]).unwrap();
        conn.stream_mut().writes = vec![Ok(1000)].into();
        assert_eq!(conn.flush().unwrap(), FlushOutcome::Done);
        let mut want = vec![1; 90];
        want.extend(frame(&[3; 6]));
        want.extend([5; 50]);
        assert_eq!(conn.stream().written, want);
    }

    #[test]
    fn an_oversized_frame_is_refused_and_the_connection_stays_usable() {
        let codec = FrameCodec::new(16);
        let mut conn = connection(Vec::new());
        conn.queue_frame(&codec, |b| b.extend_from_slice(b"first"))
            .unwrap();
        let refused = conn.queue_frame(&codec, |b| b.extend_from_slice(&[0; 17]));
        assert_eq!(
            refused,
            Err(QueueFrameError::TooLarge(FrameTooLarge {
                len: 17,
                max: 16
            }))
        );
        conn.queue_frame(&codec, |b| b.extend_from_slice(b"second"))
            .unwrap();
        conn.stream_mut().writes = vec![Ok(1000)].into();
        assert_eq!(conn.flush().unwrap(), FlushOutcome::Done);
        let mut want = Vec::new();
        for body in [&b"first"[..], b"second"] {
            codec
                .encode_with(&mut want, |b| b.extend_from_slice(body))
                .unwrap();
        }
        assert_eq!(conn.stream().written, want);
    }
}
