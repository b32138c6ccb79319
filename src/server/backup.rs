//! Snapshot saves served by the node (`raftkv-cli snapshot save`, the protocol in
//! [`crate::codec::backup`]): each job encodes a copy-on-write view of the state
//! machine on a helper thread into a snapshot file of its own (the same format as the
//! node's own snapshots, crc over the whole file), and the client then pulls the file
//! in chunks read with `pread`. The loop only starts jobs, polls a channel and reads a
//! bounded chunk per request.
//!
//! Invariants:
//! - at most [`JOBS_MAX`] jobs exist at once (encoding or written), and a chunk is at most
//!   [`CHUNK_BYTES_MAX`] bytes, so a client cannot make the node buffer a file;
//! - a job belongs to the connection that started it: only it may poll, read or finish
//!   it, and the job (its file and directory) is removed when that connection closes,
//!   when it is finished, or when it failed; a node that opens removes every job left
//!   from before (`<data_dir>/backups`).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;

use super::snapshot_thread::encode_into;
use crate::codec::backup::{BackupReply, BackupRequest};
use crate::codec::client::ResponseBody;
use crate::kv::SnapshotView;
use crate::raft::message::SnapshotMeta;
use crate::replica::ClientRef;
use crate::storage::snapshot::{OpenSnapshot, SnapshotError};

/// Jobs at the same time, encoding or written (each holds a view of the state machine
/// or a file of its size).
pub const JOBS_MAX: usize = 2;
/// The largest chunk one read answers.
pub const CHUNK_BYTES_MAX: u64 = 1 << 20;

/// The snapshot saves of one node.
#[derive(Debug)]
pub struct Backups {
    /// `<data_dir>/backups`: one directory per job.
    dir: PathBuf,
    /// Share of one core an encoding may use (`snapshot.encode_cpu_percent`).
    cpu_percent: u32,
    jobs: HashMap<u64, Job>,
    next_id: u64,
}

#[derive(Debug)]
struct Job {
    owner: ClientRef,
    dir: PathBuf,
    state: JobState,
}

#[derive(Debug)]
enum JobState {
    Running(Receiver<Result<OpenSnapshot, SnapshotError>>),
    Ready {
        file: File,
        index: u64,
        term: u64,
        bytes: u64,
    },
}

impl Drop for Job {
    /// The job's directory goes with it. A thread still encoding into it finds it gone
    /// (its rename fails) and, finding no receiver, removes what it left.
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Backups {
    /// The saves of the node whose data directory is `data_dir`, encoding at most at
    /// `cpu_percent` of a core; removes the jobs a previous run left.
    ///
    /// # Errors
    /// A directory left from before could not be removed.
    pub fn new(data_dir: &Path, cpu_percent: u32) -> io::Result<Backups> {
        let dir = data_dir.join("backups");
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(Backups {
            dir,
            cpu_percent,
            jobs: HashMap::new(),
            next_id: 1,
        })
    }

    /// Serves `request` of connection `client`. `view` takes the state machine's view
    /// on the leader (or gives the answer to send instead) and is called for a start
    /// only.
    pub fn serve(
        &mut self,
        client: ClientRef,
        request: BackupRequest,
        view: impl FnOnce() -> Result<(SnapshotMeta, SnapshotView), ResponseBody>,
    ) -> ResponseBody {
        let answer = match request {
            BackupRequest::Start => view().and_then(|(meta, view)| self.start(client, meta, view)),
            BackupRequest::Poll { id } => self.poll(client, id),
            BackupRequest::Read {
                id,
                offset,
                bytes_max,
            } => self.read(client, id, offset, bytes_max),
            BackupRequest::Finish { id } => self.finish(client, id),
        };
        match answer {
            Ok(reply) => ResponseBody::Backup(reply),
            Err(body) => body,
        }
    }

    /// Drops the jobs of a connection that closed.
    pub fn on_client_closed(&mut self, client: ClientRef) {
        if !self.jobs.is_empty() {
            self.jobs.retain(|_, job| job.owner != client);
        }
    }

    fn start(
        &mut self,
        owner: ClientRef,
        meta: SnapshotMeta,
        view: SnapshotView,
    ) -> Result<BackupReply, ResponseBody> {
        // A written job keeps its file on disk until it is finished, so every job
        // counts: one client cannot fill the disk with saves it never reads.
        if self.jobs.len() >= JOBS_MAX {
            return Err(ResponseBody::Unavailable(format!(
                "{} snapshot saves are in progress on this node; retry later",
                self.jobs.len()
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        let dir = self.dir.join(id.to_string());
        fs::create_dir_all(&dir)
            .map_err(|e| refused(format!("creating {}: {e}", dir.display())))?;
        let (done_tx, done) = mpsc::channel();
        let cpu_percent = self.cpu_percent;
        let job_dir = dir.clone();
        thread::Builder::new()
            .name("raftkv-backup".into())
            .spawn(move || {
                let saved = encode_into(&job_dir, &meta, view, cpu_percent);
                if done_tx.send(saved).is_err() {
                    let _ = fs::remove_dir_all(&job_dir);
                }
            })
            .map_err(|e| refused(format!("starting the snapshot save thread: {e}")))?;
        let state = JobState::Running(done);
        self.jobs.insert(id, Job { owner, dir, state });
        log::info!("snapshot save {id} started for a client");
        Ok(BackupReply::Started { id })
    }

    fn poll(&mut self, client: ClientRef, id: u64) -> Result<BackupReply, ResponseBody> {
        let job = self.job(client, id)?;
        let JobState::Running(done) = &job.state else {
            return Ok(job.state.reply());
        };
        let saved = match done.try_recv() {
            Err(TryRecvError::Empty) => return Ok(BackupReply::Running),
            Ok(saved) => saved.map_err(|e| e.to_string()),
            Err(TryRecvError::Disconnected) => Err("the snapshot save thread died".into()),
        };
        match saved.and_then(ready_state) {
            Ok(state) => {
                let reply = state.reply();
                log::info!("snapshot save {id} written: {reply:?}");
                job.state = state;
                Ok(reply)
            }
            Err(message) => {
                self.jobs.remove(&id);
                log::warn!("snapshot save {id} failed: {message}");
                Err(refused(format!("writing the snapshot failed: {message}")))
            }
        }
    }

    fn read(
        &mut self,
        client: ClientRef,
        id: u64,
        offset: u64,
        bytes_max: u64,
    ) -> Result<BackupReply, ResponseBody> {
        let job = self.job(client, id)?;
        let JobState::Ready { file, bytes, .. } = &job.state else {
            return Err(refused(format!("snapshot save {id} is not written yet")));
        };
        let len = bytes_max
            .min(CHUNK_BYTES_MAX)
            .min(bytes.saturating_sub(offset));
        let mut chunk = vec![0; len as usize];
        file.read_exact_at(&mut chunk, offset)
            .map_err(|e| refused(format!("reading snapshot save {id}: {e}")))?;
        Ok(BackupReply::Chunk(chunk))
    }

    fn finish(&mut self, client: ClientRef, id: u64) -> Result<BackupReply, ResponseBody> {
        self.job(client, id)?;
        self.jobs.remove(&id);
        Ok(BackupReply::Finished)
    }

    fn job(&mut self, client: ClientRef, id: u64) -> Result<&mut Job, ResponseBody> {
        match self.jobs.get_mut(&id) {
            Some(job) if job.owner == client => Ok(job),
            _ => Err(refused(format!(
                "no snapshot save {id} on this connection (it ended, failed, or belongs \
                 to another connection); start a new one"
            ))),
        }
    }
}

impl JobState {
    fn reply(&self) -> BackupReply {
        match self {
            JobState::Running(_) => BackupReply::Running,
            JobState::Ready {
                index, term, bytes, ..
            } => BackupReply::Ready {
                index: *index,
                term: *term,
                bytes: *bytes,
            },
        }
    }
}

/// The written snapshot's file, opened for the reads.
fn ready_state(saved: OpenSnapshot) -> Result<JobState, String> {
    let path = saved.image.path();
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes = (file.metadata())
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    Ok(JobState::Ready {
        file,
        index: saved.index,
        term: saved.term,
        bytes,
    })
}

fn refused(message: String) -> ResponseBody {
    ResponseBody::Error(message)
}

#[cfg(test)]
mod tests {
    //! Goal: a job's file arrives whole and verifies, reads past the end are empty, a
    //! job is served only to its connection, and its directory goes with the job
    //! (finished, dropped with its connection, or left by an earlier run).
    use super::*;
    use crate::kv::command::command_to_vec;
    use crate::kv::{Command, CommandResult, KvConfig, KvStore};
    use crate::raft::Configuration;

    const OWNER: ClientRef = ClientRef {
        key: 1,
        generation: 1,
    };
    const OTHER: ClientRef = ClientRef {
        key: 2,
        generation: 1,
    };

    fn store_with(keys: u64) -> KvStore {
        let mut kv = KvStore::new(KvConfig::default());
        let registered = kv.apply(1, &command_to_vec(&Command::RegisterSession));
        let CommandResult::Registered { client_id } = registered else {
            panic!("registered: {registered:?}");
        };
        for i in 0..keys {
            let put = Command::Put {
                session: crate::kv::Session {
                    client_id,
                    seq: i + 1,
                },
                key: format!("key-{i:05}").into_bytes(),
                value: vec![b'v'; 100],
            };
            kv.apply(i + 2, &command_to_vec(&put));
        }
        kv
    }

    fn view_of(kv: &KvStore) -> Result<(SnapshotMeta, SnapshotView), ResponseBody> {
        let meta = SnapshotMeta {
            index: kv.applied_index(),
            term: 3,
            config: Configuration::new([1, 2, 3], []),
        };
        Ok((meta, kv.snapshot_view()))
    }

    fn start(backups: &mut Backups, kv: &KvStore, client: ClientRef) -> ResponseBody {
        backups.serve(client, BackupRequest::Start, || view_of(kv))
    }

    fn started(body: ResponseBody) -> u64 {
        match body {
            ResponseBody::Backup(BackupReply::Started { id }) => id,
            other => panic!("not started: {other:?}"),
        }
    }

    fn wait_ready(backups: &mut Backups, id: u64) -> (u64, u64, u64) {
        for _ in 0..2000 {
            let never = || -> Result<_, ResponseBody> { unreachable!("a poll takes no view") };
            match backups.serve(OWNER, BackupRequest::Poll { id }, never) {
                ResponseBody::Backup(BackupReply::Running) => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                ResponseBody::Backup(BackupReply::Ready { index, term, bytes }) => {
                    return (index, term, bytes);
                }
                other => panic!("poll: {other:?}"),
            }
        }
        panic!("job {id} not written within 10 s");
    }

    fn read(backups: &mut Backups, client: ClientRef, id: u64, offset: u64) -> ResponseBody {
        let request = BackupRequest::Read {
            id,
            offset,
            bytes_max: 1 << 30,
        };
        backups.serve(client, request, || unreachable!("a read takes no view"))
    }

    #[test]
    fn a_job_is_pulled_whole_verifies_and_is_removed_when_finished() {
        let data = tempfile::tempdir().unwrap();
        let mut backups = Backups::new(data.path(), 100).unwrap();
        let kv = store_with(20_000);
        let id = started(start(&mut backups, &kv, OWNER));
        let (index, term, bytes) = wait_ready(&mut backups, id);
        assert_eq!((index, term), (20_001, 3));
        assert!(bytes > CHUNK_BYTES_MAX, "the file spans several chunks");
        let mut file = Vec::new();
        while (file.len() as u64) < bytes {
            match read(&mut backups, OWNER, id, file.len() as u64) {
                ResponseBody::Backup(BackupReply::Chunk(chunk)) => {
                    assert!(!chunk.is_empty() && chunk.len() as u64 <= CHUNK_BYTES_MAX);
                    file.extend_from_slice(&chunk);
                }
                other => panic!("read: {other:?}"),
            }
        }
        assert_eq!(
            read(&mut backups, OWNER, id, bytes),
            ResponseBody::Backup(BackupReply::Chunk(Vec::new())),
            "nothing past the end"
        );
        let copy = data.path().join("copy.snap");
        std::fs::write(&copy, &file).unwrap();
        let opened = crate::storage::snapshot::open(copy).expect("the pulled file verifies");
        assert_eq!((opened.index, opened.term), (index, term));
        let mut restored = Vec::new();
        std::io::Read::read_to_end(&mut opened.image.reader(), &mut restored).unwrap();
        let back = KvStore::restore(KvConfig::default(), &restored).expect("restores");
        assert_eq!(back.len(), 20_000);

        let finish = BackupRequest::Finish { id };
        let answer = backups.serve(OWNER, finish.clone(), || unreachable!());
        assert_eq!(answer, ResponseBody::Backup(BackupReply::Finished));
        assert!(!data.path().join("backups").join(id.to_string()).exists());
        assert!(matches!(
            backups.serve(OWNER, finish, || unreachable!()),
            ResponseBody::Error(_)
        ));
    }

    #[test]
    fn a_job_belongs_to_its_connection_and_goes_when_it_closes() {
        let data = tempfile::tempdir().unwrap();
        let mut backups = Backups::new(data.path(), 100).unwrap();
        let kv = store_with(10);
        let id = started(start(&mut backups, &kv, OWNER));
        wait_ready(&mut backups, id);
        let ResponseBody::Error(message) = read(&mut backups, OTHER, id, 0) else {
            panic!("another connection read the job");
        };
        assert!(message.contains("another connection"), "{message}");
        let dir = data.path().join("backups").join(id.to_string());
        assert!(dir.exists());
        backups.on_client_closed(OTHER);
        assert!(dir.exists(), "another connection's close keeps it");
        backups.on_client_closed(OWNER);
        assert!(!dir.exists());
        assert!(matches!(
            read(&mut backups, OWNER, id, 0),
            ResponseBody::Error(_)
        ));
    }

    #[test]
    fn at_most_two_jobs_exist_at_once_and_a_refusal_takes_no_slot() {
        let data = tempfile::tempdir().unwrap();
        let mut backups = Backups::new(data.path(), 100).unwrap();
        let kv = store_with(10);
        // Jobs stay running until polled, whatever their threads do.
        started(start(&mut backups, &kv, OWNER));
        let second = started(start(&mut backups, &kv, OWNER));
        assert!(matches!(
            start(&mut backups, &kv, OWNER),
            ResponseBody::Unavailable(_)
        ));
        wait_ready(&mut backups, second);
        assert!(
            matches!(
                start(&mut backups, &kv, OWNER),
                ResponseBody::Unavailable(_)
            ),
            "a written job unread still counts"
        );
        let finish = BackupRequest::Finish { id: second };
        backups.serve(OWNER, finish, || unreachable!("a finish takes no view"));
        started(start(&mut backups, &kv, OWNER));
        let refusal = ResponseBody::NotLeader {
            leader_id: 2,
            leader_client_addr: None,
        };
        let asked = backups.serve(OTHER, BackupRequest::Start, || Err(refusal.clone()));
        assert_eq!(asked, refusal, "a follower's answer is passed on");
    }

    #[test]
    fn jobs_left_by_an_earlier_run_are_removed_at_open() {
        let data = tempfile::tempdir().unwrap();
        let left = data.path().join("backups").join("7");
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("snap-x.snap.tmp"), b"half").unwrap();
        Backups::new(data.path(), 100).unwrap();
        assert!(!data.path().join("backups").exists());
    }
}
