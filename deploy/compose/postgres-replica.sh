#!/bin/sh
# The postgres-replica container's entrypoint: a hot standby of the postgres service,
# streaming its WAL, where the servers' read-model queries go
# (REGISTRY_READ_DATABASE_URL; docs/operations.md, "Read replica").
#
#   sh postgres-replica.sh postgres [-c NAME=VALUE ...]
#
# On the first start (no cluster in $PGDATA) it copies the primary with pg_basebackup
# -R, which writes standby.signal and primary_conninfo, streaming the WAL of the copy
# through a physical replication slot (made here if the primary lacks it: a replica
# rebuilt from an empty volume takes the old one up again), so the primary keeps every
# segment the standby has not received, within max_slot_wal_keep_size. The copy is made
# beside $PGDATA and renamed into place when complete: a start interrupted halfway
# copies again instead of running a partial cluster. Every start then runs the image's
# own entrypoint, which finds the cluster and starts it (as a standby, it only replays).
#
# It connects as $DB_USER to $DB_HOST:$DB_PORT (the variables registry-run.sh reads),
# with the password in the file $DB_PASSWORD_FILE (the postgres_password secret). The
# password reaches libpq through a password file at $PGPASSFILE (a tmpfs), rewritten
# at every start, which primary_conninfo names: the password is written neither in
# the compose file nor in the replica's volume.
set -eu

: "${PGDATA:?}" "${PGPASSFILE:?}" "${DB_HOST:?}" "${DB_USER:?}" "${DB_NAME:?}"
: "${DB_PASSWORD_FILE:?DB_PASSWORD_FILE must name the database password file}"
port=${DB_PORT:-5432}
slot=${REPLICATION_SLOT:-registry_replica}

# host:port:database:user:password, with \ and : escaped (libpq's password file).
umask 077
password=$(sed -e 's/[\\:]/\\&/g' "$DB_PASSWORD_FILE")
printf '%s:%s:*:%s:%s\n' "$DB_HOST" "$port" "$DB_USER" "$password" > "$PGPASSFILE"
unset password

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    partial="$PGDATA.partial"
    rm -rf "$partial"
    echo "postgres-replica: no cluster in $PGDATA: copying $DB_HOST:$port (slot $slot)"
    psql -X -q -v ON_ERROR_STOP=1 --no-password -h "$DB_HOST" -p "$port" -U "$DB_USER" \
        -d "$DB_NAME" -v slot="$slot" <<'SQL'
SELECT pg_create_physical_replication_slot(:'slot', true)
WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = :'slot');
SQL
    pg_basebackup --no-password -h "$DB_HOST" -p "$port" -U "$DB_USER" -D "$partial" \
        -R -X stream -S "$slot" -c fast
    if [ -d "$PGDATA" ]; then
        rmdir "$PGDATA"  # empty: no PG_VERSION, and a cluster is never left half-made here
    fi
    mv "$partial" "$PGDATA"
    echo "postgres-replica: copied; starting as a hot standby"
fi
exec docker-entrypoint.sh "$@"
