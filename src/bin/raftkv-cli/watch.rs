//! `raftkv-cli watch KEY` / `watch --prefix P`: prints the changes one member applies,
//! one line each, until interrupted: `REVISION PUT KEY VALUE` or `REVISION DELETE KEY`
//! (the revision is the log index of the change; `--hex` prints keys and values in
//! hexadecimal). `watching ... from revision N` goes to stderr first. No history is
//! kept: the stream starts at the next change.

use std::io::Write;

use raftkv::client::{ClientOptions, Error, watch};
use raftkv::codec::client::{WatchEvent, WatchKind};

use super::values::hex_encode;

/// Streams the events of `key` (a prefix with `prefix`); returns when the stream ends.
///
/// # Errors
/// The member could not be reached or the stream broke.
pub fn run(
    addrs: &[String],
    options: &ClientOptions,
    key: &[u8],
    prefix: bool,
    hex: bool,
) -> Result<(), Error> {
    let show = |bytes: &[u8]| {
        if hex {
            hex_encode(bytes)
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    watch(addrs, key, prefix, options, |event: &WatchEvent| {
        let line = match event.kind {
            WatchKind::Started => {
                let what = if prefix { "prefix" } else { "key" };
                eprintln!(
                    "watching {what} {} from revision {}",
                    show(key),
                    event.revision + 1
                );
                return true;
            }
            WatchKind::Put => format!(
                "{} PUT {} {}\n",
                event.revision,
                show(&event.key),
                show(&event.value)
            ),
            WatchKind::Delete => format!("{} DELETE {}\n", event.revision, show(&event.key)),
        };
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (a pipe into `head`) ends the watch.
        stdout.write_all(line.as_bytes()).is_ok() && stdout.flush().is_ok()
    })
}
