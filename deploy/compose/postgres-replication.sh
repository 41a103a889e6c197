# Lets the postgres-replica service stream from the primary: compose.yaml mounts this
# file into the postgres service's /docker-entrypoint-initdb.d/, which the image's
# entrypoint sources (bash, `set -e`) once, when it creates the database in an empty
# volume, with its temporary server running.
#
# It adds one pg_hba.conf line: replication connections of the database user
# ($POSTGRES_USER, the same password, the postgres_password secret) from the networks
# the server is on (`samenet`: compose's `backend`), by SCRAM. The image's own lines
# allow replication only from inside the container, and its `host all all all` line
# does not cover replication connections. PostgreSQL 15's defaults need no other
# change: wal_level=replica, max_wal_senders=10, max_replication_slots=10 (the
# replica makes its slot; compose.yaml bounds what the slot may hold with
# max_slot_wal_keep_size).
#
# A volume made before this file existed never runs it: run it once by hand, as the
# server's user, and it reloads the configuration (docs/operations.md, "Read replica"):
#   docker compose -f deploy/compose/compose.yaml exec -u postgres postgres \
#       sh /docker-entrypoint-initdb.d/20-replication.sh
# Running it again changes nothing. Sourced, it must not `exit` nor change the
# entrypoint's shell options, and it keeps its variables to itself.

registry_replication_hba="host replication ${POSTGRES_USER:?} samenet scram-sha-256"
if ! grep -qxF "$registry_replication_hba" "${PGDATA:?}/pg_hba.conf"; then
    printf '%s\n' "$registry_replication_hba" >> "$PGDATA/pg_hba.conf"
    echo "pg_hba.conf: added: $registry_replication_hba"
fi
unset registry_replication_hba
# The running server (the entrypoint's temporary one, or the live one by hand) rereads
# pg_hba.conf; pg_ctl signals it through postmaster.pid, no connection needed.
pg_ctl reload -D "$PGDATA" > /dev/null
