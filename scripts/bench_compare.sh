#!/bin/bash
# Alternating before/after `fogline bench e2e` runs, each against a fresh `fogline up`
# (sandbox off, so both checkouts run their own code), two of each, figures under OUT.
#   scripts/bench_compare.sh BEFORE_CHECKOUT AFTER_CHECKOUT [OUT]
# Each checkout needs its own venv (`make .venv/.fogline-installed` in it).
set -u
before=${1:?the checkout of the code before}; after=${2:?the checkout of the code after}
out=${3:-/tmp/bench-compare}
rm -rf "$out"; mkdir -p "$out"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() {
  label=$1; repo=$2; n=$3
  d=$out/$label-$n; mkdir -p "$d"
  F="$repo/.venv/bin/fogline --data-dir $d/data"
  FOGLINE_MODEL_SANDBOX=off FOGLINE_DISK_RESERVE=64MiB $F up --http-port "$(free_port)" \
    --nats-port "$(free_port)" --mqtt-port "$(free_port)" > "$d/up.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 60); do $F status > /dev/null 2>&1 && break; sleep 1; done
  (cd "$d" && $F bench e2e > "$d/bench.txt" 2>&1; echo "rc=$?" >> "$d/bench.txt")
  kill -TERM $pid; wait $pid
}
for n in 1 2; do
  run before "$before" $n
  run after "$after" $n
done
tail -n 9 "$out"/*/bench.txt
