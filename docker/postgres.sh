#!/bin/sh
# Debian's PostgreSQL in a container: create the cluster in the (volume) data directory on
# first start, with the user, password and database from the environment, then run the
# server in the foreground (so the engine sees it and stops it with SIGTERM: smart shutdown).
set -eu
PG=/usr/lib/postgresql/15/bin
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=lblab}" "${POSTGRES_DB:=lblab}" "${PGPORT:=5432}"
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "lblab-postgres: set POSTGRES_PASSWORD" >&2
    exit 2
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    "$PG/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -A scram-sha-256 --auth-local=trust \
        -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "host all all ::/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    "$PG/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -p $PGPORT" -w start >/dev/null
    "$PG/createdb" -h /run/postgresql -p "$PGPORT" -U "$POSTGRES_USER" "$POSTGRES_DB" \
        >/dev/null
    "$PG/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$PG/postgres" -D "$PGDATA" -c listen_addresses='*' -p "$PGPORT" \
    -c unix_socket_directories=/run/postgresql
