"""A small application on redis-py with its default settings (redis-py 8: RESP3 via
HELLO 3) against a raftkv cluster's Redis ports, as tests/redis_clients.rs runs it.

Usage: redis_py_app.py LEADER_HOST:PORT FOLLOWER_HOST:PORT

Checks, raising AssertionError on the first difference from Redis:
- the connection negotiated RESP3 (the server says resp=3 in CLIENT INFO);
- CLIENT ID/INFO/LIST/SETNAME/GETNAME, CONFIG GET, INFO (redis-py's parser), TIME,
  WAIT, COMMAND COUNT answer in the shapes redis-py parses;
- 100k keys written in pipelined MSETs, then SCAN (scan_iter) returns every key at
  least once while other keys are written and deleted, on the leader and through a
  follower (which forwards); KEYS, DBSIZE, TYPE, EXISTS, RENAME/RENAMENX, COPY, UNLINK,
  RANDOMKEY, FLUSHDB behave as Redis;
- a cache with TTLs (SET EX, SETEX, TTL/PTTL, EXPIRE, PERSIST) whose entries expire,
  and a lock with SET NX PX: one holder at a time across two connections (one through
  a follower), released with WATCH/MULTI check-and-delete, and taken over once an
  abandoned lock's PX passes.
Prints `FIGURE name=value` lines (seconds) for the test to report.
"""

import sys
import threading
import time

import redis

KEYS = 100_000


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port))


def text(value):
    """redis-py decodes some replies and not others: compare as text."""
    return value.decode() if isinstance(value, bytes) else value


def check_connect_commands(r):
    assert r.ping() is True
    info = r.client_info()
    assert info["resp"] == "3", f"negotiated protocol: {info}"
    assert info["lib-name"].startswith("redis-py"), info
    assert r.client_id() == int(info["id"])
    assert r.client_setname("app") is True
    assert text(r.client_getname()) == "app"
    listed = r.client_list()
    assert any(c["name"] == "app" and str(c["id"]) == str(info["id"]) for c in listed), listed
    config = {text(k): text(v) for k, v in r.config_get("max*").items()}
    assert config == {"maxmemory": "0", "maxmemory-policy": "noeviction"}, config
    assert {text(k): text(v) for k, v in r.config_get("databases").items()} == {"databases": "1"}
    full = r.info()
    for field in ("redis_version", "redis_mode", "uptime_in_seconds", "connected_clients",
                  "used_memory", "aof_enabled", "role", "raft_role"):
        assert field in full, f"INFO lacks {field}"
    replication = r.info("replication")
    assert replication["role"] == "master", replication
    assert replication["connected_slaves"] == 2, replication
    seconds, micros = r.time()
    assert abs(seconds - time.time()) < 60 and 0 <= micros < 1_000_000
    assert r.command_count() > 20


def load(r, prefix, count):
    pipe = r.pipeline(transaction=False)
    for start in range(0, count, 1000):
        pipe.mset({f"{prefix}{i:06d}": i for i in range(start, min(start + 1000, count))})
    assert all(pipe.execute())


def churn(addr, stop):
    """Writes and deletes other keys while the scan runs."""
    r = connect(addr)
    i = 0
    while not stop.is_set():
        r.set(f"churn:{i}", i)
        r.delete(f"churn:{i - 5}")
        i += 1


def scan_all(r, match, count):
    seen = set()
    for key in r.scan_iter(match=match, count=count):
        seen.add(key)
    return seen


def wait_gone(r, key, limit_s=10.0):
    """Seconds until `key` reads as absent, polling; fails after `limit_s`."""
    started = time.monotonic()
    while r.get(key) is not None:
        assert time.monotonic() - started < limit_s, f"{key} never expired"
        time.sleep(0.05)
    return time.monotonic() - started


def check_cache_and_lock(r, other):
    started = time.monotonic()
    assert r.set("cache:user:1", "alice", ex=2) is True
    assert r.setex("cache:user:2", 100, "bob") is True
    assert r.get("cache:user:1") == b"alice"
    assert 1 <= r.ttl("cache:user:1") <= 2, r.ttl("cache:user:1")
    assert 0 < r.pttl("cache:user:1") <= 2000
    assert r.expire("cache:user:2", 1) is True
    assert r.persist("cache:user:2") is True and r.ttl("cache:user:2") == -1
    assert r.ttl("cache:nope") == -2
    waited = wait_gone(r, "cache:user:1")
    assert time.monotonic() - started >= 1.5, "a 2 s TTL expired early"
    print(f"FIGURE ttl_2s_gone_after_s={time.monotonic() - started:.3f}")
    assert waited > 0 and r.exists("cache:user:1") == 0
    assert r.get("cache:user:2") == b"bob", "PERSIST kept the key"

    # The lock: one holder at a time, whichever node a client talks to.
    assert r.set("lock:job", "token-a", nx=True, px=30000) is True
    assert other.set("lock:job", "token-b", nx=True, px=30000) is None
    assert 29000 < r.pttl("lock:job") <= 30000
    with r.pipeline() as p:  # release only our own lock
        p.watch("lock:job")
        assert p.get("lock:job") == b"token-a"
        p.multi()
        p.delete("lock:job")
        assert p.execute() == [1]
    assert other.set("lock:job", "token-b", nx=True, px=30000) is True
    assert r.get("lock:job") == b"token-b"
    # An abandoned lock is free once its PX passed.
    assert r.set("lock:short", "token-a", nx=True, px=500) is True
    assert other.set("lock:short", "token-b", nx=True, px=500) is None
    wait_gone(other, "lock:short")
    assert other.set("lock:short", "token-b", nx=True, px=500) is True


def main():
    leader, follower = sys.argv[1], sys.argv[2]
    r = connect(leader)
    check_connect_commands(r)
    assert r.flushdb() is True
    check_cache_and_lock(r, connect(follower))
    assert r.flushdb() is True
    started = time.monotonic()
    load(r, "scan:", KEYS)
    print(f"FIGURE load_100k_s={time.monotonic() - started:.3f}")
    # raftkv answers WAIT at once (it never blocks): ask until both replicas caught up.
    replicas = 0
    for _ in range(200):
        replicas = r.wait(2, 0)
        if replicas == 2:
            break
        time.sleep(0.05)
    assert replicas == 2, f"WAIT: {replicas} replicas hold the writes"
    assert r.dbsize() == KEYS

    stop = threading.Event()
    writer = threading.Thread(target=churn, args=(leader, stop))
    writer.start()
    try:
        started = time.monotonic()
        seen = scan_all(r, "scan:*", 1000)
        print(f"FIGURE scan_100k_s={time.monotonic() - started:.3f}")
        started = time.monotonic()
        seen_follower = scan_all(connect(follower), None, 1000)
        print(f"FIGURE scan_100k_via_follower_s={time.monotonic() - started:.3f}")
    finally:
        stop.set()
        writer.join()
    want = {f"scan:{i:06d}".encode() for i in range(KEYS)}
    assert seen == want, f"SCAN missed {len(want - seen)} keys"
    assert want <= seen_follower, f"SCAN via a follower missed {len(want - seen_follower)}"

    started = time.monotonic()
    keys = r.keys("scan:*")
    print(f"FIGURE keys_100k_s={time.monotonic() - started:.3f}")
    assert len(keys) == KEYS and set(keys) == want
    assert r.keys("scan:00001?") == [f"scan:{i:06d}".encode() for i in range(10, 20)]

    assert text(r.type("scan:000001")) == "string"
    assert text(r.type("nope")) == "none"
    assert r.exists("scan:000001", "scan:000002", "nope") == 2
    assert r.rename("scan:000001", "renamed") is True
    assert r.get("renamed") == b"1" and r.get("scan:000001") is None
    assert r.renamenx("renamed", "scan:000002") is False
    try:
        r.rename("nope", "x")
        raise AssertionError("RENAME of a missing key succeeded")
    except redis.ResponseError as e:
        assert str(e) == "no such key", str(e)
    assert r.copy("renamed", "copied") is True
    assert r.unlink("copied", "nope") == 1
    assert r.randomkey() is not None
    assert r.flushdb() is True
    assert r.dbsize() == 0
    assert r.randomkey() is None
    assert r.scan(0) == (0, [])
    print("OK")


if __name__ == "__main__":
    main()
