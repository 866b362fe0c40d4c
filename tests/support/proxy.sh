#!/usr/bin/env bash
# A body-size-capping reverse proxy (how the CDN in front of Forgejo behaves):
# nginx with its own config, pid and logs in DIR — never the system nginx.
#
#   proxy.sh PORT UPSTREAM_PORT MAX_BODY [DIR]    start (detached), e.g. proxy.sh 0 5000 8m
#   proxy.sh stop DIR                             stop it (idempotent)
#
# Listens on 127.0.0.1:PORT (0 = pick a free port), forwards to
# http://127.0.0.1:UPSTREAM_PORT with the client's Host header, without
# buffering request bodies; any request body over MAX_BODY (nginx size syntax:
# 8m, 100m, 512k) gets 413. Waits (at most 30 s) until it accepts connections.
# DIR defaults to a new mktemp -d. Prints KEY=VALUE lines: URL, HOST, PORT,
# PID, DIR. DIR/access.log has one line per request: method, URI, status,
# request length and the Authorization *scheme* only (none/basic/bearer/other).
set -euo pipefail

die() { echo "proxy.sh: $*" >&2; exit 1; }

stop() {
  local dir="$1" pid i
  [ -f "$dir/nginx.pid" ] || return 0
  pid="$(cat "$dir/nginx.pid")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/nginx.pid"
}

if [ "${1:-}" = stop ]; then
  [ -n "${2:-}" ] || die "usage: proxy.sh stop DIR"
  stop "$2"
  exit 0
fi
[ $# -ge 3 ] || die "usage: proxy.sh PORT UPSTREAM_PORT MAX_BODY [DIR] | proxy.sh stop DIR"
port="$1" upstream="$2" max_body="$3" dir="${4:-}"
[[ "$port" =~ ^[0-9]+$ && "$upstream" =~ ^[0-9]+$ ]] || die "ports must be numbers"
[[ "$max_body" =~ ^[0-9]+[kKmMgG]?$ ]] || die "MAX_BODY must look like 8m, 512k or 1048576"
nginx="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$nginx" ] || die "nginx not found (apt-get install nginx-light)"

[ -n "$dir" ] || dir="$(mktemp -d "${TMPDIR:-/tmp}/guildhall-proxy.XXXXXX")"
mkdir -p "$dir/tmp"
dir="$(cd -P -- "$dir" && pwd)"
stop "$dir"
if [ "$port" = 0 ]; then
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"   # workers need DIR; tests only
# shellcheck disable=SC2016  # $vars below are nginx's, not the shell's
{
  printf '%s\n' "$user_line"
  cat <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 512; }
http {
  map \$http_authorization \$auth_scheme {
    default other;
    ""        none;
    "~*^basic "  basic;
    "~*^bearer " bearer;
  }
  log_format capped '\$request_method \$request_uri \$status len=\$request_length auth=\$auth_scheme';
  access_log $dir/access.log capped;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  large_client_header_buffers 4 32k;
  server {
    listen 127.0.0.1:$port;
    server_name _;
    client_max_body_size $max_body;
    client_body_timeout 900s;
    send_timeout 900s;
    chunked_transfer_encoding on;
    location / {
      proxy_pass http://127.0.0.1:$upstream;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-Proto http;
      proxy_connect_timeout 10s;
      proxy_send_timeout 900s;
      proxy_read_timeout 900s;
    }
  }
}
EOF
} > "$dir/nginx.conf"

"$nginx" -t -q -p "$dir" -c "$dir/nginx.conf" -g "error_log $dir/error.log;" 2>>"$dir/error.log" \
  || { tail -n 5 "$dir/error.log" >&2; die "bad nginx config $dir/nginx.conf"; }
setsid "$nginx" -p "$dir" -c "$dir/nginx.conf" -g "error_log $dir/error.log;" </dev/null >>"$dir/stderr.log" 2>&1 &
pid=$!
echo "$pid" > "$dir/nginx.pid"   # nginx rewrites it with the same pid (daemon off)

for ((i = 0; i < 600; i++)); do
  kill -0 "$pid" 2>/dev/null || { tail -n 5 "$dir/error.log" >&2; die "nginx exited"; }
  if curl -s -o /dev/null -m 2 "http://127.0.0.1:$port/"; then break; fi
  sleep 0.1
done
[ "$i" -lt 600 ] || { stop "$dir"; die "nginx did not accept connections on $port within 60 s"; }

echo "URL=http://127.0.0.1:$port"
echo "HOST=127.0.0.1:$port"
echo "PORT=$port"
echo "PID=$pid"
echo "DIR=$dir"
