//! A fault proxy for one directed peer link: a TCP forwarder on `127.0.0.1:0` that the
//! harness can switch between passing, dropping, stalling and delaying traffic.
//!
//! Node `i` dials the proxy of link `i -> j` instead of `j`'s peer port; the proxy
//! forwards to `j`. Since every node sends its Raft messages only on the links it dialed
//! (see `server::event_loop`), the proxy of `i -> j` carries exactly the messages from
//! `i` to `j`: cutting it is one-way loss.
//!
//! Each accepted connection gets one reader and one writer thread per direction; the
//! reader stamps every chunk with the time it may be written (now + delay), the writer
//! waits for that time and, while the link is stalled, holds the chunk (TCP back-pressure
//! then stops the sender). Dropping shuts every open connection down and closes new
//! ones at once (the dialer sees a refused/reset link and backs off). A blackhole
//! discards what arrives and leaves the connections it hit silent for good (a link
//! that fell silent without breaking: only a redial brings it back).
//!
//! Invariant: after [`LinkProxy`] is dropped, no thread of it forwards another byte.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How often idle proxy threads look at their flags.
const POLL: Duration = Duration::from_millis(5);
/// Bytes read per chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// What a link does with its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Forward at once.
    Pass,
    /// Close every connection and refuse new ones.
    Drop,
    /// Keep connections open but forward nothing (data is held, not lost).
    Stall,
    /// Forward every chunk this many milliseconds after it arrived.
    Delay(u64),
    /// Keep connections open, forward nothing and discard what arrives; a connection
    /// that lost data this way stays silent for good, even after the mode changes back,
    /// while new connections pass again. This is a link behind a route that drops
    /// packets: TCP keeps such a connection open, and after the route heals it carries
    /// nothing until its retransmission backoff (seconds) expires, or never when a
    /// middlebox lost its state. Only a redial recovers quickly.
    Blackhole,
}

struct Shared {
    mode: Mutex<LinkMode>,
    stopped: AtomicBool,
    /// Open connections (both sockets), by connection id, so Drop can close them.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    next_id: AtomicU64,
    target: SocketAddr,
}

impl Shared {
    fn mode(&self) -> LinkMode {
        *lock(&self.mode)
    }

    fn close_all(&self) {
        for (_, (a, b)) in lock(&self.open).drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

/// A mutex poisoned by a panicking proxy thread still holds a usable value.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One directed link's proxy. Dropping it stops it and closes its connections.
pub struct LinkProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl LinkProxy {
    /// Starts a proxy on a free loopback port forwarding to `target`, in [`LinkMode::Pass`].
    ///
    /// # Errors
    /// Binding or configuring the listener failed.
    pub fn start(target: SocketAddr) -> io::Result<LinkProxy> {
        LinkProxy::start_on(TcpListener::bind("127.0.0.1:0")?, target)
    }

    /// Starts a proxy on an already bound `listener` (bind first, so that no other
    /// port picker can be handed the same port before the proxy holds it).
    ///
    /// # Errors
    /// Configuring the listener or spawning its thread failed.
    pub fn start_on(listener: TcpListener, target: SocketAddr) -> io::Result<LinkProxy> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(LinkMode::Pass),
            stopped: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            target,
        });
        let accept_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || accept_loop(&listener, &accept_shared))?;
        Ok(LinkProxy { addr, shared })
    }

    /// The address nodes dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        self.shared.mode()
    }

    /// Switches the mode; switching to [`LinkMode::Drop`] closes every open connection.
    pub fn set_mode(&self, mode: LinkMode) {
        *lock(&self.shared.mode) = mode;
        if mode == LinkMode::Drop {
            self.shared.close_all();
        }
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((inbound, _)) => {
                if shared.mode() == LinkMode::Drop {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                // A failed connect or clone just closes the inbound socket: the node
                // sees a broken link and redials, as it would on a real network.
                let _ = connect(inbound, shared);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

fn connect(inbound: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    inbound.set_nonblocking(false)?;
    let outbound = TcpStream::connect_timeout(&shared.target, Duration::from_secs(1))?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    lock(&shared.open).insert(id, (inbound.try_clone()?, outbound.try_clone()?));
    pump(id, inbound.try_clone()?, outbound.try_clone()?, shared)?;
    pump(id, outbound, inbound, shared)
}

/// Chunks read but not yet written, per direction of a connection.
const CHUNKS_IN_FLIGHT_MAX: usize = 256;

/// Forwards `from` to `to` through a reader and a writer thread.
fn pump(id: u64, from: TcpStream, to: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    // Bounded, so a stalled (or slow) writer blocks the reader and TCP back-pressure
    // reaches the sender instead of the proxy buffering without limit.
    let (sender, receiver) = mpsc::sync_channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let reader_shared = Arc::clone(shared);
    let mut from_reader = from.try_clone()?;
    thread::Builder::new()
        .name("proxy-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK_BYTES];
            loop {
                match from_reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let delay = match reader_shared.mode() {
                            LinkMode::Delay(ms) => Duration::from_millis(ms),
                            _ => Duration::ZERO,
                        };
                        if sender
                            .send((Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        })?;
    let writer_shared = Arc::clone(shared);
    thread::Builder::new()
        .name("proxy-write".into())
        .spawn(move || {
            let mut to = to;
            write_loop(&receiver, &mut to, &writer_shared);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            lock(&writer_shared.open).remove(&id);
        })?;
    Ok(())
}

fn write_loop(receiver: &mpsc::Receiver<(Instant, Vec<u8>)>, to: &mut TcpStream, shared: &Shared) {
    // Set once a blackhole discarded data of this connection: it forwards nothing more.
    let mut silent = false;
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let (due, chunk) = match receiver.recv_timeout(POLL * 20) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        loop {
            if shared.stopped.load(Ordering::SeqCst) {
                return;
            }
            if silent {
                break;
            }
            match shared.mode() {
                LinkMode::Drop => return,
                LinkMode::Blackhole => silent = true,
                LinkMode::Stall => thread::sleep(POLL),
                LinkMode::Pass | LinkMode::Delay(_) => {
                    let now = Instant::now();
                    if now >= due {
                        break;
                    }
                    thread::sleep((due - now).min(POLL * 4));
                }
            }
        }
        if !silent && to.write_all(&chunk).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: each mode does what it says on a real loopback connection. Method: an echo
    //! server behind a proxy; read with a short timeout to tell "held" from "passed".

    use super::*;

    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roundtrip(stream: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
        stream.set_read_timeout(Some(timeout)).expect("timeout");
        let mut buf = [0u8; 16];
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[test]
    fn pass_stall_heal_and_drop() {
        let proxy = LinkProxy::start(echo_server()).expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).expect("connect");
        stream.write_all(b"a").expect("write");
        assert_eq!(
            roundtrip(&mut stream, Duration::from_secs(2)),
            Some(b"a".to_vec())
        );

        proxy.set_mode(LinkMode::Stall);
        stream.write_all(b"b").expect("write");
        assert_eq!(
            roundtrip(&mut stream, Duration::from_millis(200)),
            None,
            "held"
        );
        proxy.set_mode(LinkMode::Pass);
        assert_eq!(
            roundtrip(&mut stream, Duration::from_secs(2)),
            Some(b"b".to_vec())
        );

        proxy.set_mode(LinkMode::Drop);
        let mut buf = [0u8; 4];
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert!(matches!(stream.read(&mut buf), Ok(0) | Err(_)), "closed");
        let mut refused = TcpStream::connect(proxy.addr()).expect("accepted then closed");
        refused
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)), "refused");

        proxy.set_mode(LinkMode::Pass);
        let mut again = TcpStream::connect(proxy.addr()).expect("connect");
        again.write_all(b"c").expect("write");
        assert_eq!(
            roundtrip(&mut again, Duration::from_secs(2)),
            Some(b"c".to_vec())
        );
    }

    #[test]
    fn a_blackhole_silences_the_connections_it_hit_for_good() {
        let proxy = LinkProxy::start(echo_server()).expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).expect("connect");
        stream.write_all(b"a").expect("write");
        assert_eq!(
            roundtrip(&mut stream, Duration::from_secs(2)),
            Some(b"a".to_vec())
        );
        proxy.set_mode(LinkMode::Blackhole);
        stream.write_all(b"b").expect("write");
        assert_eq!(roundtrip(&mut stream, Duration::from_millis(200)), None);
        proxy.set_mode(LinkMode::Pass);
        stream.write_all(b"c").expect("write");
        assert_eq!(
            roundtrip(&mut stream, Duration::from_millis(300)),
            None,
            "the connection stays silent after the heal"
        );
        let mut again = TcpStream::connect(proxy.addr()).expect("connect");
        again.write_all(b"d").expect("write");
        assert_eq!(
            roundtrip(&mut again, Duration::from_secs(2)),
            Some(b"d".to_vec()),
            "a new connection passes"
        );
    }

    #[test]
    fn delay_holds_each_chunk_for_the_delay() {
        let proxy = LinkProxy::start(echo_server()).expect("proxy");
        proxy.set_mode(LinkMode::Delay(300));
        let mut stream = TcpStream::connect(proxy.addr()).expect("connect");
        stream.write_all(b"d").expect("write");
        // Both directions are delayed: nothing can be back within 100 ms.
        assert_eq!(roundtrip(&mut stream, Duration::from_millis(100)), None);
        assert_eq!(
            roundtrip(&mut stream, Duration::from_secs(3)),
            Some(b"d".to_vec())
        );
    }
}
