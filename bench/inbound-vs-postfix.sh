#!/usr/bin/env bash
# Inbound acceptance, Postern against Postfix, on this machine in one run (issue 4).
# 4 KiB messages, 20 concurrent sessions, a new connection per message, plaintext and with
# STARTTLS on every session; both servers make each message durable before the 250 (Postern:
# fsync, rename, directory fsync; Postfix: its queue file, fsynced by cleanup). Postfix runs
# Debian's package with smtpd_tls_security_level=may and holds the mail (defer_transports=smtp)
# so that only intake is measured; Postern has no delivery yet.
# Usage (as root): bench/inbound-vs-postfix.sh [seconds]   (needs cargo build --release -p postern -p postern-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
settle=${SETTLE:-15}
. bench/common.sh
postconf -e "myhostname = postfix.bench.test" "mydestination =" "inet_interfaces = 127.0.0.1" \
  "inet_protocols = ipv4" "mynetworks = 127.0.0.0/8" "relay_domains = rcpt.example" \
  "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
  "smtpd_tls_security_level = may" "smtpd_tls_cert_file = $work/cert.pem" \
  "smtpd_tls_key_file = $work/key.pem" "defer_transports = smtp" \
  "default_process_limit = 200" "smtpd_client_connection_rate_limit = 0" \
  "smtpd_client_connection_count_limit = 0" "maillog_file = /var/log/postfix-bench.log" \
  "compatibility_level = 3.6"
postsuper -d ALL >/dev/null 2>&1 || true
postfix start >/dev/null 2>&1 || { cat /var/log/postfix-bench.log | tail -5; exit 1; }
sleep 1

start_postern
api PUT /v1/settings '{"smtp": {"max_sessions": 2000, "max_sessions_per_ip": 2000}, "queue": {"first_retry_s": 3600, "max_retry_s": 3600}, "delivery": {"nameservers": ["127.0.0.1:9"]}}'
sleep 1

echo "machine: $(nproc) cores; $secs s per run; 20 sessions; 4 KiB messages"
for mode in plain tls; do
  arg=""; [ "$mode" = tls ] && arg=tls
  # Each server works off what it just accepted (Postfix's qmgr, Postern's queue) before the
  # other is measured, so that neither run pays for the other's backlog.
  postfix_line=$("$LOAD" 127.0.0.1:25 20 "$secs" $arg); sleep "$settle"
  postern_line=$("$LOAD" 127.0.0.1:12625 20 "$secs" $arg); sleep "$settle"
  echo "postfix $postfix_line"
  echo "postern $postern_line"
  p=$(echo "$postfix_line" | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')
  q=$(echo "$postern_line" | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')
  echo "$mode: Postern / Postfix = $(python3 -c "print(round($q / max($p, 1), 2))")"
done
"$LOAD" 127.0.0.1:12625 idle 1000 "$pid"
