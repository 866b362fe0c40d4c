#!/usr/bin/env bash
# Starts / stops the Docker engine the tests drive (Debian's docker.io 20.10,
# BuildKit built in), on its own socket and data root, as MACHINE.md says.
#
#   dockerd.sh start    start it unless it already answers; wait (≤ 60 s)
#   dockerd.sh stop     TERM it (then KILL after 15 s); idempotent
#   dockerd.sh status   exit 0 when it answers
#
# Paths (CACHE = ${GUILDHALL_IMAGE_TEST_CACHE:-$HOME/.cache/guildhall-image-tests}):
#   socket     $CACHE/docker/docker.sock     (fixed, so every test reuses one engine)
#   data root  $CACHE/docker/data            (images and build cache survive restarts)
#   log        $CACHE/docker/dockerd.log
#   pid file   $CACHE/docker/dockerd.pid
#   exec root  /run/guildhall-image-docker-<hash of CACHE>  (short: socket paths ≤ 108 bytes)
#   client cfg $CACHE/docker/config/config.json  (DOCKER_CONFIG with an `auths`
#              entry, so the CLI never tries docker-credential-secretservice)
# Prints KEY=VALUE lines on stdout: DOCKER_HOST, DOCKER_CONFIG, DOCKER (the
# client to use: Debian's /usr/bin/docker, not a newer one that needs buildx).
# No bridge, no iptables: builds and containers must use --network host.
# Needs root. Safe to run concurrently (flock).
set -euo pipefail

die() { echo "dockerd.sh: $*" >&2; exit 1; }
cmd="${1:-}"
case "$cmd" in start|stop|status) ;; *) die "usage: dockerd.sh start|stop|status" ;; esac

cache="${GUILDHALL_IMAGE_TEST_CACHE:-$HOME/.cache/guildhall-image-tests}"
dir="$cache/docker"
sock="$dir/docker.sock"
pidfile="$dir/dockerd.pid"
log="$dir/dockerd.log"
exec_root="/run/guildhall-image-docker-$(printf '%s' "$cache" | sha256sum | cut -c1-8)"
client="${GUILDHALL_IMAGE_DOCKER:-/usr/bin/docker}"
mkdir -p "$dir" "$dir/config"

answers() { [ -x "$client" ] && DOCKER_CONFIG="$dir/config" "$client" -H "unix://$sock" version >/dev/null 2>&1; }

print_env() {
  echo "DOCKER_HOST=unix://$sock"
  echo "DOCKER_CONFIG=$dir/config"
  echo "DOCKER=$client"
}

if [ ! -f "$dir/config/config.json" ]; then
  # A placeholder entry: with no `auths` at all the CLI picks the secretservice
  # helper, which fails without a D-Bus session.
  printf '{"auths":{"guildhall-image-tests.invalid":{}}}\n' > "$dir/config/config.json"
fi

exec 9>"$dir/.lock"
flock -w 120 9 || die "timed out waiting for $dir/.lock"

case "$cmd" in
  status)
    answers || exit 1
    print_env
    ;;
  start)
    if answers; then print_env; exit 0; fi
    command -v dockerd >/dev/null || die "dockerd not found: apt-get install docker.io (Debian's Engine 20.10)"
    [ -x "$client" ] || die "$client not found: apt-get install docker.io"
    [ "$(id -u)" = 0 ] || die "needs root"
    # A stale engine of ours that no longer answers.
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
      for ((i = 0; i < 150; i++)); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    fi
    rm -f "$pidfile" "$sock"
    mkdir -p "$exec_root"
    setsid dockerd --host "unix://$sock" --data-root "$dir/data" \
      --exec-root "$exec_root" --pidfile "$pidfile" \
      --iptables=false --ip-masq=false --bridge=none \
      --insecure-registry 127.0.0.0/8 \
      </dev/null >>"$log" 2>&1 9>&- &
    for ((i = 0; i < 1800; i++)); do
      if answers; then print_env; exit 0; fi
      sleep 0.1
    done
    tail -n 30 "$log" >&2
    die "dockerd did not answer on $sock within 180 s (log: $log)"
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid="$(cat "$pidfile")"
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
      fi
      rm -f "$pidfile"
    fi
    rm -f "$sock"
    ;;
esac
