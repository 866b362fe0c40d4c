#!/usr/bin/env bash
# Benchmark of Debian packages in a build (issue 13 targets), medians from
# hyperfine, on the fixture release and the bare debootstrapped base:
#   1. a warm build with `--package libssl3 --package ca-certificates` (lock
#      file and cache warm, layout holding the layers) beside the same build
#      without packages: the packages' cost on top of a build (target 0.3 s);
#   2. a cold `--base deb:bookworm` build (empty cache: indexes, Contents and
#      .debs downloaded from Debian's mirror), its peak RSS, and the size of
#      the packages layer (target 25 MB; debian:bookworm-slim is ~28 MB).
# Usage: scripts/bench-packages.sh [RUNS]   (needs network to deb.debian.org;
#        GUILDHALL_IMAGE_BIN=PATH to measure a binary already built)
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
runs="${1:-5}"
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${GUILDHALL_IMAGE_BIN:-}" ]; then   # a binary already built, else this checkout's
  cargo build --release --locked --quiet
fi
bin="${GUILDHALL_IMAGE_BIN:-$PWD/target/release/guildhall-image}"
base="$(fixtures/make-base-layout.sh)"
rel="$(fixtures/build-release.sh)/_build/prod/rel/guildhall"
w="$(mktemp -d)"; trap 'rm -rf "$w"' EXIT
mkdir -p "$w/p"
cd "$w/p"

# 1. warm: one build of each first, so the lock, the cache and the layout hold everything.
export GUILDHALL_IMAGE_CACHE="$w/cache"
plain="$bin -q build --project . --release $rel --base oci:$base:bare --layout $w/l --tag t --skip-preflight"
pkgs="$plain --package libssl3 --package ca-certificates"
$plain >/dev/null; $pkgs >/dev/null
hyperfine --runs "$runs" --warmup 1 -N --export-json "$w/warm.json" \
  -n without-packages "$plain" -n with-packages "$pkgs"
jq -r '.results | "median without packages \(.[0].median * 1000 | round) ms, with \(.[1].median * 1000 | round) ms: +\((.[1].median - .[0].median) * 1000 | round) ms"' "$w/warm.json"

# 2. cold deb:bookworm.
export GUILDHALL_IMAGE_CACHE="$w/cold-cache"
rm -f guildhall-image.lock
/usr/bin/time -f "cold deb:bookworm build: %e s, peak RSS %M KB" \
  "$bin" --json build --project . --release "$rel" --base deb:bookworm --layout "$w/d" --tag t >"$w/d.json"
jq -r '.layers[] | select(.name == "packages") | "packages layer: \(.size) bytes compressed, \(.description)"' "$w/d.json"
echo "downloaded into the cache: $(du -sh "$w/cold-cache/debian" | cut -f1)"
/usr/bin/time -f "warm deb:bookworm rebuild with the lock, --offline: %e s, peak RSS %M KB" \
  "$bin" -q build --project . --release "$rel" --base deb:bookworm --layout "$w/d" --tag t --offline >/dev/null
