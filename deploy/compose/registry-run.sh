#!/bin/sh
# The entrypoint of the registry containers in compose.yaml: `sh registry-run.sh ARGS`
# runs `registry ARGS` on the compose database.
#
# REGISTRY_DATABASE_URL is built here, inside the container, from DB_HOST, DB_PORT,
# DB_NAME, DB_USER and the password in the file DB_PASSWORD_FILE (a compose secret,
# the same file the postgres service reads): so the password is written in no compose
# file and shows in no `docker inspect`. It is percent-encoded, so any password works.
# With DB_READ_HOST set (the servers: postgres-replica, the streaming standby),
# REGISTRY_READ_DATABASE_URL is built the same way, with the same user, password and
# database, on DB_READ_HOST:DB_READ_PORT: the read-model queries go there, everything
# else stays on DB_HOST (docs/operations.md, "Read replica").
#
# `registry access init` refuses (exit 6, "principals exist already") once the store
# has its first administrator. On a second `docker compose up` that is the expected
# state, so it counts as success here; any other failure still fails the job (and the
# servers, which wait for it, do not start).
set -eu

password_file=${DB_PASSWORD_FILE:?DB_PASSWORD_FILE must name the database password file}
password=$(python3 -c 'import sys, urllib.parse
with open(sys.argv[1], encoding="utf-8") as f:
    print(urllib.parse.quote(f.read().rstrip("\n"), safe=""))' "$password_file")
REGISTRY_DATABASE_URL="postgresql://${DB_USER:?}:${password}@${DB_HOST:?}:${DB_PORT:-5432}/${DB_NAME:?}"
export REGISTRY_DATABASE_URL
if [ -n "${DB_READ_HOST:-}" ]; then
    REGISTRY_READ_DATABASE_URL="postgresql://${DB_USER}:${password}@${DB_READ_HOST}:${DB_READ_PORT:-5432}/${DB_NAME}"
    export REGISTRY_READ_DATABASE_URL
fi
unset password

if [ "${1:-}" = access ] && [ "${2:-}" = init ]; then
    status=0
    output=$(registry "$@" 2>&1) || status=$?
    printf '%s\n' "$output"
    case $output in
        *"principals exist already"*)
            echo "registry access init: the first administrator exists already; nothing to do"
            exit 0 ;;
    esac
    exit "$status"
fi
exec registry "$@"
