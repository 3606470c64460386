#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server for the tests of the
# PostgreSQL store:
#
#   scripts/with-postgres.sh cargo test --workspace
#
# initdb into a temp dir (as the postgres user when run as root: initdb
# refuses root), a free port on 127.0.0.1, trust authentication on loopback
# only; LANYARD_TEST_PG_URL names it for the command. The server is stopped
# and the dir removed when the command ends. Installs Debian's postgresql
# package first if no initdb is found (CI machines; needs apt).
set -euo pipefail

find_bin() {
    command -v "$1" 2>/dev/null && return 0
    ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}
initdb="$(find_bin initdb || true)"
if [[ -z "$initdb" ]]; then
    echo "with-postgres: no initdb; installing Debian's postgresql package" >&2
    if [[ $(id -u) -eq 0 ]]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -q postgresql >/dev/null
    initdb="$(find_bin initdb)"
fi
bindir="$(dirname "$initdb")"

dir="$(mktemp -d -t lanyard-pg.XXXXXX)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_owner=()
if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$dir"
    as_owner=(runuser -u postgres --)
fi
cleanup() {
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

"${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
# Many test databases and connections at once; fsync stays on (durability is under test).
"${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=400 -c shared_buffers=64MB" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
export LANYARD_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "with-postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
"$@"
