#!/usr/bin/env bash
# Checks the proxy configurations in deploy/: nginx.conf with `nginx -t`
# (a throwaway self-signed certificate stands in for the real one) and the
# Caddyfile with `caddy validate`. Each check is skipped, with a message,
# when its tool is not installed; a failing check exits non-zero.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

check_nginx() {
    for tool in nginx openssl; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "deploy/nginx.conf: $tool is not installed; check skipped"
            return 0
        fi
    done
    local tmp
    tmp="$(mktemp -d)"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=threads.example.com" \
        -keyout "$tmp/privkey.pem" -out "$tmp/fullchain.pem" >/dev/null 2>&1
    sed -e "s#/etc/letsencrypt/live/threads.example.com#$tmp#g" \
        -e "s#include /etc/nginx/mime.types;#include $tmp/mime.types;#" \
        "$here/nginx.conf" >"$tmp/nginx.conf"
    # mime.types from the installed nginx when present, else an empty one.
    if [ -f /etc/nginx/mime.types ]; then
        cp /etc/nginx/mime.types "$tmp/mime.types"
    else
        echo 'types {}' >"$tmp/mime.types"
    fi
    local status=0
    nginx -t -q -p "$tmp" -c "$tmp/nginx.conf" -g "pid $tmp/nginx.pid; error_log stderr;" || status=$?
    rm -rf "$tmp"
    if [ "$status" -ne 0 ]; then
        echo "deploy/nginx.conf: nginx -t failed" >&2
        return "$status"
    fi
    echo "deploy/nginx.conf: nginx -t passed"
}

check_caddy() {
    if ! command -v caddy >/dev/null 2>&1; then
        echo "deploy/Caddyfile: caddy is not installed; check skipped"
        return 0
    fi
    local out
    if ! out="$(caddy validate --adapter caddyfile --config "$here/Caddyfile" 2>&1)"; then
        echo "$out" >&2
        echo "deploy/Caddyfile: caddy validate failed" >&2
        return 1
    fi
    echo "deploy/Caddyfile: caddy validate passed"
}

check_nginx
check_caddy
