#!/usr/bin/env bash
# Runs an image from an OCI image layout with runc — no Docker. Needs root.
#
#   run-image.sh LAYOUT_DIR TAG NAME [PORT] [KEY=VALUE ...] [-- CMD [ARG ...]]
#
# Unpacks LAYOUT_DIR:TAG (umoci unpack) into the bundle
# ${GUILDHALL_IMAGE_RUN_DIR:-/tmp/guildhall-image-run}/NAME, edits its
# config.json (no cgroup and no network namespace — the host's network, so
# the app's port is on 127.0.0.1 —, no linux.resources, terminal false, host
# name NAME), adds
# env PORT=PORT (when given), BIND_ADDRESS=127.0.0.1, ERL_EPMD_ADDRESS=127.0.0.1
# and ERL_AFLAGS=-kernel inet_dist_use_interface {127,0,0,1} (so nothing the
# fixture starts listens beyond loopback), RELEASE_NODE=NAME (a unique Erlang
# node name: containers share the host's epmd), plus any KEY=VALUE, replaces the command when `-- CMD…` is given,
# then `runc run -d` as container NAME. The process's stdout+stderr go to
# BUNDLE/output.log. With PORT, waits (at most 120 s, RUN_IMAGE_WAIT seconds)
# until GET http://127.0.0.1:PORT/health answers 200, and fails (printing the
# log) otherwise; set RUN_IMAGE_WAIT=0 to skip waiting.
# Prints KEY=VALUE lines: NAME, BUNDLE, PID, LOG (and URL with PORT).
# Stop and clean up with tests/support/stop-image.sh NAME.
set -euo pipefail

die() { echo "run-image.sh: $*" >&2; exit 1; }
[ $# -ge 3 ] || die "usage: run-image.sh LAYOUT_DIR TAG NAME [PORT] [KEY=VALUE ...] [-- CMD ...]"
layout="$1" tag="$2" name="$3"; shift 3
port=""
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then port="$1"; shift; fi
envs=() cmd=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; cmd=("$@"); break ;;
    *=*) envs+=("$1"); shift ;;
    *) die "unexpected argument: $1" ;;
  esac
done
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "bad container name: $name"
[ -f "$layout/index.json" ] || die "$layout is not an OCI image layout"
[ "$(id -u)" = 0 ] || die "needs root (runc, umoci unpack)"
here="$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"

base="${GUILDHALL_IMAGE_RUN_DIR:-/tmp/guildhall-image-run}"
bundle="$base/$name"
mkdir -p "$base"
# A leftover container/bundle of the same name from an earlier run.
"$here/stop-image.sh" "$name" >/dev/null 2>&1 || true

umoci unpack --image "$layout:$tag" "$bundle" >"$base/$name.unpack.log" 2>&1 \
  || { cat "$base/$name.unpack.log" >&2; die "umoci unpack $layout:$tag failed"; }
rm -f "$base/$name.unpack.log"

# Containers share the host's network and so its epmd, which keys nodes by
# the name before the '@': two releases both called `guildhall` clash ("the
# name … seems to be in use by another Erlang node"). So RELEASE_NODE=NAME
# (dots made underscores) unless given, and host name NAME for good measure.
# The epmd they share is the host's own, started here: one a container
# started would die with that container and take the registrations of
# releases still booting in others with it (a flake under parallel tests).
if command -v epmd >/dev/null 2>&1; then
  ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon >/dev/null 2>&1 || true
fi
hostname="$(printf '%s' "$name" | tr '._' '--' | cut -c1-63)"
node="$(printf '%s' "$name" | tr '.' '_')"
extra=("BIND_ADDRESS=127.0.0.1" "ERL_EPMD_ADDRESS=127.0.0.1"
       "ERL_AFLAGS=-kernel inet_dist_use_interface {127,0,0,1}")
[ -n "$port" ] && extra+=("PORT=$port")
case " ${envs[*]-} " in *" RELEASE_NODE="*) ;; *) extra+=("RELEASE_NODE=$node") ;; esac
extra+=("${envs[@]+"${envs[@]}"}")
env_json="$(printf '%s\n' "${extra[@]}" | jq -R . | jq -s .)"
cmd_json="$(printf '%s\n' "${cmd[@]+"${cmd[@]}"}" | jq -R . | jq -s 'map(select(. != ""))')"

jq --argjson extra "$env_json" --argjson cmd "$cmd_json" --arg hostname "$hostname" '
  .process.terminal = false
  | .hostname = $hostname
  | del(.linux.resources)
  | .linux.namespaces |= map(select(.type != "cgroup" and .type != "network"))
  # later entries win: drop image values of the keys we set
  | ($extra | map(split("=")[0])) as $keys
  | .process.env = ((.process.env // []) | map(select((split("=")[0]) as $k | $keys | index($k) | not))) + $extra
  | if ($cmd | length) > 0 then .process.args = $cmd else . end
' "$bundle/config.json" > "$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"

# RUN_IMAGE_RESTRICTED=1: run it the way a Pod under the `restricted` Pod
# Security profile runs it — the image's own user, which must be non-root
# (runAsNonRoot: true, no runAsUser), a read-only root file system with an
# emptyDir-like writable /tmp, every capability dropped, no new privileges.
if [ "${RUN_IMAGE_RESTRICTED:-0}" = 1 ]; then
  # The kubelet cannot read the image's /etc/passwd: a user name is refused.
  blob() { printf '%s/blobs/sha256/%s' "$layout" "${1#sha256:}"; }
  mdigest="$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$layout/index.json" | head -n1)"
  cdigest="$(jq -r '.config.digest' "$(blob "$mdigest")")"
  user="$(jq -r '.config.User // ""' "$(blob "$cdigest")")"
  [[ "$user" =~ ^[0-9]+(:[0-9]+)?$ ]] \
    || die "restricted: container has runAsNonRoot and image has non-numeric user ($user), cannot verify user is non-root"
  uid="$(jq -r '.process.user.uid // 0' "$bundle/config.json")"
  [ "$uid" != 0 ] || die "restricted: the image runs as root (uid 0); runAsNonRoot would refuse it"
  jq '
    .root.readonly = true
    | .process.noNewPrivileges = true
    | .process.capabilities = {bounding: [], effective: [], inheritable: [], permitted: [], ambient: []}
    | .mounts += [{destination: "/tmp", type: "tmpfs", source: "tmpfs",
                   options: ["nosuid", "nodev", "mode=1777", "size=64m"]}]
  ' "$bundle/config.json" > "$bundle/config.json.new"
  mv "$bundle/config.json.new" "$bundle/config.json"
fi

log="$bundle/output.log"
runc run -d --pid-file "$bundle/container.pid" -b "$bundle" "$name" </dev/null >"$log" 2>&1 \
  || { cat "$log" >&2; die "runc run failed"; }
pid="$(cat "$bundle/container.pid")"

if [ -n "$port" ] && [ "${RUN_IMAGE_WAIT:-120}" != 0 ]; then
  ok=""
  for ((i = 0; i < ${RUN_IMAGE_WAIT:-120} * 5; i++)); do
    if [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/health" || true)" = 200 ]; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if [ -z "$ok" ]; then
    echo "--- $log" >&2; tail -n 40 "$log" >&2
    "$here/stop-image.sh" "$name" >/dev/null 2>&1 || true
    die "container $name did not answer GET /health on port $port"
  fi
fi

echo "NAME=$name"
echo "BUNDLE=$bundle"
echo "PID=$pid"
echo "LOG=$log"
[ -n "$port" ] && echo "URL=http://127.0.0.1:$port"
exit 0
