#!/usr/bin/env bash
# The main job end to end, with nothing external: installs what it needs,
# builds the fixture Phoenix-like release and a debian-slim-like base (both
# cached outside the repo), builds the image with guildhall-image (direct
# engine, no Docker), starts it with runc and prints its /health answer.
# Needs root (runc, debootstrap). Usage: scripts/demo.sh [LAYOUT_DIR]
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
layout="${1:-${TMPDIR:-/tmp}/guildhall-demo/image}"

scripts/install-deps.sh
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

echo "== base image and fixture release (cached after the first run)" >&2
fixtures/make-rootfs.sh >/dev/null
base="$(fixtures/make-base-layout.sh)"
release="$(fixtures/build-release.sh)/_build/prod/rel/guildhall"

echo "== building guildhall-image" >&2
cargo build --release --locked --quiet
bin=target/release/guildhall-image

echo "== guildhall-image build" >&2
"$bin" build --release "$release" --base "oci:$base:runner" --layout "$layout" --tag demo
"$bin" inspect "oci:$layout:demo"

echo "== running the image (runc) and asking /health" >&2
name="guildhall-demo-$$"
port="${PORT:-4321}"
trap 'tests/support/stop-image.sh "$name" >/dev/null 2>&1 || true' EXIT
tests/support/run-image.sh "$layout" demo "$name" "$port" >/dev/null
printf '/health: '
curl -fsS "http://127.0.0.1:$port/health"
echo
