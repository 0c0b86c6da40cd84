#!/usr/bin/env bash
# Runs `fogline bench e2e` against a fresh platform with the sandbox and one without, back to
# back, same settings: the figures of issue 9 point 8.
set -u
cd "$(dirname "$0")/.."
ARGS="$*"
for mode in bwrap off; do
  dir=$(mktemp -d /tmp/fogline-bench-$mode-XXXX)
  http=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  nats=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  mqtt=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  FOGLINE_MODEL_SANDBOX=$mode FOGLINE_DATA_DIR=$dir FOGLINE_HTTP_PORT=$http FOGLINE_NATS_PORT=$nats FOGLINE_MQTT_PORT=$mqtt \
    .venv/bin/fogline up > $dir/up.log 2>&1 &
  pid=$!
  for i in $(seq 1 120); do [ -f $dir/client.json ] && curl -sf http://127.0.0.1:$http/api/v1/health >/dev/null 2>&1 && break; sleep 0.5; done
  echo "=== sandbox: $mode ==="
  FOGLINE_DATA_DIR=$dir .venv/bin/fogline bench e2e $ARGS
  kill -INT $pid; wait $pid
  rm -rf $dir
done
