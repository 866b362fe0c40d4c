#!/usr/bin/env bash
# Starts / stops a real CNCF distribution registry (Debian's docker-registry 2.8)
# on loopback, for tests.
#
#   registry.sh start --dir DIR [--port PORT] [--mode anonymous|basic|token]
#                     [--user U] [--password P] [--token-port PORT] [--ttl SECONDS]
#                     [--anonymous-pull] [--token-leeway S] [--watch-pid PID]
#   registry.sh stop  --dir DIR
#
# start: writes DIR/config.yml, stores blobs in DIR/data, logs to
#   DIR/registry.log, then waits (at most 30 s) until GET /v2/ answers
#   (200 anonymous, 401 otherwise). PORT 0 (the default) picks a free port.
#   Modes:
#     anonymous  no auth.
#     basic      htpasswd (bcrypt) with U:P (default testuser:testpass).
#     token      Bearer tokens from tests/support/token_server.py on
#                --token-port (0 = free port), realm
#                http://127.0.0.1:TP/v2/token, service test_registry, issuer
#                test-issuer, tokens valid --ttl seconds (default 300);
#                --anonymous-pull makes it hand pull-only tokens to anonymous
#                clients. Its request log (JSON lines) is DIR/token.log.
#                --token-leeway S (default 60, distribution's clock leeway)
#                is passed to token_server.py --leeway: a larger value makes
#                the registry reject tokens S-60 s before their expires_in
#                (forces a 401 mid-push for a client that trusts expires_in).
#   --watch-pid PID: also stop everything once process PID is gone (so a
#   crashed test leaves no registry behind).
#   Prints KEY=VALUE lines on stdout: URL, HOST (127.0.0.1:PORT), PORT, PID,
#   DIR, MODE, and for token mode TOKEN_URL (the realm), TOKEN_PID, TOKEN_LOG,
#   TOKEN_CERT. All children are detached (setsid, stdio to files), so a
#   caller reading our stdout to EOF does not hang.
# stop: kills (TERM, then KILL after 5 s) the PIDs recorded in DIR/*.pid.
#   Idempotent. The data directory is kept; rm -rf DIR to clean up.
set -euo pipefail

here="$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
die() { echo "registry.sh: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Which python has `cryptography`: the PATH one, else Debian's.
pick_python() {
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import cryptography' 2>/dev/null; then
      command -v "$py"; return 0
    fi
  done
  die "no python3 with the cryptography module (apt-get install python3-cryptography)"
}

stop_pidfile() {
  local f="$1" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

do_stop() {
  local dir="$1"
  [ -d "$dir" ] || return 0
  # The watchdog first, so it does not race us.
  stop_pidfile "$dir/watchdog.pid"
  stop_pidfile "$dir/registry.pid"
  stop_pidfile "$dir/token.pid"
}

# wait_http URL WANT_STATUS PID: poll for at most 60 s (a loaded CI machine is slow to start a registry).
wait_http() {
  local url="$1" want="$2" pid="$3" code i
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" || true)"
    [ "$code" = "$want" ] && return 0
    sleep 0.1
  done
  return 1
}

cmd="${1:-}"; shift || true
dir="" port=0 mode=anonymous user=testuser password=testpass token_port=0 ttl=300 anon_pull="" leeway="" watch_pid=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="${2:?}"; shift 2 ;;
    --port) port="${2:?}"; shift 2 ;;
    --mode) mode="${2:?}"; shift 2 ;;
    --user) user="${2:?}"; shift 2 ;;
    --password|--pass) password="${2:?}"; shift 2 ;;
    --token-port) token_port="${2:?}"; shift 2 ;;
    --ttl) ttl="${2:?}"; shift 2 ;;
    --anonymous-pull) anon_pull=1; shift ;;
    --token-leeway) leeway="${2:?}"; shift 2 ;;
    --watch-pid) watch_pid="${2:?}"; shift 2 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[ -n "$dir" ] || die "usage: registry.sh start|stop --dir DIR [...] (see the header of $0)"

case "$cmd" in
  stop) do_stop "$dir"; exit 0 ;;
  start) ;;
  *) die "usage: registry.sh start|stop --dir DIR [...]" ;;
esac

case "$mode" in anonymous|basic|token) ;; *) die "unknown --mode $mode" ;; esac
mkdir -p "$dir/data"
dir="$(cd -P -- "$dir" && pwd)"
do_stop "$dir"   # a leftover from an earlier run in the same DIR
[ "$port" = 0 ] && port="$(free_port)"

auth=""
case "$mode" in
  basic)
    htpasswd -Bbn "$user" "$password" > "$dir/htpasswd"
    auth="auth: {htpasswd: {realm: guildhall-test, path: $dir/htpasswd}}"
    ;;
  token)
    [ "$token_port" = 0 ] && token_port="$(free_port)"
    py="$(pick_python)"
    targs=(--dir "$dir" --port "$token_port" --ttl "$ttl" --service test_registry --issuer test-issuer)
    [ -n "$anon_pull" ] && targs+=(--anonymous-pull)
    [ -n "$leeway" ] && targs+=(--leeway "$leeway")
    # Credentials go through the environment, not the (visible) argument list.
    TOKEN_USER="$user" TOKEN_PASSWORD="$password" \
      setsid "$py" "$here/token_server.py" "${targs[@]}" \
      </dev/null >>"$dir/token-server.log" 2>&1 &
    echo $! > "$dir/token.pid"
    wait_http "http://127.0.0.1:$token_port/healthz" 200 "$(cat "$dir/token.pid")" \
      || { tail -n 20 "$dir/token-server.log" >&2; do_stop "$dir"; die "token server did not come up on port $token_port"; }
    auth="auth:
  token:
    realm: http://127.0.0.1:$token_port/v2/token
    service: test_registry
    issuer: test-issuer
    rootcertbundle: $dir/token.crt"
    ;;
esac

cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog: {disabled: false}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: 127.0.0.1:$port
  secret: guildhall-image-tests-not-secret
$auth
EOF

setsid docker-registry serve "$dir/config.yml" </dev/null >>"$dir/registry.log" 2>&1 &
echo $! > "$dir/registry.pid"
want=401; [ "$mode" = anonymous ] && want=200
if ! wait_http "http://127.0.0.1:$port/v2/" "$want" "$(cat "$dir/registry.pid")"; then
  tail -n 20 "$dir/registry.log" >&2
  do_stop "$dir"
  die "registry did not answer GET /v2/ with $want on port $port within 30 s"
fi

if [ -n "$watch_pid" ]; then
  # Detached watchdog: stops the registry (and token server) when WATCH_PID exits.
  # shellcheck disable=SC2016  # expanded by the inner bash, from its arguments
  setsid bash -c '
    while kill -0 "$1" 2>/dev/null; do sleep 1; done
    rm -f "$2/watchdog.pid"
    exec "$3" stop --dir "$2"
  ' watchdog "$watch_pid" "$dir" "$here/registry.sh" </dev/null >/dev/null 2>&1 &
  echo $! > "$dir/watchdog.pid"
fi

echo "URL=http://127.0.0.1:$port"
echo "HOST=127.0.0.1:$port"
echo "PORT=$port"
echo "PID=$(cat "$dir/registry.pid")"
echo "DIR=$dir"
echo "MODE=$mode"
if [ "$mode" = token ]; then
  echo "TOKEN_URL=http://127.0.0.1:$token_port/v2/token"
  echo "TOKEN_PORT=$token_port"
  echo "TOKEN_PID=$(cat "$dir/token.pid")"
  echo "TOKEN_LOG=$dir/token.log"
  echo "TOKEN_CERT=$dir/token.crt"
fi
