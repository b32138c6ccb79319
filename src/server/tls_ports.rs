//! The TLS configurations of one node, built from its `[tls]` section: one per TLS
//! listener, and the client sides of its TLS links.
//!
//! Client-facing listeners (client, Redis, HTTP) present the node's certificate and,
//! with `client_ca_file`, require client certificates chaining to it. The peer listener
//! requires a certificate from the cluster CA (`ca_file`); which member it names is
//! checked when the link's handshake says who it is ([`TlsPorts::names_member`]). Peer
//! links verify the dialed member's certificate against the name `node-N` rather than
//! its address, so a certificate only has to name the member; the forwarding link
//! verifies the leader's client port against the address it dials, as any client does.
//!
//! Invariant: a `TlsPorts` holds only configurations that loaded completely; a reload
//! ([`TlsPorts::load`] again, on SIGHUP) that fails leaves the running one in place, so
//! new connections keep the last certificates that worked.

use mio::net::TcpStream;
use rustls::pki_types::{CertificateDer, ServerName};

use super::net::Listener;
use super::transport::Transport;
use crate::config::{TlsConfig, TlsPort};
use crate::raft::message::NodeId;
use crate::tls::certs::member_name;
use crate::tls::{ClientTls, ServerTls, TlsError};

/// The TLS sides of a node's listeners and links (all `None`: plaintext everywhere).
#[derive(Debug, Clone, Default)]
pub struct TlsPorts {
    client: Option<ServerTls>,
    redis: Option<ServerTls>,
    http: Option<ServerTls>,
    peer: Option<ServerTls>,
    /// The forwarding link's client side (with TLS on the client port).
    forward: Option<ClientTls>,
    /// The peer links' client side (with TLS on the peer port).
    peer_links: Option<ClientTls>,
}

impl TlsPorts {
    /// Reads every file `config` names.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be used.
    pub fn load(config: &TlsConfig) -> Result<TlsPorts, TlsError> {
        let mut ports = TlsPorts::default();
        if config.ports.is_empty() {
            return Ok(ports);
        }
        let missing = |key: &str| TlsError::Config {
            context: format!("tls.{key}"),
            reason: "required when tls.ports is not empty".into(),
        };
        let cert = config
            .cert_file
            .as_deref()
            .ok_or_else(|| missing("cert_file"))?;
        let key = config
            .key_file
            .as_deref()
            .ok_or_else(|| missing("key_file"))?;
        let identity = Some((cert, key));
        let client_facing = || ServerTls::load(cert, key, config.client_ca_file.as_deref());
        if config.on(TlsPort::Client) {
            ports.client = Some(client_facing()?);
            let ca = config
                .ca_file
                .as_deref()
                .ok_or_else(|| missing("ca_file"))?;
            ports.forward = Some(ClientTls::load(ca, identity)?);
        }
        if config.on(TlsPort::Redis) {
            ports.redis = Some(client_facing()?);
        }
        if config.on(TlsPort::Http) {
            ports.http = Some(client_facing()?);
        }
        if config.on(TlsPort::Peer) {
            let ca = config
                .ca_file
                .as_deref()
                .ok_or_else(|| missing("ca_file"))?;
            ports.peer = Some(ServerTls::load(cert, key, Some(ca))?);
            ports.peer_links = Some(ClientTls::load(ca, identity)?);
        }
        Ok(ports)
    }

    /// The transport of a connection accepted on `listener`.
    ///
    /// # Errors
    /// rustls could not start a session (the connection is then refused).
    pub(super) fn accepted(&self, listener: Listener, tcp: TcpStream) -> Result<Transport, String> {
        let server = match listener {
            Listener::Client => &self.client,
            Listener::Redis => &self.redis,
            Listener::Http => &self.http,
            Listener::Peer => &self.peer,
        };
        match server {
            None => Ok(Transport::Plain(tcp)),
            Some(server) => {
                let session = server.session().map_err(|e| e.to_string())?;
                Ok(Transport::tls(tcp, session))
            }
        }
    }

    /// The transport of a peer link dialed to member `peer`.
    ///
    /// # Errors
    /// rustls could not start a session.
    pub(super) fn peer_link(&self, peer: NodeId, tcp: TcpStream) -> Result<Transport, String> {
        match &self.peer_links {
            None => Ok(Transport::Plain(tcp)),
            Some(client) => {
                let session = client.session_named(&member_name(peer))?;
                Ok(Transport::tls(tcp, session))
            }
        }
    }

    /// The transport of the forwarding link to the leader's client port at `addr`.
    ///
    /// # Errors
    /// rustls could not start a session, or `addr` is not a name a certificate carries.
    pub(super) fn forward_link(&self, addr: &str, tcp: TcpStream) -> Result<Transport, String> {
        match &self.forward {
            None => Ok(Transport::Plain(tcp)),
            Some(client) => Ok(Transport::tls(tcp, client.session(addr)?)),
        }
    }

    /// Whether the peer port speaks TLS (inbound links must then prove their member).
    pub(super) fn peer_tls(&self) -> bool {
        self.peer.is_some()
    }

    /// Whether `transport`'s verified client certificate names member `id`: always
    /// true when the peer port is plaintext.
    pub(super) fn names_member(&self, transport: &Transport, id: NodeId) -> bool {
        if !self.peer_tls() {
            return true;
        }
        let leaf = transport
            .session()
            .and_then(|session| session.peer_certificates())
            .and_then(|chain| chain.first());
        leaf.is_some_and(|leaf| certificate_names(leaf, &member_name(id)))
    }
}

/// Whether the certificate `leaf` is valid for the DNS name `name`.
fn certificate_names(leaf: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}
