#!/usr/bin/env bash
# Installs the interop lab's peers (run as root; .ci/run calls it): Debian's Postfix, swaks,
# gnutls-cli, openssl, HAProxy, iproute2 (tests/netns.rs) and Python's dkimpy, and Debian's Exim 4 unpacked beside Postfix (the two
# packages conflict, so Exim's .deb is extracted into /opt/postern-lab/exim4 and run from there
# with its own configuration; it needs its libraries and its Debian-exim user).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get install -y -qq postfix swaks gnutls-bin openssl haproxy iproute2 \
  libdb5.3 libgnutls-dane0 libgnutls30 libidn12 libidn2-0 libnsl2 libpcre2-8-0 >/dev/null
# The machine's own Postfix instance is never started or reconfigured: the lab runs its own.
exim_dir=/opt/postern-lab/exim4
if [ ! -x "$exim_dir/usr/sbin/exim4" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq exim4-daemon-light 2>/dev/null)
  mkdir -p "$exim_dir"
  dpkg-deb -x "$tmp"/exim4-daemon-light_*.deb "$exim_dir"
  rm -rf "$tmp"
fi
id Debian-exim >/dev/null 2>&1 ||
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin Debian-exim
# Fails here if a library is missing.
"$exim_dir/usr/sbin/exim4" -C /dev/null -bV >/dev/null
python3 -m pip install --quiet --disable-pip-version-check "dkimpy==1.1.8"
