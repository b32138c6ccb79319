//! `raftkv-cli certs init`: writes development certificates (see `raftkv::tls::certs`)
//! and prints which files it wrote and kept, and how to use them.

use std::path::Path;

use raftkv::tls::certs;

use super::EXIT_OTHER;

/// Writes the certificates of nodes `1..=nodes` into `dir`; returns the exit code.
pub fn init(dir: &Path, nodes: u64, hosts: &[String]) -> u8 {
    let ids: Vec<u64> = (1..=nodes).collect();
    match certs::init(dir, &ids, hosts) {
        Ok(report) => {
            for path in &report.written {
                println!("wrote {}", path.display());
            }
            for path in &report.kept {
                println!("kept  {}", path.display());
            }
            let dir = dir.display();
            println!(
                "OK: node N uses cert_file = \"{dir}/node-N.pem\", key_file = \"{dir}/node-N-key.pem\", \
                 ca_file = \"{dir}/ca.pem\" in [tls]; clients use --cacert {dir}/ca.pem"
            );
            0
        }
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_OTHER
        }
    }
}
