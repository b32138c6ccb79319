//! The syntax of a node address as the client accepts it: `HOST:PORT`, where HOST is an
//! IPv4 address, a bracketed IPv6 address or a host name, and PORT a number 1..=65535.
//!
//! Checked before anything is sent, so a typo (`--cluster foo`) is a usage error at once
//! instead of a connection that is retried until the request timeout. Name resolution
//! is not done here: a name that does not resolve may be a transient DNS failure, and
//! stays a connection error.

use std::net::SocketAddr;

use super::error::Error;

/// Checks that `addr` is `HOST:PORT`.
///
/// # Errors
/// [`Error::Invalid`] naming `addr` and what is wrong with it.
pub fn check_addr(addr: &str) -> Result<(), Error> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let invalid = |why: &str| {
        Err(Error::Invalid(format!(
            "malformed address {addr:?}: {why} (expected HOST:PORT, e.g. 127.0.0.1:7001)"
        )))
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return invalid("no port");
    };
    if port.parse::<u16>().map_or(true, |port| port == 0) {
        return invalid("the port is not a number from 1 to 65535");
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if host.is_empty() || !host.chars().all(name_char) {
        return invalid("the host is not an IP address or a host name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Goal: every address form a user may type is accepted, every malformed one refused
    //! with its own text in the message. Method: a table.
    use super::*;

    #[test]
    fn accepts_host_port_and_refuses_the_rest() {
        let good = [
            "127.0.0.1:7001",
            "[::1]:7001",
            "localhost:7001",
            "node-1.example:1",
        ];
        for (i, addr) in good.into_iter().enumerate() {
            assert!(check_addr(addr).is_ok(), "#{i}: {addr}");
        }
        let bad = [
            "foo",
            "127.0.0.1",
            "foo:",
            ":7001",
            "foo:bar",
            "foo:0",
            "foo:70000",
            "a b:1",
            "::1:7001x",
            "",
        ];
        for (i, addr) in bad.into_iter().enumerate() {
            let error = check_addr(addr).expect_err(addr);
            assert!(matches!(error, Error::Invalid(_)), "#{i}: {addr}");
            assert!(
                error.to_string().contains(&format!("{addr:?}")),
                "#{i}: {error}"
            );
        }
    }
}
