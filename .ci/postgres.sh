#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the central's tests: initdb in a temp directory, owned by
# an unprivileged user (PostgreSQL refuses to run as root), listening on loopback on a free
# port. Source it: it exports GHATTA_TEST_DATABASE_URL (what the PostgreSQL tests read) and
# GHATTA_TEST_PGDATA (with ctl.sh, which the fault test stops and starts the server with);
# `ghatta_pg_stop` stops the cluster and removes its directory.
#   . .ci/postgres.sh && cargo test -p ghatta-central -j 2; ghatta_pg_stop
pg_bin="${PG_BIN:-/usr/lib/postgresql/15/bin}"
[ -x "$pg_bin/initdb" ] || pg_bin="$(dirname "$(command -v initdb)")"
pg_user="${GHATTA_PG_OS_USER:-postgres}"
as_user() {
    if [ "$(id -u)" = 0 ]; then
        id "$pg_user" >/dev/null 2>&1 || useradd --system --no-create-home "$pg_user"
        su -s /bin/sh "$pg_user" -c "$*"
    else
        sh -c "$*"
    fi
}
GHATTA_TEST_PGDATA="$(mktemp -d /tmp/ghatta-pg.XXXXXX)"
[ "$(id -u)" = 0 ] && chown "$pg_user" "$GHATTA_TEST_PGDATA"
# A free port: ask the kernel for one, then let PostgreSQL bind it.
pg_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
as_user "'$pg_bin/initdb' -D '$GHATTA_TEST_PGDATA/data' -A trust -U ghatta >'$GHATTA_TEST_PGDATA/initdb.log' 2>&1" || {
    cat "$GHATTA_TEST_PGDATA/initdb.log"; echo "postgres.sh: initdb failed"; return 1 2>/dev/null || exit 1; }
as_user "'$pg_bin/pg_ctl' -D '$GHATTA_TEST_PGDATA/data' -l '$GHATTA_TEST_PGDATA/server.log' -w -o \"-p $pg_port -k $GHATTA_TEST_PGDATA -c listen_addresses=127.0.0.1\" start >/dev/null" || {
    cat "$GHATTA_TEST_PGDATA/server.log"; echo "postgres.sh: the server did not start"; return 1 2>/dev/null || exit 1; }
# ctl.sh stop|start: what the fault test runs to take the server away and bring it back
# (stop is `-m immediate`, a crash: recovery must keep every commit that was acked).
cat >"$GHATTA_TEST_PGDATA/ctl.sh" <<CTL
#!/bin/sh
case "\$1" in
stop) opts="-m immediate -w stop" ;;
start) opts="-l '$GHATTA_TEST_PGDATA/server.log' -w -o \"-p $pg_port -k $GHATTA_TEST_PGDATA -c listen_addresses=127.0.0.1\" start" ;;
*) echo "usage: ctl.sh stop|start" >&2; exit 2 ;;
esac
cmd="'$pg_bin/pg_ctl' -D '$GHATTA_TEST_PGDATA/data' \$opts"
if [ "\$(id -u)" = 0 ]; then exec su -s /bin/sh '$pg_user' -c "\$cmd"; else eval "exec \$cmd"; fi
CTL
chmod 755 "$GHATTA_TEST_PGDATA/ctl.sh"
export GHATTA_TEST_PGDATA
export GHATTA_TEST_DATABASE_URL="postgres://ghatta@127.0.0.1:$pg_port/postgres"
echo "postgres.sh: PostgreSQL on 127.0.0.1:$pg_port (data $GHATTA_TEST_PGDATA); GHATTA_TEST_DATABASE_URL=$GHATTA_TEST_DATABASE_URL"
ghatta_pg_stop() {
    [ -n "${GHATTA_TEST_PGDATA:-}" ] || return 0
    as_user "'$pg_bin/pg_ctl' -D '$GHATTA_TEST_PGDATA/data' -m fast -w stop >/dev/null" || true
    rm -rf "$GHATTA_TEST_PGDATA"
    unset GHATTA_TEST_PGDATA GHATTA_TEST_DATABASE_URL
}
