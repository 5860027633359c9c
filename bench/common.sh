# Shared by the Postern-against-Postfix benchmarks (sourced, not run): checks the binaries,
# installs Debian's Postfix if missing and stops it, makes a work directory (removed on exit,
# with Postfix and Postern stopped) holding a throwaway certificate, and starts
# `postern dev` with `api METHOD PATH BODY` to configure it.
# POSTERN_BIN: another build to measure (a before/after comparison in one run).
BIN=${POSTERN_BIN:-target/release/postern}
LOAD=target/release/smtp-load
SINK=target/release/smtp-sink
[ -x "$BIN" ] && [ -x "$LOAD" ] && [ -x "$SINK" ] || { echo "cargo build --release -p postern -p postern-bench first" >&2; exit 2; }
if ! command -v postfix >/dev/null; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
work=$(mktemp -d)
pid=""
trap 'postfix stop >/dev/null 2>&1 || true; [ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" \
  -out "$work/cert.pem" -days 2 -subj "/CN=localhost" >/dev/null 2>&1
chmod 644 "$work/key.pem" "$work/cert.pem"; chmod 755 "$work"
postfix stop >/dev/null 2>&1 || true
# "No configuration" installs leave main.cf out; start from Debian's shipped one.
[ -f /etc/postfix/main.cf ] || cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf

# Postern on 127.0.0.1:12625 (SMTP) and :18180 (REST).
start_postern() {
  "$BIN" dev --data-dir "$work/postern" --http-listen 127.0.0.1:18180 --grpc-listen 127.0.0.1:15151 \
    --smtp-listen 127.0.0.1:12625 --worker-http-listen 127.0.0.1:19190 --hostname postern.bench.test 2> "$work/postern.log" &
  pid=$!
  for _ in $(seq 100); do grep -q "policy applied" "$work/postern.log" 2>/dev/null && break; sleep 0.1; done
  token=$(cat "$work/postern/admin-token")
}

api() { curl -s -X "$1" -H "Authorization: Bearer $token" "http://127.0.0.1:18180$2" -d "$3" >/dev/null; }

# Configures and starts Postfix relaying rcpt.example to the sink on 127.0.0.1:$1, with
# smtp_tls_security_level $2 towards it.
postfix_relay_to() {
  postconf -e "myhostname = postfix.bench.test" "mydestination =" "inet_interfaces = 127.0.0.1" \
    "inet_protocols = ipv4" "mynetworks = 127.0.0.0/8" "relay_domains = rcpt.example" \
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
    "smtpd_tls_security_level = may" "smtpd_tls_cert_file = $work/cert.pem" \
    "smtpd_tls_key_file = $work/key.pem" "defer_transports =" \
    "transport_maps =" "relay_transport = relay:[127.0.0.1]:$1" \
    "smtp_tls_security_level = $2" "default_process_limit = 200" \
    "smtpd_client_connection_rate_limit = 0" "smtpd_client_connection_count_limit = 0" \
    "maillog_file = /var/log/postfix-bench.log" "compatibility_level = 3.6"
  postsuper -d ALL >/dev/null 2>&1 || true
  postfix start >/dev/null 2>&1 || postfix reload >/dev/null 2>&1
  sleep 1
}
