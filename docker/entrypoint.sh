#!/bin/sh
# raftkv-entrypoint: runs raftkv-server in a container, from a mounted config file or
# from environment variables that name the node and its peers.
#
# With arguments that are not options (`raftkv-cli status`, `sh`), runs them instead.
# Otherwise, the config is, in this order:
#   1. RAFTKV_CONFIG, a mounted TOML file (docs/CONFIG.md), used as it is;
#   2. a file written to RAFTKV_CONFIG_OUT (default /tmp/raftkv.toml) at every start
#      from these variables (the data directory keeps the state, the file is rewritten):
#      RAFTKV_NODE_ID       this node's id, or `ordinal`: the number N ending the host
#                           name (`raftkv-N`, a StatefulSet pod) plus one.
#      RAFTKV_MEMBERS       the initial members, `ID=PEER_ADDR/CLIENT_ADDR` separated by
#                           commas or spaces. raftkv keeps member addresses as ip:port, so
#                           a host name is resolved here, once, to its first IPv4 address
#                           (waiting up to RAFTKV_RESOLVE_TIMEOUT seconds, default 120):
#                           use names whose address never changes (a Kubernetes Service,
#                           a fixed compose address).
#      RAFTKV_CLUSTER_ID    default 1.
#      RAFTKV_DATA_DIR      default /var/lib/raftkv/data (the image's volume).
#      RAFTKV_REDIS_PORT    default 6379; RAFTKV_HTTP_PORT default 8080; `off`: none.
#      RAFTKV_SELF          `PEER_ADDR/CLIENT_ADDR` of a node that is not among
#                           RAFTKV_MEMBERS: it starts with `--join` (the first member's
#                           client address) and waits for `raftkv-cli member add`.
#      RAFTKV_FSYNC         `always` (default) or `never`.
#   Listeners bind 0.0.0.0 on the ports of the node's own member addresses.
#
# Then it execs raftkv-server, which thus gets the container's signals as PID 1: SIGTERM
# (docker stop, the image's STOPSIGNAL) stops it cleanly.
set -eu

fail() {
    echo "raftkv-entrypoint: $*" >&2
    exit 2
}

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

if [ -n "${RAFTKV_CONFIG:-}" ]; then
    [ -f "$RAFTKV_CONFIG" ] || fail "RAFTKV_CONFIG=$RAFTKV_CONFIG: no such file"
    exec raftkv-server --config "$RAFTKV_CONFIG" "$@"
fi

# HOST:PORT -> IPV4:PORT (an IP address is kept as it is).
resolve() {
    host=${1%:*}
    port=${1##*:}
    [ "$host" != "$1" ] && [ -n "$port" ] || fail "address $1 is not HOST:PORT"
    case $host in
    \[*\])
        echo "$1" # IPv6
        return
        ;;
    *[!0-9.]*) ;; # a name
    *)
        echo "$1" # IPv4
        return
        ;;
    esac
    waited=0
    while :; do
        ip=$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }') || ip=
        if [ -n "$ip" ]; then
            echo "$ip:$port"
            return
        fi
        [ "$waited" -lt "${RAFTKV_RESOLVE_TIMEOUT:-120}" ] ||
            fail "cannot resolve $host within ${RAFTKV_RESOLVE_TIMEOUT:-120} s"
        echo "raftkv-entrypoint: waiting for $host to resolve" >&2
        sleep 1
        waited=$((waited + 1))
    done
}

# The port of an ip:port address.
port_of() { echo "${1##*:}"; }

id=${RAFTKV_NODE_ID:-}
[ -n "$id" ] || fail "set RAFTKV_CONFIG (a config file) or RAFTKV_NODE_ID and RAFTKV_MEMBERS"
if [ "$id" = ordinal ]; then
    host=${HOSTNAME:-$(cat /proc/sys/kernel/hostname)}
    ordinal=${host##*-}
    case $ordinal in
    '' | *[!0-9]*) fail "RAFTKV_NODE_ID=ordinal: host name $host does not end in -N" ;;
    esac
    id=$((ordinal + 1))
fi
case $id in
'' | *[!0-9]* | 0) fail "RAFTKV_NODE_ID=$id: not a node id (a number from 1)" ;;
esac
[ -n "${RAFTKV_MEMBERS:-}" ] || fail "RAFTKV_MEMBERS is not set"

members=
self_peer=
self_client=
first_client=
for member in $(echo "$RAFTKV_MEMBERS" | tr ',' ' '); do
    member_id=${member%%=*}
    addrs=${member#*=}
    peer=${addrs%%/*}
    client=${addrs#*/}
    case $member_id in
    '' | *[!0-9]*) fail "RAFTKV_MEMBERS: $member is not ID=PEER_ADDR/CLIENT_ADDR" ;;
    esac
    [ "$member" != "$member_id" ] && [ "$addrs" != "$peer" ] ||
        fail "RAFTKV_MEMBERS: $member is not ID=PEER_ADDR/CLIENT_ADDR"
    peer=$(resolve "$peer")
    client=$(resolve "$client")
    [ -n "$first_client" ] || first_client=$client
    members="$members
[[members]]
id = $member_id
peer_addr = \"$peer\"
client_addr = \"$client\"
"
    if [ "$member_id" = "$id" ]; then
        self_peer=$peer
        self_client=$client
    fi
done

join=
if [ -z "$self_peer" ]; then
    [ -n "${RAFTKV_SELF:-}" ] ||
        fail "node $id is not in RAFTKV_MEMBERS; set RAFTKV_SELF=PEER_ADDR/CLIENT_ADDR to join"
    self_peer=$(resolve "${RAFTKV_SELF%%/*}")
    self_client=$(resolve "${RAFTKV_SELF#*/}")
    join=$first_client
    # A joining node lists only itself; the leader tells it the rest.
    members="
[[members]]
id = $id
peer_addr = \"$self_peer\"
client_addr = \"$self_client\"
"
fi

listener() {
    case $2 in
    off) ;;
    *[!0-9]* | '') fail "$1: $2 is not a port number or off" ;;
    *) echo "listen_$3 = \"0.0.0.0:$2\"" ;;
    esac
}

config=${RAFTKV_CONFIG_OUT:-/tmp/raftkv.toml}
cat > "$config" <<TOML
# Written by raftkv-entrypoint from the environment at $(date -u +%Y-%m-%dT%H:%M:%SZ).
node_id = $id
cluster_id = ${RAFTKV_CLUSTER_ID:-1}
data_dir = "${RAFTKV_DATA_DIR:-/var/lib/raftkv/data}"
listen_peer = "0.0.0.0:$(port_of "$self_peer")"
listen_client = "0.0.0.0:$(port_of "$self_client")"
$(listener RAFTKV_REDIS_PORT "${RAFTKV_REDIS_PORT:-6379}" redis)
$(listener RAFTKV_HTTP_PORT "${RAFTKV_HTTP_PORT:-8080}" http)
$members
[storage]
fsync = "${RAFTKV_FSYNC:-always}"
TOML

if [ -n "$join" ]; then
    exec raftkv-server --config "$config" --join "$join" "$@"
fi
exec raftkv-server --config "$config" "$@"
