//! TLS for raftkv's ports and links: the certificate files, and the rustls
//! configurations built from them.
//!
//! rustls is a sans-IO session: the server's mio loop feeds it the bytes it reads and
//! writes out the bytes it produces ([`crate::server`]'s transport), and the blocking
//! clients wrap their socket in a `rustls::StreamOwned` ([`crate::client`]). This
//! module only turns files into configurations: [`ServerTls`] for a listener (its
//! certificate chain and key, and optionally the CA that client certificates must
//! chain to), [`ClientTls`] for a connecting side (the CA that the server's certificate
//! must chain to, and optionally a certificate to present).
//!
//! Invariants: a configuration is only built from files that parsed completely (every
//! PEM block of a certificate file a certificate, exactly one private key, at least one
//! CA certificate); every error names the file. Only TLS 1.2 and 1.3 with rustls's
//! default (ring) cipher suites are offered. A client verifies the server's certificate
//! against the name it dialed: an IP address for `ip:port`, else the host name.

pub mod certs;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A certificate, key or CA file that cannot be used, or a configuration rustls refuses.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no usable PEM block of the kind wanted.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("{context}: {reason}")]
    Config {
        /// Which files were combined.
        context: String,
        /// rustls's reason.
        reason: String,
    },
}

fn file_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Every certificate of a PEM file, in order (a chain: the leaf first).
///
/// # Errors
/// [`TlsError::File`] if the file cannot be read, a block does not parse, or it holds
/// no certificate.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no CERTIFICATE block"));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`TlsError::File`] if the file cannot be read or holds no private key.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// The CA certificates of a PEM file as a root store.
///
/// # Errors
/// [`TlsError::File`] if the file has no certificate or one is not a valid CA root.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(path)? {
        roots.add(certificate).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

/// rustls with ring: TLS 1.3 and 1.2 AEAD suites, X25519 and P-256/P-384 key exchange.
/// rustls deprecates this provider only because ring has no post-quantum key exchange
/// (aws-lc-rs has); ring is kept because it builds with a C compiler alone
/// (docs/SECURITY.md states the missing post-quantum exchange).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS side of one listener: what it presents and whom it lets in.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    /// Client certificates are required (and verified against the client CA).
    pub requires_client_certificates: bool,
}

impl ServerTls {
    /// A listener presenting `cert_file`'s chain with `key_file`'s key; with
    /// `client_ca_file`, every client must present a certificate that chains to it.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be used or the pair rustls refuses.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        client_ca_file: Option<&Path>,
    ) -> Result<ServerTls, TlsError> {
        let chain = load_certificates(cert_file)?;
        let key = load_private_key(key_file)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(cert_file, key_file, e))?;
        let builder = match client_ca_file {
            Some(ca_file) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(load_roots(ca_file)?),
                    provider(),
                )
                .build()
                .map_err(|e| file_error(ca_file, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| config_error(cert_file, key_file, e))?;
        Ok(ServerTls {
            config: Arc::new(config),
            requires_client_certificates: client_ca_file.is_some(),
        })
    }

    /// A new server session for one accepted connection.
    ///
    /// # Errors
    /// Only if rustls cannot allocate a session (not expected with a loaded config).
    pub fn session(&self) -> Result<rustls::ServerConnection, rustls::Error> {
        rustls::ServerConnection::new(Arc::clone(&self.config))
    }
}

fn config_error(cert_file: &Path, key_file: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::Config {
        context: format!("{} with {}", cert_file.display(), key_file.display()),
        reason: reason.to_string(),
    }
}

/// The TLS side of a connecting client: whom it trusts and what it presents.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Trusts servers whose certificate chains to `ca_file`; presents `identity`
    /// (certificate file, key file) when the server asks for a client certificate.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be used.
    pub fn load(ca_file: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let roots = load_roots(ca_file)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| file_error(ca_file, e))?
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert_file, key_file)) => builder
                .with_client_auth_cert(load_certificates(cert_file)?, load_private_key(key_file)?)
                .map_err(|e| config_error(cert_file, key_file, e))?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// A new client session to `addr` (`host:port`; the certificate must name the host
    /// or IP address).
    ///
    /// # Errors
    /// A host part that is neither an IP address nor a valid DNS name.
    pub fn session(&self, addr: &str) -> Result<rustls::ClientConnection, String> {
        let name = server_name(addr)?;
        rustls::ClientConnection::new(Arc::clone(&self.config), name).map_err(|e| e.to_string())
    }
}

impl ClientTls {
    /// A new client session that verifies the server's certificate against the DNS
    /// name `name` (a member name, `node-N`) whatever address was dialed.
    ///
    /// # Errors
    /// `name` is not a valid DNS name.
    pub fn session_named(&self, name: &str) -> Result<rustls::ClientConnection, String> {
        let name = ServerName::try_from(name.to_string()).map_err(|e| format!("{name}: {e}"))?;
        rustls::ClientConnection::new(Arc::clone(&self.config), name).map_err(|e| e.to_string())
    }
}

/// The name a client checks the server's certificate against: the host part of
/// `addr`, an IP address when it parses as one.
///
/// # Errors
/// A host part that is not a valid DNS name or IP address.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((host, _port)) => host,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{addr}: {e}"))
}

#[cfg(test)]
mod tests;
