#!/usr/bin/env bash
# The relay as a new user would measure it (issue 11): Postfix's own load generator
# `smtp-source -s 20 -l 4096` (a new connection per message, plaintext: it has no STARTTLS)
# against `postern dev` relaying to a sink, beside Debian's Postfix relaying the same way, in one
# run on this machine; then our `smtp-load` (which does STARTTLS) the same way, plaintext and
# with STARTTLS on every inbound session. The sink counts what arrives during the load and a
# drain period after it; `delivered/s` is that count over the load's seconds. smtp-load's runs
# also give p50/p99 from the client's final dot to arrival at the sink.
# Usage (as root; installs and reconfigures Postfix): [CASES=...] bench/smtp-source-vs-postfix.sh [seconds] [drain]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
drain=${2:-20}
. bench/common.sh
start_postern
api PUT /v1/settings '{"smtp": {"max_sessions": 2000, "max_sessions_per_ip": 2000}, "delivery": {"nameservers": ["127.0.0.1:9"]}}'

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; $(uname -r); load $secs s + drain $drain s; 20 sessions; 4 KiB messages"
echo "postfix: $(postconf -d mail_version | cut -d' ' -f3)"

# One load against one relay: prints "<generator> <mode> <server>: <sink figures>" and sets $got.
port=2800
run() {
  local server=$1 generator=$2 mode=$3 smtp=$4 arg=""
  [ "$mode" = tls ] && arg=tls
  "$SINK" 127.0.0.1:$port $((secs + drain)) > "$work/sink" &
  local sink=$!
  sleep 0.3
  case $generator in
    smtp-source)
      # -m large, stopped by timeout: as many messages as it can send in $secs.
      timeout "$secs" smtp-source -s 20 -l 4096 -m 10000000 -f sender@load.example \
        -t user@rcpt.example -M load.example "$smtp" >/dev/null 2>&1 || true ;;
    smtp-load) "$LOAD" "$smtp" 20 "$secs" $arg > "$work/load" ;;
  esac
  wait $sink
  got=$(sed -E 's/.*: ([0-9]+) messages.*/\1/' "$work/sink")
  echo "$generator $mode $server: delivered $got in $secs s = $((got / secs))/s; sink: $(cat "$work/sink")${arg:+; intake: $(cat "$work/load")}"
  [ "$generator" = smtp-load ] && [ "$arg" = "" ] && echo "   intake: $(cat "$work/load")"
  return 0
}

postfix_relay() {
  port=$((port + 1))
  postfix_relay_to $port none
}

postern_relay() {
  port=$((port + 1))
  api PUT /v1/relay "{\"domains\": [{\"domain\": \"rcpt.example\", \"next_hop\": \"[127.0.0.1]:$port\"}], \"networks\": [\"127.0.0.0/8\", \"::1/128\"]}"
  sleep 1
}

# CASES picks some, e.g. CASES="smtp-load:tls".
for case in ${CASES:-smtp-source:plain smtp-load:plain smtp-load:tls}; do
  set -- ${case/:/ }
  postfix_relay
  run postfix "$1" "$2" 127.0.0.1:25
  p=$got
  postfix stop >/dev/null 2>&1 || true
  postern_relay
  run postern "$1" "$2" 127.0.0.1:12625
  echo "$1 $2: delivered Postern / Postfix = $(python3 -c "print(round($got / max($p, 1), 2))")"
done
