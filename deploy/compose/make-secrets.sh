#!/bin/sh
# Makes the secret files compose.yaml reads, for a first run on one machine:
#
#   secrets/postgres-password        a random database password (hex: URL-safe)
#   secrets/ledger-signing-key.pem   the Ed25519 key that signs the ledger's checkpoints
#                                    (only the projection worker gets it)
#   secrets/ledger-public-key.pem    its public half (the servers publish it)
#   secrets/event-key                the key every server, job and worker authenticates
#                                    the events it writes with (64 hex digits)
#   secrets/tls/ca.pem, ca.key       a private CA for this deployment (clients trust ca.pem)
#   secrets/tls/server.pem, .key     the load balancer's certificate, signed by that CA,
#                                    for localhost, 127.0.0.1 and the names in
#                                    $REGISTRY_TLS_NAMES (comma-separated DNS names)
#
#   sh deploy/compose/make-secrets.sh [DIRECTORY]    (default: deploy/compose/secrets)
#
# Nothing is overwritten: a file that exists is kept (a lost or replaced signing key
# cannot be recovered, and checkpoints signed with it would no longer verify). In
# production the database password and the signing key come from your secret store and
# the certificate from your CA; this script is for evaluation and development.
#
# Permissions: the directory is 0700 (other users of this machine cannot reach the
# files); the files the containers read are 0644 because compose mounts them as they
# are, and the registry runs as uid 10001, not as the file's owner. ca.key stays 0600:
# no container gets it.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/secrets}
umask 077
mkdir -p "$dir/tls"
chmod 0700 "$dir"

absent() {
    if [ -e "$1" ]; then
        echo "keeping $1"
        return 1
    fi
    return 0
}

if absent "$dir/postgres-password"; then
    openssl rand -hex 24 > "$dir/postgres-password"
fi
if absent "$dir/ledger-signing-key.pem"; then
    openssl genpkey -algorithm ed25519 -out "$dir/ledger-signing-key.pem"
fi
if absent "$dir/ledger-public-key.pem"; then
    openssl pkey -in "$dir/ledger-signing-key.pem" -pubout -out "$dir/ledger-public-key.pem"
fi
if absent "$dir/event-key"; then
    openssl rand -hex 32 > "$dir/event-key"
fi

tls=$dir/tls
if absent "$tls/ca.pem"; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 825 -sha256 \
        -subj "/CN=Carbon registry deployment CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
if absent "$tls/server.pem"; then
    names="DNS:localhost,IP:127.0.0.1"
    for name in $(echo "${REGISTRY_TLS_NAMES:-}" | tr ',' ' '); do
        names="$names,DNS:$name"
    done
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tls/server.key" -out "$tls/server.csr" -subj "/CN=localhost" 2>/dev/null
    printf '%s\n' "subjectAltName=$names" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > "$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -out "$tls/server.pem" -days 397 -sha256 \
        -extfile "$tls/server.ext" 2>/dev/null
    rm -f "$tls/server.csr" "$tls/server.ext" "$tls/ca.srl"
fi

chmod 0644 "$dir/postgres-password" "$dir/ledger-signing-key.pem" \
    "$dir/ledger-public-key.pem" "$dir/event-key" "$tls/ca.pem" "$tls/server.pem" \
    "$tls/server.key"
chmod 0600 "$tls/ca.key"
echo "secrets in $dir (clients trust $tls/ca.pem)"
