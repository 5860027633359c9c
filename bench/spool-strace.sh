#!/usr/bin/env bash
# Shows with strace, for one message, the order of the system calls between its last byte and
# its reply: the record appended to the spool log (pwrite64 on spool/log/<n>.seg), that
# segment's fdatasync, and only then the "250 2.0.0 Ok: queued as" written to the client
# (docs/src/smtp.md). (A message over 256 KiB is instead fsynced, renamed into queue/ and the
# directory fsynced.)
# Usage: bench/spool-strace.sh   (builds nothing: uses target/release/postern or $POSTERN_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${POSTERN_BIN:-target/release/postern}
[ -x "$BIN" ] || { echo "build it first: cargo build --release -p postern" >&2; exit 2; }
command -v strace >/dev/null || apt-get install -y -qq strace >/dev/null
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
"$BIN" dev --data-dir "$dir" --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
  --smtp-listen 127.0.0.1:0 --worker-http-listen 127.0.0.1:0 2> "$dir/log" &
pid=$!
for _ in $(seq 100); do grep -q "policy applied" "$dir/log" 2>/dev/null && break; sleep 0.1; done
smtp=$(sed -n 's/.*dev worker listening smtp=\([^ ]*\).*/\1/p' "$dir/log" | head -1)
strace -f -tt -y -s 60 -e trace=fsync,fdatasync,pwrite64,rename,renameat,renameat2,write,sendto,sendmsg \
  -p "$pid" -o "$dir/trace" 2>/dev/null &
tracer=$!
sleep 0.5
python3 - "$smtp" <<'PY'
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
with smtplib.SMTP(host, int(port)) as s:
    s.sendmail("a@sender.example", ["b@rcpt.example"], "Subject: strace\r\n\r\nbody\r\n")
PY
sleep 0.5
kill "$tracer"; wait "$tracer" 2>/dev/null || true
# The message's own calls: from its record in the log to the 250.
grep -E 'spool/(log|incoming|queue)|queued as' "$dir/trace" | grep -E 'pwrite64|fsync|fdatasync|rename|queued as' | sed -E 's/^[0-9]+ +//'
