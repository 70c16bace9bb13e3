#!/usr/bin/env bash
# Makes the TLS certificates and bearer tokens that deploy/docker-compose.yml,
# deploy/k8s/ and the systemd units expect (docs/security.md):
#
#   ca.crt                  a private CA (ECDSA P-256, 10 years); ca.key signs, never mounted
#   broker.crt broker.key   conveyord's server certificate (825 days); its names:
#                           conveyord, localhost, 127.0.0.1, ::1, the Kubernetes
#                           Service names in namespace $K8S_NAMESPACE, and $EXTRA_SANS
#   client.crt client.key   a client certificate (CN conveyor-worker) for mTLS
#                           (--tls-client-ca on the broker; off in the examples)
#   tokens                  conveyord --auth-tokens: SHA-256 of each token and its roles
#   worker.token            a token with the `work` role (workers)
#   admin.token             a token with the `submit` and `admin` roles (the CLI)
#
# Usage: deploy/gen-certs.sh [OUT_DIR]     (default: deploy/secrets)
#   K8S_NAMESPACE=conveyor   namespace of the Kubernetes Services named in broker.crt
#   EXTRA_SANS=DNS:a.example,IP:10.0.0.5   more names for broker.crt
#   CONVEYOR=PATH            the conveyor CLI that makes the tokens (default: on PATH,
#                            else build/client/conveyor, else the conveyor image via docker)
#
# A file that exists is kept, so running it again only fills in what is
# missing; delete a file (and what it signs) to make it anew.
#
# Modes: OUT_DIR is 0700, so nobody else on this machine can read it; the
# files in it are 0644 because Docker Compose bind-mounts file secrets with
# their host owner and mode, and the containers run as uid 10001, not as
# you. ca.key stays 0600: nothing mounts it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/secrets}
ns=${K8S_NAMESPACE:-conveyor}
days=825

command -v openssl >/dev/null || { echo "gen-certs: openssl is required" >&2; exit 69; }
# The script works inside OUT_DIR: make a relative CONVEYOR absolute first.
if [[ "${CONVEYOR:-}" == */* && "${CONVEYOR}" != /* ]]; then CONVEYOR=$PWD/$CONVEYOR; fi

find_cli() {
  if [ -n "${CONVEYOR:-}" ]; then echo "$CONVEYOR"; return; fi
  if command -v conveyor >/dev/null; then command -v conveyor; return; fi
  if [ -x "$here/../build/client/conveyor" ]; then echo "$here/../build/client/conveyor"; return; fi
  if command -v docker >/dev/null; then echo "docker run --rm conveyor:latest conveyor"; return; fi
  echo "gen-certs: no conveyor CLI: build it (scripts/build conveyor), set CONVEYOR, or" \
       "build the image (docker build -t conveyor .)" >&2
  exit 69
}

umask 077
mkdir -p "$out"
chmod 0700 "$out"
cd "$out"

if [ ! -f ca.crt ]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout ca.key -out ca.crt -days 3650 -subj "/CN=Conveyor private CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  chmod 0600 ca.key
  chmod 0644 ca.crt
  echo "gen-certs: made ca.crt"
fi

# sign NAME CN EXTENSIONS: NAME.key and NAME.crt signed by the CA.
sign() {
  local name=$1 cn=$2 ext=$3
  [ -f "$name.crt" ] && return 0
  [ -f ca.key ] || { echo "gen-certs: ca.key is missing; cannot sign $name.crt" >&2; exit 66; }
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn" 2>/dev/null
  printf '%s\n' "$ext" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out "$name.crt" -days "$days" -sha256 -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext" ca.srl
  chmod 0644 "$name.key" "$name.crt"
  echo "gen-certs: made $name.crt ($cn)"
}

sans="DNS:conveyord,DNS:localhost,IP:127.0.0.1,IP:::1"
sans+=",DNS:conveyord.$ns,DNS:conveyord.$ns.svc,DNS:conveyord.$ns.svc.cluster.local"
sans+=",DNS:conveyord-0.conveyord-headless.$ns.svc.cluster.local"
[ -n "${EXTRA_SANS:-}" ] && sans+=",$EXTRA_SANS"
sign broker conveyord "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans"
sign client conveyor-worker "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:conveyor-worker"

# token NAME ROLES: NAME.token holds a fresh token; its line goes to `tokens`.
token() {
  local name=$1 roles=$2 cli
  [ -f "$name.token" ] && return 0
  cli=$(find_cli)
  local args=()
  IFS=, read -ra rs <<<"$roles"
  for r in "${rs[@]}"; do args+=(--role "$r"); done
  # -o json: {"token":"cvy_...","line":"sha256:<hex> ROLES # comment"} on
  # stdout, so nothing else on stderr (docker pulls, warnings) lands in a file.
  local json tok line
  json=$($cli -o json token create "${args[@]}" --comment "$name, deploy/gen-certs.sh")
  tok=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$json")
  line=$(sed -n 's/.*"line":"\([^"]*\)".*/\1/p' <<<"$json")
  if [ -z "$tok" ] || [ -z "$line" ]; then
    echo "gen-certs: unexpected output of conveyor token create: $json" >&2
    exit 70
  fi
  printf '%s\n' "$tok" >"$name.token"
  printf '%s\n' "$line" >>tokens
  chmod 0644 "$name.token" tokens
  echo "gen-certs: made $name.token ($roles)"
}
touch tokens
token worker work
token admin submit,admin
chmod 0644 tokens

echo "gen-certs: $out holds the CA, the broker and client certificates and the tokens"
