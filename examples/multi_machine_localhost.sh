#!/usr/bin/env bash
# The multi-machine commands, tried on one machine: a server and two clients as separate
# commands, as you would start them on three hosts (replace 127.0.0.1 with the server's
# address and drop --shard auto when each client has its own data). On loopback no keys are
# needed; across machines, start from `splitfed keys` (see the README).
set -euo pipefail
splitfed=${SPLITFED:-.venv/bin/splitfed}
out=runs/example-server-$(date +%Y%m%d-%H%M%S)  # a run folder is never reused
$splitfed server sflv1 --clients 2 --epochs 5 --address tcp://127.0.0.1:5555 --out "$out" &
server=$!
for i in 0 1; do
  $splitfed client --server tcp://127.0.0.1:5555 --name "site-$i" --shard auto &
done
wait "$server"
wait
echo "results: $out/summary.json"
