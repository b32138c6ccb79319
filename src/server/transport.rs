//! The byte stream under a connection: a plain TCP socket, or a TLS session over one,
//! driven by the loop's own non-blocking reads and writes.
//!
//! [`Transport`] is what [`super::connection::Connection`] reads from and writes to. A
//! TLS transport keeps rustls's session (`rustls::Connection`, either side: accepted
//! connections are servers, outbound peer links clients): `read` returns plaintext
//! the session holds, else pulls ciphertext from the socket (until `WouldBlock`),
//! processes it and tries again; handshake records the session produces on the way
//! are written out at once. `write` hands plaintext to the session (bounded by its
//! buffer limit, so a peer that does not read cannot grow it) and writes the records;
//! `flush` writes records still held. [`Transport::wants_flush`] says records are
//! still held, so the loop asks for WRITABLE readiness even with no plaintext queued
//! (after a handshake flight that met a full socket buffer).
//!
//! Invariants: `WouldBlock` from `read` means the socket is drained and the session
//! holds no plaintext, so edge-triggered readiness will report new bytes; a TLS error
//! (a plaintext client on a TLS port, a certificate refused) is returned as
//! `InvalidData` after the alert is sent, and the connection is then closed by its
//! caller, as for any read error. A plain transport behaves exactly as the socket.

use std::io::{self, ErrorKind, Read, Write};

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// Most plaintext a TLS session buffers for sending before `write` reports
/// `WouldBlock` (the output limits of the connection above still apply in full).
const TLS_BUFFER_BYTES: usize = 256 * 1024;

/// A socket, with or without TLS.
#[derive(Debug)]
pub enum Transport {
    /// Bytes as they are.
    Plain(TcpStream),
    /// A TLS session over the socket.
    Tls(Box<TlsTransport>),
}

/// A TLS session and its socket.
#[derive(Debug)]
pub struct TlsTransport {
    tcp: TcpStream,
    session: rustls::Connection,
}

impl Transport {
    /// `tcp` carrying the TLS `session` (server side for accepted connections).
    pub fn tls(tcp: TcpStream, session: impl Into<rustls::Connection>) -> Transport {
        let mut session = session.into();
        session.set_buffer_limit(Some(TLS_BUFFER_BYTES));
        Transport::Tls(Box::new(TlsTransport { tcp, session }))
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => &tls.tcp,
        }
    }

    /// Whether TLS records are held that the socket has not taken yet.
    pub fn wants_flush(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.session.wants_write(),
        }
    }

    /// The TLS session, if any (the peer's certificate, once the handshake is done).
    pub fn session(&self) -> Option<&rustls::Connection> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(tls) => Some(&tls.session),
        }
    }
}

impl TlsTransport {
    /// Writes held records until none are left or the socket would block.
    fn write_records(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.tcp) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Like `write_records`, where a full socket is not an error (the caller goes on
    /// and the loop flushes later).
    fn write_records_if_room(&mut self) -> io::Result<()> {
        match self.write_records() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

impl Read for TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.reader().read(buf) {
                Ok(count) => return Ok(count),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // The peer closed the socket without a close_notify: end of stream.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.session.read_tls(&mut self.tcp) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(error) = self.session.process_new_packets() {
                        // Send the alert that says why, then fail the connection.
                        let _ = self.write_records();
                        return Err(io::Error::new(ErrorKind::InvalidData, error));
                    }
                    self.write_records_if_room()?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TlsTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_records_if_room()?;
        let accepted = self.session.writer().write(buf)?;
        self.write_records_if_room()?;
        if accepted == 0 && !buf.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_records()
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

impl Source for Transport {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.register(registry, token, interest),
            Transport::Tls(tls) => tls.tcp.register(registry, token, interest),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.reregister(registry, token, interest),
            Transport::Tls(tls) => tls.tcp.reregister(registry, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.deregister(registry),
            Transport::Tls(tls) => tls.tcp.deregister(registry),
        }
    }
}
