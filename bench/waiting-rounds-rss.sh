#!/usr/bin/env bash
# Issue 23 point 11: memory held by delivery rounds that wait for a connection slot. Sends
# 2,000 messages of 2 MiB, each to a fast next hop (smtp-sink) and to one that accepts TCP and
# never answers (a Python listener), with per_destination_concurrency 1, so that every round
# waits behind the silent hop after its fast delivery; prints the worker's peak RSS (VmHWM of
# `postern dev`, control plane included) and its RSS once every message reached the fast hop.
# Usage: bash bench/waiting-rounds-rss.sh [messages] [MiB]   (needs a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}; mib=${2:-2}
BIN=target/release/postern; SINK=target/release/smtp-sink
[ -x "$BIN" ] && [ -x "$SINK" ] || { echo "cargo build --release -p postern -p postern-bench first" >&2; exit 2; }
work=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT

"$SINK" 127.0.0.1:17025 3600 > "$work/sink.log" & pids+=($!)
# Accepts connections and never says a word (a next hop that hangs before its greeting).
python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 17026)); s.listen(4096); held = []
while True:
    c, _ = s.accept(); held.append(c)
' & pids+=($!)
"$BIN" dev --data-dir "$work/postern" --http-listen 127.0.0.1:18280 --grpc-listen 127.0.0.1:15251 \
  --public-listen 127.0.0.1:18281 --smtp-listen 127.0.0.1:12725 --worker-http-listen 127.0.0.1:19290 \
  --hostname rss.bench.test 2> "$work/postern.log" & pid=$!; pids+=($pid)
for _ in $(seq 300); do grep -q "policy applied" "$work/postern.log" 2>/dev/null && break; sleep 0.1; done
token=$(cat "$work/postern/admin-token")
api() { curl -sf -X "$1" -H "Authorization: Bearer $token" "http://127.0.0.1:18280$2" -d "$3" >/dev/null; }
api PUT /v1/relay '{"domains": [{"domain": "fast.test", "next_hop": "[127.0.0.1]:17025"}, {"domain": "slow.test", "next_hop": "[127.0.0.1]:17026"}], "networks": ["127.0.0.0/8"]}'
settings=$(curl -sf -H "Authorization: Bearer $token" http://127.0.0.1:18280/v1/settings)
settings=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); s["delivery"]["per_destination_concurrency"]=1; s["delivery"]["greeting_timeout_s"]=3600; s["smtp"]["max_message_size"]=8*1024*1024; print(json.dumps(s))' "$settings")
api PUT /v1/settings "$settings"
for _ in $(seq 100); do
  v=$(curl -sf -H "Authorization: Bearer $token" http://127.0.0.1:18280/v1/workers | python3 -c 'import json,sys; w=json.load(sys.stdin)["items"]; print(w[0]["applied_version"] if w else 0)')
  [ "$v" -ge 4 ] && break; sleep 0.2
done

start=$(date +%s)
python3 - "$n" "$mib" <<'PY'
import smtplib, sys, concurrent.futures
n, mib = int(sys.argv[1]), int(sys.argv[2])
line = b"x" * 998 + b"\r\n"
body = b"Subject: big\r\n\r\n" + line * (mib * 1024 * 1024 // len(line))
def send(chunk):
    s = smtplib.SMTP("127.0.0.1", 12725, timeout=300)
    for i in chunk:
        s.sendmail("a@sender.test", ["r%d@fast.test" % i, "r%d@slow.test" % i], body)
    s.quit()
chunks = [range(k, n, 4) for k in range(4)]
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(send, chunks))
PY
sent=$(date +%s)
# Every message's fast delivery done: the rounds now wait behind the silent hop.
for _ in $(seq 1200); do
  got=$(grep -c "status=sent" "$work/postern.log" || true)
  [ "$got" -ge "$n" ] && break; sleep 0.5
done
waiting=$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:18280/v1/queue?limit=1000" | python3 -c 'import json,sys; q=json.load(sys.stdin)["items"]; print(sum(1 for m in q if m.get("in_delivery")), "of", len(q), "listed")')
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status); hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB; $n messages of $mib MiB, two recipients each"
echo "sent in $((sent - start)) s; fast deliveries: $got of $n"
echo "messages in a delivery round: $waiting"
echo "postern dev RSS with $n rounds waiting: $((rss / 1024)) MiB; peak (VmHWM): $((hwm / 1024)) MiB"
echo "spool on disk: $(du -sm "$work/postern/spool" | cut -f1) MiB"
