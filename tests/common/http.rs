//! A minimal HTTP/1.1 client over std `TcpStream` for the tests of the HTTP port: it
//! writes requests as given and reads responses framed by `Content-Length`, so tests
//! see exactly what the node sends (order, status, headers, close).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header lines as `(lowercased name, value)`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A keep-alive connection to an HTTP port.
pub struct Conn {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr).expect("connect HTTP")
    }

    /// A connection, or why the connect failed (the node may not listen yet).
    pub fn try_open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        Ok(Conn {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Sends one request (with `Content-Length` when there is a body) and reads its reply.
    pub fn call(&mut self, method: &str, path: &str, body: &[u8]) -> Reply {
        self.send(method, path, &[], body);
        self.read_reply().expect("a reply")
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let bytes = request_bytes(method, path, headers, body);
        self.stream.write_all(&bytes).expect("write request");
    }

    /// Reads one response; `None` when the connection closes first.
    pub fn read_reply(&mut self) -> Option<Reply> {
        loop {
            if let Some((used, reply)) = parse_reply(&self.buffer) {
                self.buffer.drain(..used);
                return Some(reply);
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Waits up to `timeout` for the node to close the connection; how long it took.
    pub fn wait_closed(&mut self, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let mut chunk = [0u8; 4096];
        while started.elapsed() < timeout {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(started.elapsed()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return Some(started.elapsed()),
            }
        }
        None
    }
}

pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// One whole response at the start of `input`, and the bytes it used.
fn parse_reply(input: &[u8]) -> Option<(usize, Reply)> {
    let end = input.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&input[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let body = input.get(end + 4..end + 4 + length)?.to_vec();
    Some((
        end + 4 + length,
        Reply {
            status,
            headers,
            body,
        },
    ))
}
