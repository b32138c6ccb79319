//! `raftkv-cli certs init`: a development certificate authority and the certificates
//! a cluster needs, written as PEM files.
//!
//! Layout of the directory: `ca.pem` and `ca-key.pem` (the CA), `node-N.pem` and
//! `node-N-key.pem` per node (usable as server and as client certificate: one node
//! identity for its client-facing ports and its peer links), `client.pem` and
//! `client-key.pem` (a client identity for ports that require client certificates).
//!
//! A node certificate names `localhost`, `127.0.0.1`, `node-N` (the member name that
//! peer links check) and every extra host given. A directory that already holds a CA
//! keeps it: new node certificates are signed by it (so `certs init DIR --nodes 4`
//! after a first run adds node 4's files for the same cluster), and existing node
//! files are left as they are.
//!
//! Invariants: private keys are written with mode 0600 and never over an existing file;
//! every certificate written chains to `ca.pem`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// The CA's common name (also how an existing CA is recognised: the same name).
const CA_NAME: &str = "raftkv development CA";

/// The DNS name a node certificate carries for member `id`, which peer links check.
pub fn member_name(id: u64) -> String {
    format!("node-{id}")
}

/// What `certs init` could not do.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A name or key that rcgen refuses.
    #[error("{0}")]
    Generate(#[from] rcgen::Error),
}

/// The files `init` wrote, and those it found and kept.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Files created.
    pub written: Vec<PathBuf>,
    /// Files that existed and were left alone.
    pub kept: Vec<PathBuf>,
}

/// Writes (or completes) the development certificates of nodes `node_ids` in `dir`;
/// `hosts` are extra names (DNS names or IP addresses) every node certificate carries.
///
/// # Errors
/// [`CertsError`] naming the file that could not be read or written.
pub fn init(dir: &Path, node_ids: &[u64], hosts: &[String]) -> Result<InitReport, CertsError> {
    fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
    let mut report = InitReport::default();
    let (ca, ca_key) = certificate_authority(dir, &mut report)?;
    for &id in node_ids {
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            member_name(id),
        ];
        names.extend(hosts.iter().cloned());
        let common_name = format!("raftkv node {id}");
        let base = dir.join(member_name(id));
        issue(&base, &common_name, names, &ca, &ca_key, &mut report)?;
    }
    let names = vec!["raftkv-client".to_string()];
    issue(
        &dir.join("client"),
        "raftkv client",
        names,
        &ca,
        &ca_key,
        &mut report,
    )?;
    Ok(report)
}

/// The CA of `dir`: loaded from `ca-key.pem` when it exists, else created.
fn certificate_authority(
    dir: &Path,
    report: &mut InitReport,
) -> Result<(Certificate, KeyPair), CertsError> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca-key.pem");
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = name(CA_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    if key_path.exists() {
        let pem = fs::read_to_string(&key_path).map_err(|source| io_error(&key_path, source))?;
        let key = KeyPair::from_pem(&pem)?;
        // Same name and key as the CA that signed the existing files: what it signs now
        // chains to the existing ca.pem.
        let ca = params.self_signed(&key)?;
        report.kept.push(cert_path);
        report.kept.push(key_path);
        return Ok((ca, key));
    }
    let key = KeyPair::generate()?;
    let ca = params.self_signed(&key)?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &ca.pem(), false)?;
    report.written.push(cert_path);
    report.written.push(key_path);
    Ok((ca, key))
}

/// Writes `BASE.pem` and `BASE-key.pem` for `names`, unless the certificate exists.
fn issue(
    base: &Path,
    common_name: &str,
    names: Vec<String>,
    ca: &Certificate,
    ca_key: &KeyPair,
    report: &mut InitReport,
) -> Result<(), CertsError> {
    let cert_path = base.with_extension("pem");
    let key_path = PathBuf::from(format!("{}-key.pem", base.display()));
    if cert_path.exists() {
        report.kept.push(cert_path);
        return Ok(());
    }
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = name(common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca, ca_key)?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    report.written.push(cert_path);
    report.written.push(key_path);
    Ok(())
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "raftkv");
    name
}

/// Creates `path` (never over an existing file), mode 0600 for a key.
fn write_new(path: &Path, text: &str, private: bool) -> Result<(), CertsError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|source| io_error(path, source))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: std::io::Error) -> CertsError {
    CertsError::Io {
        path: path.to_path_buf(),
        source,
    }
}
