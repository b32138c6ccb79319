//! A raw RESP connection for tests that compare replies byte for byte: sends argument
//! lists and returns each reply as its wire text (read off the socket, not through a
//! client library that rewords errors).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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
