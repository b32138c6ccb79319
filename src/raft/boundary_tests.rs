//! STYLE C.4 as a test: the consensus core must stay sans-IO, so its sources
//! may not mention sockets, files, the event loop, clocks, ambient randomness
//! or printing.

/// Goal: fail the build's tests if any file under src/raft uses a forbidden API.
/// Method: read every `.rs` file of the directory tree and search for the names.
#[test]
fn core_has_no_io_clock_or_ambient_randomness() {
    let forbidden = [
        "std::net",
        "std::fs",
        "mio",
        "Instant::now",
        "SystemTime",
        "thread_rng",
        "println!",
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft");
    let mut stack = vec![root];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/raft is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("boundary_tests.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source is readable");
            for word in forbidden {
                assert!(!text.contains(word), "{} mentions `{word}`", path.display());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "expected the raft sources, found {checked} files"
    );
}
