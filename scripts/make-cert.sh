#!/bin/sh
# Make a self-signed certificate and its key for trying fastproxy's TLS (config/tls.json):
#   scripts/make-cert.sh [DIR] [NAME...]
# writes DIR/cert.pem and DIR/key.pem (DIR: config/certs) for the DNS names NAME (localhost),
# plus 127.0.0.1. An ECDSA P-256 key, valid 30 days. For production use a certificate your
# clients trust (your CA, or ACME); rotate it by replacing the files and sending SIGHUP.
set -eu
dir=${1:-config/certs}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- localhost
san="IP:127.0.0.1"
for name in "$@"; do san="$san,DNS:$name"; done
command -v openssl >/dev/null || { echo "make-cert: openssl is not installed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=$1" -addext "subjectAltName=$san" \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
chmod 600 "$dir/key.pem"
echo "make-cert: wrote $dir/cert.pem and $dir/key.pem for $* (and 127.0.0.1), valid 30 days"
