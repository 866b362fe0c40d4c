#!/usr/bin/env bash
# Stops and removes a container started by run-image.sh, and its bundle.
#   stop-image.sh NAME
# Idempotent: a NAME that is not running (or never existed) is fine.
set -euo pipefail
name="${1:?usage: stop-image.sh NAME}"
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || { echo "stop-image.sh: bad name: $name" >&2; exit 2; }
base="${GUILDHALL_IMAGE_RUN_DIR:-/tmp/guildhall-image-run}"
bundle="$base/$name"

if runc state "$name" >/dev/null 2>&1; then
  runc kill "$name" TERM 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    [ "$(runc state "$name" 2>/dev/null | jq -r .status)" = running ] || break
    sleep 0.1
  done
  runc kill "$name" KILL 2>/dev/null || true
  runc delete -f "$name" 2>/dev/null || true
fi
# runc delete may need a moment after KILL; retry a few times.
for ((i = 0; i < 20; i++)); do
  runc state "$name" >/dev/null 2>&1 || break
  runc delete -f "$name" 2>/dev/null || true
  sleep 0.1
done
rm -rf "$bundle"
