"""Pub/sub and keyspace notifications through redis-py against a raftkv cluster, as
tests/redis_pubsub.rs runs it.

Usage: redis_py_pubsub.py PUBLISHER_HOST:PORT SUBSCRIBER_HOST:PORT PATTERN_HOST:PORT
(three different nodes).

Checks, raising AssertionError on the first difference from Redis:
- a RESP2 subscriber (protocol=2) on one node receives what is PUBLISHed on another,
  in order; a RESP3 pattern subscriber (redis-py's default protocol, push frames) on
  the third node receives it as a pmessage; PUBLISH answers the publisher node's count;
- PUBSUB CHANNELS / NUMSUB / NUMPAT answer for the node asked;
- CONFIG SET notify-keyspace-events KEA on the subscriber's node makes a SET, INCR and
  DEL made on the publisher's node arrive as __keyspace@0__ / __keyevent@0__ messages.
Prints `FIGURE name=value` lines (milliseconds) for the test to report.
"""

import sys
import time

import redis

ROUND_TRIPS = 200


def connect(addr, protocol):
    host, port = addr.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), protocol=protocol)


def next_message(pubsub, timeout=5.0):
    """The next message (not a subscription confirmation), within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            return message
    raise AssertionError("no message within %.1fs" % timeout)


def subscribed(pubsub, count):
    """Waits for `count` subscription confirmations."""
    seen = 0
    deadline = time.monotonic() + 5
    while seen < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            assert message["type"] in ("subscribe", "psubscribe"), message
            seen += 1
    assert seen == count, "confirmations: %d of %d" % (seen, count)


def check_publish_across_nodes(publisher, sub_node, pattern_node):
    sub = sub_node.pubsub()
    sub.subscribe("news")
    subscribed(sub, 1)
    psub = pattern_node.pubsub()
    psub.psubscribe("ne*")
    subscribed(psub, 1)
    # Redis Cluster's answer: the receivers on the node that took the PUBLISH.
    assert publisher.publish("news", "hello") == 0
    message = next_message(sub)
    assert message == {"type": "message", "pattern": None, "channel": b"news",
                       "data": b"hello"}, message
    message = next_message(psub)
    assert message == {"type": "pmessage", "pattern": b"ne*", "channel": b"news",
                       "data": b"hello"}, message
    assert sub_node.publish("news", "local") == 1
    assert next_message(sub)["data"] == b"local"
    assert next_message(psub)["data"] == b"local"
    for i in range(20):
        publisher.publish("news", str(i))
    got = [next_message(sub)["data"] for _ in range(20)]
    assert got == [str(i).encode() for i in range(20)], got
    for _ in range(20):
        next_message(psub)
    assert sub_node.pubsub_channels() == [b"news"]
    assert sub_node.pubsub_numsub("news", "other") == [(b"news", 1), (b"other", 0)]
    assert pattern_node.pubsub_numpat() == 1
    assert publisher.pubsub_numpat() == 0
    return sub, psub


def measure_round_trips(publisher, sub):
    times = []
    for i in range(ROUND_TRIPS):
        start = time.monotonic()
        publisher.publish("news", "rt%d" % i)
        message = next_message(sub)
        times.append((time.monotonic() - start) * 1000)
        assert message["data"] == b"rt%d" % i, message
    times.sort()
    print("FIGURE pubsub_round_trip_ms_p50=%.2f" % times[len(times) // 2])
    print("FIGURE pubsub_round_trip_ms_p99=%.2f" % times[int(len(times) * 0.99)])


def check_keyspace_notifications(publisher, sub_node):
    assert sub_node.config_get("notify-keyspace-events") == {"notify-keyspace-events": ""}
    assert sub_node.config_set("notify-keyspace-events", "KEA") is True
    got = sub_node.config_get("notify-keyspace-events")
    assert got == {"notify-keyspace-events": "AKE"}, got
    listener = sub_node.pubsub()
    listener.psubscribe("__keyspace@0__:user:*")
    listener.subscribe("__keyevent@0__:set")
    subscribed(listener, 2)
    publisher.set("user:1", "x")
    publisher.incr("user:2")
    publisher.delete("user:1", "user:none")
    want = [
        ("pmessage", b"__keyspace@0__:user:1", b"set"),
        ("message", b"__keyevent@0__:set", b"user:1"),
        ("pmessage", b"__keyspace@0__:user:2", b"incrby"),
        ("pmessage", b"__keyspace@0__:user:1", b"del"),
    ]
    for w in want:
        message = next_message(listener)
        got = (message["type"], message["channel"], message["data"])
        assert got == w, (got, w)
    assert sub_node.config_set("notify-keyspace-events", "") is True
    publisher.set("user:3", "y")
    publisher.publish("__keyevent@0__:set", "marker")
    message = next_message(listener)
    assert message["data"] == b"marker", "notifications are off again: %s" % message


def main():
    publisher = connect(sys.argv[1], 3)
    sub_node = connect(sys.argv[2], 2)
    pattern_node = connect(sys.argv[3], 3)
    sub, _ = check_publish_across_nodes(publisher, sub_node, pattern_node)
    measure_round_trips(publisher, sub)
    check_keyspace_notifications(publisher, sub_node)
    print("OK")


if __name__ == "__main__":
    main()
