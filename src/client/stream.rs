//! The blocking byte stream of a client connection: a TCP socket, or a TLS session over
//! one (`rustls::StreamOwned`, which completes the handshake inside the first reads
//! and writes).
//!
//! Invariant: the socket timeouts set through [`ClientStream::tcp`] bound every read
//! and write, the TLS handshake's included, so a caller's deadline holds either way.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use crate::tls::ClientTls;

/// A connected socket, with or without TLS.
#[derive(Debug)]
pub enum ClientStream {
    /// Bytes as they are.
    Plain(TcpStream),
    /// A TLS session over the socket.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl ClientStream {
    /// `tcp`, wrapped in a TLS session to `addr` when `tls` is given.
    ///
    /// # Errors
    /// `addr`'s host is not a name a certificate can carry.
    pub fn new(tcp: TcpStream, addr: &str, tls: Option<&ClientTls>) -> io::Result<ClientStream> {
        match tls {
            None => Ok(ClientStream::Plain(tcp)),
            Some(tls) => {
                let session = tls
                    .session(addr)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Ok(ClientStream::Tls(Box::new(rustls::StreamOwned::new(
                    session, tcp,
                ))))
            }
        }
    }

    /// The socket (for its timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(tcp) => tcp,
            ClientStream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => tcp.read(buf),
            ClientStream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => tcp.write(buf),
            ClientStream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(tcp) => tcp.flush(),
            ClientStream::Tls(tls) => tls.flush(),
        }
    }
}
