//! `raftkv-cli snapshot save FILE`: a consistent snapshot of the cluster's state
//! machine, taken on the leader ([`Client::snapshot_save`]) and written to FILE, as
//! `etcdctl snapshot save` does. The file is restored into a new cluster with
//! `raftkv-log snapshot-restore`.
//!
//! Invariant: FILE appears only complete and verified: the bytes go to `FILE.part`,
//! which is fsynced, checked (its crc over the whole file, `storage::snapshot::open`)
//! and only then renamed to FILE; on any failure `FILE.part` is removed and FILE (if
//! it existed) is left as it was.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftkv::client::{Client, SaveProgress};
use raftkv::storage::snapshot;

use super::{EXIT_OTHER, fail};

/// Progress lines on stderr at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Saves the snapshot to `file`; returns the exit code.
pub fn save(client: &mut Client, file: &Path) -> u8 {
    let part = part_path(file);
    let code = save_to(client, file, &part);
    if code != 0 {
        let _ = fs::remove_file(&part);
    }
    code
}

fn save_to(client: &mut Client, file: &Path, part: &Path) -> u8 {
    let created = File::create(part).map_err(|e| format!("{}: {e}", part.display()));
    let out = match created {
        Ok(out) => out,
        Err(message) => return refuse(&message),
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let started = Instant::now();
    let mut last_report = started;
    let saved = client.snapshot_save(&mut out, |progress| match progress {
        SaveProgress::Writing => eprintln!("the leader is writing the snapshot..."),
        SaveProgress::Receiving { done, total } => {
            if done == total || last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                eprintln!("received {} of {} MB", done >> 20, total >> 20);
            }
        }
    });
    let saved = match saved {
        Ok(saved) => saved,
        Err(error) => return fail(&error),
    };
    let synced = (out.into_inner().map_err(|e| e.into_error()))
        .and_then(|out| out.sync_all())
        .map_err(|e| format!("{}: {e}", part.display()));
    if let Err(message) = synced {
        return refuse(&message);
    }
    if let Err(e) = snapshot::open(part.to_path_buf()) {
        return refuse(&format!("the received snapshot does not verify: {e}"));
    }
    if let Err(e) = fs::rename(part, file) {
        return refuse(&format!("renaming to {}: {e}", file.display()));
    }
    println!(
        "OK: snapshot at index {} (term {}), {} bytes, saved to {} in {:.1} s",
        saved.index,
        saved.term,
        saved.bytes,
        file.display(),
        started.elapsed().as_secs_f64()
    );
    0
}

/// `FILE.part`, beside FILE.
fn part_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

fn refuse(message: &str) -> u8 {
    eprintln!("raftkv-cli: snapshot save: {message}");
    EXIT_OTHER
}
