#!/usr/bin/env bash
# Checks deploy/nginx.conf with `nginx -t`, using a throwaway self-signed
# certificate in place of the real one. Skips (exit 0, with a message) when
# nginx or openssl is not installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

for tool in nginx openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "deploy/check-nginx.sh: $tool is not installed; skipping the nginx config check"
        exit 0
    fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=threads.example.com" \
    -keyout "$tmp/privkey.pem" -out "$tmp/fullchain.pem" >/dev/null 2>&1
sed -e "s#/etc/letsencrypt/live/threads.example.com#$tmp#g" \
    -e "s#include /etc/nginx/mime.types;#include $tmp/mime.types;#" \
    "$here/nginx.conf" >"$tmp/nginx.conf"
# mime.types from the installed nginx when present, else an empty one.
if [ -f /etc/nginx/mime.types ]; then cp /etc/nginx/mime.types "$tmp/mime.types"; else echo 'types {}' >"$tmp/mime.types"; fi
nginx -t -q -p "$tmp" -c "$tmp/nginx.conf" -g "pid $tmp/nginx.pid; error_log stderr;"
echo "deploy/nginx.conf: nginx -t passed"
