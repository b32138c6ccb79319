//! [`Expiries`]: the expiry times of keys (absolute unix milliseconds), with an index
//! ordered by time for the leader's expiry cycle.
//!
//! Invariants: `by_key` and `by_time` hold the same pairs (`key -> at` and `(at, key)`);
//! every key in them is in the store's map (the store removes a key's expiry time with
//! the key). Nothing here reads a clock: every time comes from a log entry, so replicas
//! that apply the same log hold the same expiry times, and a key whose time has passed
//! stays in the map until an entry deletes it: the leader's `Command::DeleteExpired`, or
//! any `Command::At` that names it, judged at the leader's clock.

use super::bytes::Key;
use super::ordmap::{OrdMap, OrdMapView};

/// The expiry times of the keys that have one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expiries {
    by_key: OrdMap<Key, u64>,
    by_time: OrdMap<(u64, Key), ()>,
}

impl Expiries {
    /// The number of keys with an expiry time.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The expiry time of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        if self.by_key.len() == 0 {
            return None;
        }
        self.by_key.get(key).copied()
    }

    /// Sets the expiry time of `key` to `at`.
    pub(crate) fn set(&mut self, key: &[u8], at: u64) {
        let key = Key::from(key);
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key), ());
    }

    /// Removes the expiry time of `key`, returning it.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<u64> {
        if self.by_key.len() == 0 {
            return None;
        }
        let old = self.by_key.remove(key)?;
        self.by_time.remove(&(old, Key::from(key)));
        Some(old)
    }

    /// Removes every expiry time.
    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
        self.by_time.clear();
    }

    /// Up to `max` keys whose expiry time is not after `now_ms`, earliest first.
    pub(crate) fn due(&self, now_ms: u64, max: usize) -> Vec<Vec<u8>> {
        if self.by_time.len() == 0 {
            return Vec::new();
        }
        self.by_time
            .iter_from(&(0, Key::from(&[][..])))
            .take_while(|((at, _), ())| *at <= now_ms)
            .take(max)
            .map(|((_, key), ())| key.to_vec())
            .collect()
    }

    /// The number of keys whose expiry time is not after `now_ms`: O(that many), no
    /// allocation (a whole-store count while keys wait for their delete).
    pub(crate) fn due_count(&self, now_ms: u64) -> usize {
        if self.by_time.len() == 0 {
            return 0;
        }
        self.by_time
            .iter_from(&(0, Key::from(&[][..])))
            .take_while(|((at, _), ())| *at <= now_ms)
            .count()
    }

    /// A point-in-time view of `key -> at` in key order, for a snapshot.
    pub(crate) fn view(&self) -> OrdMapView<Key, u64> {
        self.by_key.view()
    }

    /// The expiry times `by_key` holds, with the time index rebuilt (snapshot restore).
    pub(crate) fn from_by_key(by_key: OrdMap<Key, u64>) -> Expiries {
        let mut by_time = OrdMap::new();
        for (key, at) in by_key.view().iter() {
            by_time.insert((*at, key.clone()), ());
        }
        Expiries { by_key, by_time }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: expiry times follow Redis through committed entries, judged only by times
    //! the entries carry: set, kept, cleared, moved, conditioned, and deleted by the
    //! leader's `DeleteExpired` or a stamped command only while still due; snapshots
    //! keep them.
    use crate::kv::command::{
        Command, CommandResult, Deadline, ExpireCondition, RmwOp, Session, SetCondition, SetExpiry,
        command_to_vec,
    };
    use crate::kv::{KvConfig, KvStore};

    struct Applier {
        store: KvStore,
        index: u64,
    }

    impl Applier {
        fn new() -> Applier {
            let mut store = KvStore::new(KvConfig::default());
            store.apply(1, &command_to_vec(&Command::RegisterSession));
            Applier { store, index: 1 }
        }

        fn apply(&mut self, command: &Command) -> CommandResult {
            self.index += 1;
            self.store.apply(self.index, &command_to_vec(command))
        }

        /// Runs `op` as the leader stamps it at `now_ms`.
        fn run_at(&mut self, op: RmwOp, now_ms: u64) -> CommandResult {
            let session = Session {
                client_id: 1,
                seq: self.index + 1,
            };
            self.apply(&Command::Rmw { session, op }.stamped(now_ms))
        }

        fn run(&mut self, op: RmwOp) -> CommandResult {
            self.run_at(op, 100)
        }

        fn set(&mut self, key: &str, value: &str, expiry: SetExpiry) -> CommandResult {
            self.run(RmwOp::Set {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                condition: SetCondition::Always,
                get: false,
                expiry,
            })
        }

        fn expire(&mut self, key: &str, at_ms: u64, now_ms: u64, c: ExpireCondition) -> i64 {
            let op = RmwOp::Expire {
                key: key.as_bytes().to_vec(),
                at: Deadline::At(at_ms),
                condition: c,
            };
            match self.run_at(op, now_ms) {
                CommandResult::Integer(n) => n,
                other => panic!("expire gave {other:?}"),
            }
        }

        fn delete_expired(&mut self, now_ms: u64) -> CommandResult {
            let keys = self.store.expired_keys(now_ms, 100);
            self.apply(&Command::DeleteExpired { now_ms, keys })
        }

        fn at(&self, key: &str) -> Option<u64> {
            self.store.expire_at(key.as_bytes())
        }
    }

    fn at(ms: u64) -> SetExpiry {
        SetExpiry::At(Deadline::At(ms))
    }

    #[test]
    fn set_keeps_clears_and_sets_expiry_times() {
        let mut kv = Applier::new();
        kv.set("k", "1", at(1_000));
        assert_eq!(kv.at("k"), Some(1_000));
        kv.set("k", "2", SetExpiry::Keep);
        assert_eq!(kv.at("k"), Some(1_000), "KEEPTTL keeps it");
        kv.run(RmwOp::Append {
            key: b"k".to_vec(),
            value: b"3".to_vec(),
        });
        assert_eq!(kv.at("k"), Some(1_000), "APPEND keeps it (as Redis)");
        kv.set("k", "4", SetExpiry::Clear);
        assert_eq!(kv.at("k"), None, "a plain SET clears it");
        kv.set("k", "5", at(2_000));
        let put = Command::Put {
            session: Session {
                client_id: 1,
                seq: 1_000,
            },
            key: b"k".to_vec(),
            value: b"6".to_vec(),
        };
        kv.apply(&put);
        assert_eq!(kv.at("k"), None, "a native put clears it");
        assert_eq!(kv.store.expiring_len(), 0);
    }

    #[test]
    fn relative_times_count_from_the_leaders_stamp() {
        let mut kv = Applier::new();
        let set = RmwOp::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            condition: SetCondition::Always,
            get: false,
            expiry: SetExpiry::At(Deadline::After(1_500)),
        };
        let stamped = Command::Rmw {
            session: Session {
                client_id: 1,
                seq: 1,
            },
            op: set,
        }
        .stamped(10_000);
        let Command::At { now_ms, command } = &stamped else {
            panic!("not stamped: {stamped:?}");
        };
        assert_eq!(*now_ms, 10_000);
        assert!(
            matches!(&**command, Command::Rmw { op: RmwOp::Set { expiry, .. }, .. }
                if *expiry == at(11_500)),
            "made absolute before it is proposed: {command:?}"
        );
        kv.apply(&stamped);
        assert_eq!(kv.at("k"), Some(11_500));
        let expire = RmwOp::Expire {
            key: b"k".to_vec(),
            at: Deadline::After(500),
            condition: ExpireCondition::Always,
        };
        assert_eq!(kv.run_at(expire, 20_000), CommandResult::Integer(0));
        assert_eq!(kv.store.get(b"k"), None, "expired by 20000: deleted first");
        assert_eq!(kv.store.expired_by_last_apply(), &[b"k".to_vec()][..]);
    }

    #[test]
    fn reads_at_a_time_see_expired_keys_as_absent() {
        let mut kv = Applier::new();
        kv.set("k", "v", at(1_000));
        assert_eq!(kv.store.get_at(b"k", 999), Some(&b"v"[..]));
        assert_eq!(kv.store.get_at(b"k", 1_000), None);
        assert_eq!(
            kv.store.get(b"k"),
            Some(&b"v"[..]),
            "not deleted by reading"
        );
    }

    /// Goal: a stamped command sees a key expired by its time as absent (SET NX takes
    /// an expired lock, INCR starts from 0 without the old expiry time).
    #[test]
    fn stamped_commands_see_expired_keys_as_absent() {
        let mut kv = Applier::new();
        kv.set("lock", "a", at(1_000));
        let take = |token: &str| RmwOp::Set {
            key: b"lock".to_vec(),
            value: token.as_bytes().to_vec(),
            condition: SetCondition::Absent,
            get: false,
            expiry: SetExpiry::At(Deadline::After(30_000)),
        };
        assert_eq!(kv.run_at(take("b"), 999), CommandResult::Unchanged);
        assert_eq!(kv.run_at(take("b"), 1_000), CommandResult::Ok);
        assert_eq!(kv.store.get(b"lock"), Some(&b"b"[..]));
        assert_eq!(kv.at("lock"), Some(31_000));
        kv.set("n", "41", at(2_000));
        let incr = RmwOp::IncrBy {
            key: b"n".to_vec(),
            delta: 1,
        };
        assert_eq!(kv.run_at(incr, 2_000), CommandResult::Integer(1));
        assert_eq!(kv.at("n"), None);
    }

    #[test]
    fn a_whole_store_count_leaves_out_expired_keys() {
        let mut kv = Applier::new();
        kv.set("a", "v", at(1_000));
        kv.set("b", "v", at(2_000));
        kv.set("c", "v", SetExpiry::Clear);
        let query = crate::kv::RangeQuery {
            count_only: true,
            ..crate::kv::RangeQuery::default()
        };
        let count = |now_ms| kv.store.range_at(&query, now_ms).count;
        assert_eq!((count(0), count(999), count(1_000)), (3, 3, 2));
        assert_eq!(count(5_000), 1);
    }

    #[test]
    fn expire_conditions_follow_redis() {
        let mut kv = Applier::new();
        use ExpireCondition::*;
        assert_eq!(kv.expire("absent", 5_000, 100, Always), 0);
        kv.set("k", "v", SetExpiry::Clear);
        assert_eq!(kv.expire("k", 5_000, 100, HasExpiry), 0, "XX without one");
        assert_eq!(
            kv.expire("k", 5_000, 100, EarlierThanOne),
            0,
            "XX LT without one"
        );
        assert_eq!(kv.expire("k", 5_000, 100, Later), 0, "GT: none is infinite");
        assert_eq!(
            kv.expire("k", 5_000, 100, Earlier),
            1,
            "LT: none is infinite"
        );
        assert_eq!(kv.at("k"), Some(5_000));
        assert_eq!(kv.expire("k", 6_000, 100, NoExpiry), 0, "NX with one");
        assert_eq!(kv.expire("k", 4_000, 100, Later), 0);
        assert_eq!(kv.expire("k", 6_000, 100, Later), 1);
        assert_eq!(kv.expire("k", 7_000, 100, Earlier), 0);
        assert_eq!(kv.expire("k", 7_000, 100, EarlierThanOne), 0);
        assert_eq!(kv.expire("k", 3_000, 100, HasExpiry), 1);
        assert_eq!(kv.at("k"), Some(3_000));
        assert_eq!(kv.expire("k", 9_000, 3_000, Always), 0, "expired by now_ms");
        kv.set("k", "v", SetExpiry::Clear);
        assert_eq!(kv.expire("k", 50, 100, Always), 1, "a past time deletes");
        assert_eq!(kv.store.get(b"k"), None);
        assert_eq!(kv.at("k"), None);
    }

    #[test]
    fn persist_and_getex_change_a_live_expiry_time_only() {
        let mut kv = Applier::new();
        kv.set("k", "v", at(1_000));
        let persist = || RmwOp::Persist { key: b"k".to_vec() };
        assert_eq!(kv.run_at(persist(), 999), CommandResult::Integer(1));
        assert_eq!(kv.at("k"), None);
        assert_eq!(kv.run_at(persist(), 999), CommandResult::Integer(0));
        let getex = |expiry| RmwOp::GetEx {
            key: b"k".to_vec(),
            expiry,
        };
        let value = CommandResult::Value(Some(b"v".to_vec()));
        assert_eq!(kv.run(getex(at(5_000))), value);
        assert_eq!(kv.at("k"), Some(5_000));
        assert_eq!(kv.run(getex(SetExpiry::Keep)), value);
        assert_eq!(kv.at("k"), Some(5_000));
        assert_eq!(kv.run(getex(SetExpiry::Clear)), value);
        assert_eq!(kv.at("k"), None);
        assert_eq!(
            kv.run(getex(at(50))),
            value,
            "a past time: read, then deleted"
        );
        assert_eq!(kv.store.get(b"k"), None);
        assert_eq!(kv.run(getex(at(5_000))), CommandResult::Value(None));
    }

    #[test]
    fn delete_expired_spares_keys_set_again() {
        let mut kv = Applier::new();
        kv.set("a", "1", at(1_000));
        kv.set("b", "1", at(1_500));
        kv.set("c", "1", at(3_000));
        assert_eq!(
            kv.store.expired_keys(2_000, 100),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(kv.store.expired_keys(2_000, 1), vec![b"a".to_vec()]);
        // The leader judged at 2000 and proposed a and b; b is set again before the
        // delete is applied.
        let due = kv.store.expired_keys(2_000, 100);
        kv.set("b", "2", at(5_000));
        let deleted = kv.apply(&Command::DeleteExpired {
            now_ms: 2_000,
            keys: due,
        });
        assert_eq!(deleted, CommandResult::Integer(1));
        assert_eq!(kv.store.expired_by_last_apply(), &[b"a".to_vec()][..]);
        assert_eq!(kv.store.get(b"a"), None);
        assert_eq!(kv.store.get(b"b"), Some(&b"2"[..]));
        assert_eq!(kv.delete_expired(2_999), CommandResult::Integer(0));
        assert_eq!(kv.delete_expired(3_000), CommandResult::Integer(1));
        assert_eq!(kv.store.len(), 1);
        assert_eq!(kv.store.expired_keys(u64::MAX, 100), vec![b"b".to_vec()]);
    }

    #[test]
    fn rename_moves_copy_copies_and_flush_clears_expiry_times() {
        let mut kv = Applier::new();
        kv.set("a", "1", at(1_000));
        kv.set("b", "2", at(2_000));
        kv.run(RmwOp::Rename {
            from: b"a".to_vec(),
            to: b"b".to_vec(),
            only_if_absent: false,
        });
        assert_eq!((kv.at("a"), kv.at("b")), (None, Some(1_000)));
        assert_eq!(kv.store.expired_keys(u64::MAX, 10), vec![b"b".to_vec()]);
        kv.run(RmwOp::Copy {
            from: b"b".to_vec(),
            to: b"c".to_vec(),
            replace: false,
        });
        assert_eq!(kv.at("c"), Some(1_000));
        kv.run(RmwOp::GetDel { key: b"c".to_vec() });
        assert_eq!(kv.at("c"), None);
        kv.run(RmwOp::FlushAll);
        assert_eq!(kv.store.expiring_len(), 0);
        assert!(kv.store.expired_keys(u64::MAX, 10).is_empty());
    }

    #[test]
    fn snapshots_keep_expiry_times() {
        let mut kv = Applier::new();
        kv.set("a", "1", at(1_000));
        kv.set("b", "2", SetExpiry::Clear);
        kv.set("c", "3", at(500));
        let image = kv.store.snapshot();
        let restored = KvStore::restore(KvConfig::default(), &image).expect("restores");
        assert_eq!(restored.expire_at(b"a"), Some(1_000));
        assert_eq!(restored.expire_at(b"b"), None);
        assert_eq!(
            restored.expired_keys(1_000, 10),
            vec![b"c".to_vec(), b"a".to_vec()]
        );
        assert_eq!(restored.snapshot(), image, "equal stores, equal bytes");
    }
}
