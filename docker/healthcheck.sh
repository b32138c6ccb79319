#!/bin/bash
# raftkv-healthcheck: exit 0 when this node's GET /health answers 200 (it knows a
# leader and has applied every entry it knows committed, docs/HTTP.md), else 1.
# The image has no curl: bash's /dev/tcp speaks HTTP/1.0 to 127.0.0.1:RAFTKV_HTTP_PORT
# (default 8080), within `timeout` seconds (the HEALTHCHECK's own --timeout applies too).
set -u
port=${RAFTKV_HTTP_PORT:-8080}
exec 3<> "/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 2 status <&3 || exit 1
case $status in
"HTTP/1."?" 200 "*) exit 0 ;;
*)
    echo "raftkv-healthcheck: ${status%$'\r'}" >&2
    exit 1
    ;;
esac
