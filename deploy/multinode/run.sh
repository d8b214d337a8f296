#!/usr/bin/env bash
# Starts, on this machine: a throwaway PostgreSQL cluster in a temp
# directory, two threadline nodes on it (127.0.0.1:8081 and :8082) and nginx
# in front on 127.0.0.1:8080; prints a login key; stops everything on
# Ctrl-C (or when a command given as arguments ends: `run.sh curl …`).
#
#   cargo build --release && deploy/multinode/run.sh
#
# THREADLINE_NODE_ARGS adds flags to both nodes (e.g. the load generator's
# `--open-registration --rate-limit-per-minute 0 ...`); PG_ARGS adds settings
# to the cluster's postgres (e.g. `-c synchronous_commit=off`).
# Needs initdb/pg_ctl (Debian: apt-get install postgresql) and nginx. As
# root, the cluster runs as the unprivileged user `threadline-pg` (created
# if missing), which PostgreSQL requires.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${THREADLINE_BIN:-$here/../../target/release/threadline}"
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 1; }

pg_bin="$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)")"
[ -x "$pg_bin/initdb" ] || { echo "no initdb: install PostgreSQL (Debian: apt-get install postgresql)" >&2; exit 1; }
command -v nginx >/dev/null || { echo "no nginx: install it (Debian: apt-get install nginx)" >&2; exit 1; }
for port in 8080 8081 8082; do
    # A server already there would answer the health checks below in our place.
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        echo "127.0.0.1:$port is already in use: stop what listens there first" >&2
        exit 1
    fi
done
work="$(mktemp -d)"
as_pg=()
if [ "$(id -u)" = 0 ]; then
    id threadline-pg >/dev/null 2>&1 || useradd --system --no-create-home threadline-pg
    chown threadline-pg "$work"
    as_pg=(runuser -u threadline-pg --)
fi
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

pg_port=5433
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w -o \
    "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_ARGS:-}" start >/dev/null
export THREADLINE_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "PostgreSQL on 127.0.0.1:$pg_port"

# The first agent (this also creates the schema).
"$bin" agent create --name alice

for port in 8081 8082; do
    # shellcheck disable=SC2086 # extra flags, split on purpose
    "$bin" serve --bind "127.0.0.1:$port" --public-url http://127.0.0.1:8080 \
        --trust-proxy 127.0.0.1/32 ${THREADLINE_NODE_ARGS:-} >"$work/node-$port.log" 2>&1 &
    pids+=($!)
done
for port in 8081 8082; do
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || {
        cat "$work/node-$port.log" >&2; exit 1; }
done
echo "threadline nodes on 127.0.0.1:8081 and 127.0.0.1:8082"

mkdir -p "$work/nginx/tmp"
nginx -p "$work/nginx" -c "$here/nginx.conf" -g "daemon off;" &
pids+=($!)
for _ in $(seq 1 50); do
    curl -fs http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs http://127.0.0.1:8080/healthz >/dev/null || { echo "nginx did not start" >&2; exit 1; }
echo "nginx on http://127.0.0.1:8080 (round robin over both nodes)"

if [ $# -gt 0 ]; then
    "$@"
else
    echo "Ctrl-C stops everything"
    wait
fi
