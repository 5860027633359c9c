#!/usr/bin/env bash
# End-to-end relay, Postern against Postfix, on this machine in one run (issue 5): client ->
# server -> sink, 4 KiB messages, 20 sessions, a new connection per message, plaintext and with
# STARTTLS on both legs (outbound level encrypt / Postfix smtp_tls_security_level=encrypt).
# The sink counts what arrives while the load runs and for a drain period after, and reports the
# delay from the client's final dot to arrival (p50/p99).
# Usage (as root; installs and reconfigures Postfix): bench/relay-vs-postfix.sh [seconds] [drain]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
drain=${2:-15}
. bench/common.sh
start_postern
api PUT /v1/settings '{"smtp": {"max_sessions": 2000, "max_sessions_per_ip": 2000}, "delivery": {"nameservers": ["127.0.0.1:9"]}}'

echo "machine: $(nproc) cores; load $secs s + drain $drain s; 20 sessions; 4 KiB messages"
port=2700
for mode in plain tls; do
  arg=""; level=may; pftls=none
  [ "$mode" = tls ] && { arg=tls; level=encrypt; pftls=encrypt; }

  # Postfix relays rcpt.example to the sink.
  port=$((port + 1))
  postfix_relay_to $port $pftls
  "$SINK" 127.0.0.1:$port $((secs + drain)) $arg > "$work/sink" &
  sleep 0.3
  load=$("$LOAD" 127.0.0.1:25 20 "$secs" $arg)
  wait $!
  echo "postfix $mode: intake: $load"
  echo "postfix $mode: $(cat "$work/sink")"
  p=$(sed -E 's/.*: ([0-9]+) messages.*/\1/' "$work/sink")
  postfix stop >/dev/null 2>&1 || true

  # Postern relays rcpt.example to its own sink.
  port=$((port + 1))
  api PUT /v1/relay "{\"domains\": [{\"domain\": \"rcpt.example\", \"next_hop\": \"[127.0.0.1]:$port\"}], \"networks\": [\"127.0.0.0/8\", \"::1/128\"]}"
  api PUT /v1/policy/outbound/default "{\"level\": \"$level\"}"
  sleep 1
  "$SINK" 127.0.0.1:$port $((secs + drain)) $arg > "$work/sink" &
  sleep 0.3
  load=$("$LOAD" 127.0.0.1:12625 20 "$secs" $arg)
  wait $!
  echo "postern $mode: intake: $load"
  echo "postern $mode: $(cat "$work/sink")"
  q=$(sed -E 's/.*: ([0-9]+) messages.*/\1/' "$work/sink")
  echo "$mode: delivered Postern / Postfix = $(python3 -c "print(round($q / max($p, 1), 2))")"
done
