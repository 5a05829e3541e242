#!/usr/bin/env bash
# Creates a CA and the certificates a tern cluster uses for mTLS, with openssl:
#   ca.crt/ca.key           the cluster's own CA (keep ca.key offline)
#   server.crt/server.key   the coordinator (SANs: localhost, 127.0.0.1, tern-coordinator, extra names)
#   client.crt/client.key   worker daemons and the CLI
#   USER.token              a bearer token (64 hex characters) per API user, for the cluster
#                           file's auth.tokens[].token_file and auth.token_file; the users are
#                           $TERN_TOKEN_USERS (default: admin)
#   scripts/make-certs.sh DIR [extra-dns-or-ip ...]
set -euo pipefail
DIR=${1:?usage: make-certs.sh DIR [extra SAN ...]}
shift || true
mkdir -p "$DIR"
cd "$DIR"
umask 077
DAYS=${TERN_CERT_DAYS:-825}

SANS="DNS:localhost,IP:127.0.0.1,DNS:tern-coordinator,DNS:tern-coordinator.tern.svc"
for extra in "$@"; do
  if [[ "$extra" =~ ^[0-9.]+$ ]]; then SANS="$SANS,IP:$extra"; else SANS="$SANS,DNS:$extra"; fi
done

openssl req -x509 -newkey rsa:3072 -nodes -keyout ca.key -out ca.crt -days "$DAYS" \
  -subj "/CN=tern cluster CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

issue() {  # name CN extendedKeyUsage SANs
  openssl req -newkey rsa:3072 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s' \
    "$3" "${4:+subjectAltName=$4}" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days "$DAYS" \
    -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server "tern-coordinator" serverAuth "$SANS"
issue client "tern-client" clientAuth ""
for user in ${TERN_TOKEN_USERS:-admin}; do
  openssl rand -hex 32 > "$user.token"
done
chmod 600 ./*.key ./*.token
chmod 644 ./*.crt
openssl verify -CAfile ca.crt server.crt client.crt
echo "make-certs: wrote $(pwd)/{ca,server,client}.{crt,key} and tokens for: ${TERN_TOKEN_USERS:-admin}"
