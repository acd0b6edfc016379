#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server, for the sink's PostgreSQL tests.
#
#   scripts/test-postgres.sh                 the sink's Rust tests on both backends
#   scripts/test-postgres.sh COMMAND ARGS…   any command (make test runs the unit and
#                                            integration tests this way)
#
# Installs the Debian `postgresql` package when no server binaries are found (as root, or
# through sudo), makes a cluster in a temporary directory owned by the `postgres` user
# (initdb refuses root), starts it on a free loopback port, exports
# MERCATOR_TEST_POSTGRES_URL and MERCATOR_TEST_POSTGRES_REQUIRED=1 (so that a test that
# cannot reach it fails instead of skipping), runs the command, and stops and removes the
# cluster afterwards, also when the command fails or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -eq 0 ]]; then
    set -- cargo test --locked -p mercator-evidence-sink
fi

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

find_bin() {
    local candidate
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $candidate/initdb && -x $candidate/pg_ctl ]]; then
            echo "$candidate"
            return 0
        fi
    done
    local initdb
    initdb=$(command -v initdb || true)
    if [[ -n $initdb ]]; then dirname "$initdb"; return 0; fi
    return 1
}

if ! PG_BIN=$(find_bin); then
    echo "test-postgres: no PostgreSQL server found; installing the postgresql package" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(find_bin) || { echo "test-postgres: initdb still missing after install" >&2; exit 1; }
fi

# initdb and the server refuse to run as root: run them as an unprivileged user.
if [[ $(id -u) -eq 0 ]]; then
    PG_USER=postgres
    id "$PG_USER" >/dev/null 2>&1 || useradd --system --home-dir /nonexistent "$PG_USER"
    as_pg() { runuser -u "$PG_USER" -- "$@"; }
else
    PG_USER=$(id -un)
    as_pg() { "$@"; }
fi

# Under /tmp, which the postgres user can reach whatever TMPDIR says.
DIR=$(mktemp -d /tmp/mercator-pg.XXXXXX)
chmod 755 "$DIR"
if [[ $(id -u) -eq 0 ]]; then chown "$PG_USER" "$DIR"; fi
DATA=$DIR/data
started=0

stop() {
    local status=$?
    if [[ $started -eq 1 ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    exit $status
}
trap stop EXIT
child=
# A signal stops the command first, then the EXIT trap stops the server at once (bash
# would otherwise run the trap only once a foreground command had finished).
forward() {
    [[ -n $child ]] && kill "-$1" "$child" 2>/dev/null && wait "$child"
    exit "$2"
}
trap 'forward INT 130' INT
trap 'forward TERM 143' TERM

as_pg "$PG_BIN/initdb" -D "$DATA" -U mercator --auth=trust -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }

# A free loopback port: the kernel picks one, we hand it to the server. Another process
# could take it in between; the start is retried on a fresh port if so.
for attempt in 1 2 3; do
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if as_pg "$PG_BIN/pg_ctl" -D "$DATA" -w -t 60 -l "$DIR/server.log" \
        -o "-h 127.0.0.1 -p $PORT -k $DIR -c fsync=off -c max_connections=300" start >/dev/null; then
        started=1
        break
    fi
    tail -n 5 "$DIR/server.log" >&2 || true
done
[[ $started -eq 1 ]] || { echo "test-postgres: the server did not start" >&2; exit 1; }

# The server's own client tools (psql) first on the PATH, for tests that make a schema.
export PATH="$PG_BIN:$PATH"
export MERCATOR_TEST_POSTGRES_URL="postgres://mercator@127.0.0.1:$PORT/postgres"
export MERCATOR_TEST_POSTGRES_REQUIRED=1
echo "test-postgres: PostgreSQL $("$PG_BIN/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2
"$@" <&0 &
child=$!
wait "$child"
