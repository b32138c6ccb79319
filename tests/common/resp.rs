//! Raw RESP for tests that compare replies byte for byte (read off the socket, not
//! through a client library that rewords errors): a connection that sends argument
//! lists and returns each reply as its wire text, a one-shot pipeline exchange, and a
//! real redis-server process to compare with.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

use super::eventually;

/// A raw RESP connection: sends argument lists, returns each reply as its wire text.
pub struct Resp {
    reader: BufReader<TcpStream>,
}

impl Resp {
    pub fn connect(addr: SocketAddr) -> Resp {
        let stream = eventually(|| TcpStream::connect(addr));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        Resp {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for arg in args {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.reader
            .get_mut()
            .write_all(out.as_bytes())
            .expect("send a command");
    }

    /// One whole reply, as sent (`:1\r\n`, `$2\r\nab\r\n`, ...).
    pub fn reply(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a reply");
        assert!(line.ends_with("\r\n"), "a whole reply line: {line:?}");
        let count = |line: &str| line[1..line.len() - 2].parse::<i64>().expect("a length");
        match line.as_bytes()[0] {
            b'$' if count(&line) >= 0 => {
                let mut body = vec![0; count(&line) as usize + 2];
                self.reader.read_exact(&mut body).expect("read a bulk");
                line + &String::from_utf8_lossy(&body)
            }
            b'*' if count(&line) > 0 => {
                (0..count(&line)).fold(line.clone(), |text, _| text + &self.reply())
            }
            _ => line,
        }
    }

    pub fn call(&mut self, line: &str) -> String {
        self.send(&line.split(' ').collect::<Vec<_>>());
        self.reply()
    }

    /// An integer reply's value.
    pub fn integer(&mut self, line: &str) -> i64 {
        let reply = self.call(line);
        assert!(reply.starts_with(':'), "{line}: {reply:?}");
        reply[1..reply.len() - 2].parse().expect("an integer")
    }
}

/// A redis-server process (started by the test), killed on drop.
pub struct RedisServer(pub Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The RESP array of the space-separated words of `line`.
pub fn encode(line: &str) -> Vec<u8> {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n{word}\r\n", word.len()).as_bytes());
    }
    out
}

/// Sends every command on one connection, then reads until the replies stop coming (a
/// short quiet time after the last byte, within a bounded total wait); returns the
/// replies and the client's own address.
pub fn exchange(addr: &str, commands: &[&str]) -> (Vec<u8>, String) {
    let mut stream = eventually(|| TcpStream::connect(addr));
    let local = stream.local_addr().expect("addr").to_string();
    for line in commands {
        stream.write_all(&encode(line)).expect("write");
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) if !out.is_empty() => break,
            Err(_) => {}
        }
    }
    (out, local)
}
