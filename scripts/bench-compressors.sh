#!/usr/bin/env bash
# The compressor study (issue 11): every codec and level of src/compress.rs
# on the real layer tar streams of two releases, side by side with umoci's
# compressor (klauspost/pgzip at its default level, through `umoci insert`
# of the same tree onto the same base), as markdown tables on stdout:
#   phoenix — the Phoenix-shaped corpus (scripts/make-phoenix-corpus.sh);
#   big     — the fixture with 50 MiB of incompressible assets (--big-mb 50).
# The tar streams are the tool's own: the release is built into a layout with
# the current binary and its release layers decompressed (their diff IDs
# checked), so the study sees exactly what the layer writer compresses.
# Usage: scripts/bench-compressors.sh [RUNS] [--quick]   (needs root for umoci)
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
runs="${1:-3}"
quick="${2:-}"
scripts/install-deps.sh
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet --bin guildhall-image --example compressors
target="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target/release/guildhall-image"
study="$target/release/examples/compressors"

base="$(fixtures/make-base-layout.sh)"
corpus="$(scripts/make-phoenix-corpus.sh)"
big="$(fixtures/build-release.sh --big-mb 50)/_build/prod/rel/guildhall"
w="$(mktemp -d)"; trap 'rm -rf "$w"' EXIT
echo "cores: $(nproc)" >&2

# The release layers of a build: the manifest's layers after the base's.
layers() { # LAYOUT TAG OUTDIR
  local m n i=0
  m="$(jq -r --arg t "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$1/index.json")"
  n="$(jq '.layers | length' "$base/blobs/sha256/$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "runner") | .digest' "$base/index.json" | cut -d: -f2)")"
  mkdir -p "$3"
  for d in $(jq -r ".layers[$n:][].digest" "$1/blobs/sha256/${m#sha256:}"); do
    i=$((i + 1))
    gzip -dc "$1/blobs/sha256/${d#sha256:}" > "$3/$i.tar"
  done
  ls "$3"/*.tar
}

rowargs=()
umoci_args=()
for row in phoenix big; do
  if [ "$row" = phoenix ]; then rel="$corpus/a/guildhall"; else rel="$big"; fi
  "$bin" -q build --release "$rel" --base "oci:$base:runner" --layout "$w/$row-layout" --tag t --skip-preflight >/dev/null
  mapfile -t tars < <(layers "$w/$row-layout" t "$w/$row-tars")
  rowargs+=(--row "$row" "${tars[@]}")

  # umoci insert of the same tree (owned as the tool owns it), median of RUNS.
  cp -a "$rel" "$w/tree"; chown -R 65534:0 "$w/tree"
  times=(); cpus=()
  for _ in $(seq "$runs"); do
    rm -rf "$w/u"; cp -a "$base" "$w/u"
    /usr/bin/time -o "$w/time" -f '%e %U %S' umoci insert --image "$w/u:runner" --tag t "$w/tree" /app
    read -r e u s < "$w/time"
    times+=("$e"); cpus+=("$(echo "$u + $s" | bc)")
  done
  secs="$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")"
  cpu="$(printf '%s\n' "${cpus[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")"
  um="$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "t") | .digest' "$w/u/index.json")"
  ubytes="$(jq -r '.layers[-1].size' "$w/u/blobs/sha256/${um#sha256:}")"
  umoci_args+=(--umoci "$row=$ubytes:$secs:$cpu")
  echo "$row: umoci insert ${secs}s wall, ${cpu}s CPU, layer $ubytes bytes; tool layers $(du -cb "$w/$row-tars"/*.tar | tail -1 | cut -f1) bytes uncompressed" >&2
  rm -rf "$w/tree" "$w/u"
done

"$study" --runs "$runs" ${quick:+--quick} "${umoci_args[@]}" "${rowargs[@]}"

# zstd's MT encoder's memory, by workers (the bound must be in bytes).
cat "$w"/phoenix-tars/*.tar > "$w/all.tar"
for workers in 1 2 4 8; do "$study" --rss-probe 3 "$workers" "$w/all.tar"; done
