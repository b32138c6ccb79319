#!/usr/bin/env python3
"""A million keys with TTLs expire without stalling the loop (issue 19 §1).

Usage: benches/ttl_expiry.py BIN_DIR CLUSTER_DIR [KEYS]   (BIN_DIR: target/release)

Starts `raftkv-server local --dir CLUSTER_DIR`, writes KEYS keys (default 1,000,000)
with one `SET k v PXAT t` each through `redis-cli --pipe` to the leader, t being 60 s
after the leader's TIME, then waits until INFO stats `expired_keys` reaches KEYS.
Prints how long after t the last key was deleted, and the leader's loop turns from the
end of the writes to then, and how many took over 100 ms (its
`raftkv_loop_turn_duration_seconds` histogram on /metrics). Needs redis-cli.
"""
import json, os, re, subprocess, sys, time, urllib.request, tomllib
bin_dir = sys.argv[1]; d = sys.argv[2]; n = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
server = subprocess.Popen([f"{bin_dir}/raftkv-server", "local", "--dir", d],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
try:
    deadline = time.time() + 30
    while not os.path.exists(f"{d}/node-3.toml") and time.time() < deadline: time.sleep(0.2)
    time.sleep(1)
    cfg = {i: tomllib.load(open(f"{d}/node-{i}.toml", "rb")) for i in (1, 2, 3)}
    addrs = ",".join(c["listen_client"] for c in cfg.values())
    for _ in range(100):
        out = subprocess.run([f"{bin_dir}/raftkv-cli", "--cluster", addrs, "status", "--json"],
                             capture_output=True, text=True)
        try:
            st = json.loads(out.stdout)
            leader = next((x["id"] for x in st["nodes"] if x.get("role") == "leader"), None)
        except Exception: leader = None
        if leader: break
        time.sleep(0.3)
    if isinstance(leader, dict): leader = leader.get("id")
    c = cfg[int(leader)]
    rhost, rport = c["listen_redis"].rsplit(":", 1); http = c["listen_http"]
    def metrics():
        text = urllib.request.urlopen(f"http://{http}/metrics", timeout=10).read().decode()
        le = float(re.search(r'raftkv_loop_turn_duration_seconds_bucket\{le="0.1"\} (\S+)', text).group(1))
        cnt = float(re.search(r'raftkv_loop_turn_duration_seconds_count (\S+)', text).group(1))
        return cnt, le
    def rcli(*args):
        return subprocess.run(["redis-cli", "-h", rhost, "-p", rport, *args], capture_output=True, text=True).stdout.strip()
    now_s = int(rcli("TIME").split()[0])
    at = str(now_s * 1000 + 60_000)
    proto = bytearray()
    for i in range(n):
        k = f"ttl:{i}"
        proto += f"*5\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n$1\r\nv\r\n$4\r\nPXAT\r\n${len(at)}\r\n{at}\r\n".encode()
    t0 = time.time()
    r = subprocess.run(["redis-cli", "-h", rhost, "-p", rport, "--pipe"], input=bytes(proto), capture_output=True)
    written = time.time() - t0
    print("pipe:", r.stdout.decode().strip().splitlines()[-1:], f"written in {written:.1f} s")
    print("dbsize", rcli("DBSIZE"))
    before = metrics()
    # wait until expiry time passes and all are deleted
    while True:
        info = rcli("INFO", "stats")
        m = re.search(r"expired_keys:(\d+)", info)
        if m and int(m.group(1)) >= n: break
        time.sleep(0.2)
    lag = time.time() - int(at) / 1000
    after = metrics()
    long_turns = (after[0] - after[1]) - (before[0] - before[1])
    print(f"{n} keys: the last deleted {lag:.1f} s after their expiry time; "
          f"leader turns from the end of the writes {after[0]-before[0]:.0f}, over 100 ms: {long_turns:.0f}")
    print("load", open("/proc/loadavg").read().strip())
finally:
    server.terminate()
    try: server.wait(20)
    except Exception: server.kill()
