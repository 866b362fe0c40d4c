#!/usr/bin/env bash
# Benchmark of publishing (issue 3 targets), side by side in one run, medians
# from hyperfine, all against real loopback registries:
#   1. first push (every blob new) vs `skopeo copy oci:… docker://…`;
#   2. pushing again unchanged (time, blob uploads) and after a one-module change;
#   3. end to end `build --push` vs `docker build` + `docker push` of the
#      equivalent `FROM base` + `COPY release /app` Dockerfile;
#   4. peak RSS while pushing a ~500 MB layer;
#   5. throughput through an nginx proxy capping bodies at 8 MiB vs direct.
# Usage: scripts/bench-push.sh [RUNS]   (root: docker, registries)
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
runs="${1:-5}"
scripts/install-deps.sh
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/guildhall-image"
w="$(mktemp -d)"
export GUILDHALL_IMAGE_CACHE="$w/cache" DOCKER_CONFIG="$w/no-docker-config"
reg() { tests/support/registry.sh "$@"; }
cleanup() {
  reg stop --dir "$w/reg" >/dev/null 2>&1 || true
  reg stop --dir "$w/reg2" >/dev/null 2>&1 || true
  tests/support/proxy.sh stop "$w/proxy" >/dev/null 2>&1 || true
  rm -rf "$w"
}
trap cleanup EXIT
kv() { sed -n "s/^$1=//p"; }

base="$(fixtures/make-base-layout.sh)"
rel_a="$(fixtures/build-release.sh --big-mb 50)/_build/prod/rel/guildhall"
rel_b="$(fixtures/build-release.sh --big-mb 50 --greeting 'Hello, bench')/_build/prod/rel/guildhall"
"$bin" -q build --release "$rel_a" --base "oci:$base:runner" --layout "$w/img" --tag a >/dev/null
"$bin" -q build --release "$rel_b" --base "oci:$base:runner" --layout "$w/img" --tag b >/dev/null
size=$(python3 -c "import json,sys;print(sum(l['size'] for l in json.load(sys.stdin)['layers'])//1000000)" < <("$bin" inspect --json "oci:$w/img:a"))
echo "image: $size MB compressed; cores: $(nproc)" >&2

port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
fresh="tests/support/registry.sh stop --dir $w/reg >/dev/null 2>&1; rm -rf $w/reg; tests/support/registry.sh start --dir $w/reg --port $port >/dev/null"
hyperfine --runs "$runs" --export-json "$w/first.json" --prepare "$fresh" \
  -n guildhall-image-push "$bin -q push --layout $w/img --tag a --to 127.0.0.1:$port/bench/app" \
  -n skopeo-copy "skopeo copy -q --dest-tls-verify=false oci:$w/img:a docker://127.0.0.1:$port/bench/app:a"

# Unchanged, then a one-module change.
eval "$fresh"
"$bin" -q push --layout "$w/img" --tag a --to "127.0.0.1:$port/bench/app" >/dev/null
hyperfine --runs "$runs" --warmup 1 --export-json "$w/again.json" \
  -n push-unchanged "$bin -q push --layout $w/img --tag a --to 127.0.0.1:$port/bench/app"
again_uploads=$("$bin" -q --json push --layout "$w/img" --tag a --to "127.0.0.1:$port/bench/app" | python3 -c "import json,sys;print(sum(1 for b in json.load(sys.stdin)['blobs'] if b['how']=='uploaded'))")
change_uploads=$("$bin" -q --json push --layout "$w/img" --tag b --to "127.0.0.1:$port/bench/app" | python3 -c "import json,sys;print(sum(1 for b in json.load(sys.stdin)['blobs'] if b['how']=='uploaded'))")

# End to end: build --push vs docker build + docker push.
docker_line=""
if eval "$(tests/support/dockerd.sh start | sed 's/^/export /')"; then
  skopeo copy -q "oci:$base:runner" "docker-daemon:guildhall-bench-base:latest" --dest-daemon-host "$DOCKER_HOST"
  ctx="$w/ctx"; mkdir -p "$ctx"; cp -a "$rel_a" "$ctx/release"
  printf 'FROM guildhall-bench-base:latest\nCOPY --chown=nobody:root release /app\nUSER nobody\nWORKDIR /app\nCMD ["/app/bin/server"]\n' > "$ctx/Dockerfile"
  hyperfine --runs "$runs" --export-json "$w/e2e.json" --prepare "$fresh; rm -rf $w/e2e; $DOCKER -H $DOCKER_HOST builder prune -af >/dev/null 2>&1; $DOCKER -H $DOCKER_HOST rmi -f 127.0.0.1:$port/bench/docker:t >/dev/null 2>&1 || true" \
    -n guildhall-image-build-push "$bin -q build --release $rel_a --base oci:$base:runner --layout $w/e2e --tag t --push --to 127.0.0.1:$port/bench/app" \
    -n docker-build-push "DOCKER_BUILDKIT=1 $DOCKER -H $DOCKER_HOST build -q --network host -t 127.0.0.1:$port/bench/docker:t $ctx >/dev/null && $DOCKER -H $DOCKER_HOST push -q 127.0.0.1:$port/bench/docker:t >/dev/null"
  docker_line=1
  # The same on the Phoenix-shaped corpus, from a fresh copy of its tarball
  # (as CI has it); docker gets the tarball too (`ADD` unpacks it).
  corpus="$(scripts/make-phoenix-corpus.sh)"
  pctx="$w/pctx"; mkdir -p "$pctx"; cp "$corpus/a/guildhall-0.1.0.tar.gz" "$pctx/release.tar.gz"
  printf 'FROM guildhall-bench-base:latest\nADD --chown=nobody:root release.tar.gz /app\nUSER nobody\nWORKDIR /app\nCMD ["/app/bin/server"]\n' > "$pctx/Dockerfile"
  hyperfine --runs "$runs" --export-json "$w/e2e-phoenix.json" --prepare "$fresh; rm -rf $w/e2e; cp $pctx/release.tar.gz $w/fresh.tar.gz; $DOCKER -H $DOCKER_HOST builder prune -af >/dev/null 2>&1; $DOCKER -H $DOCKER_HOST rmi -f 127.0.0.1:$port/bench/docker:t >/dev/null 2>&1 || true" \
    -n guildhall-image-build-push "$bin -q build --release $w/fresh.tar.gz --base oci:$base:runner --layout $w/e2e --tag t --push --to 127.0.0.1:$port/bench/app" \
    -n docker-build-push "DOCKER_BUILDKIT=1 $DOCKER -H $DOCKER_HOST build -q --network host -t 127.0.0.1:$port/bench/docker:t $pctx >/dev/null && $DOCKER -H $DOCKER_HOST push -q 127.0.0.1:$port/bench/docker:t >/dev/null"
fi

# Peak RSS pushing a ~500 MB layer.
rel_xl="$(fixtures/build-release.sh --big-mb 500)/_build/prod/rel/guildhall"
"$bin" -q build --release "$rel_xl" --base "oci:$base:runner" --layout "$w/xl" --tag xl >/dev/null
eval "$fresh"
rss_kb=$( { /usr/bin/time -f '%M' "$bin" -q push --layout "$w/xl" --tag xl --to "127.0.0.1:$port/bench/xl" >/dev/null; } 2>&1 | tail -1)

# Through an 8 MiB-capped proxy vs direct: the default 64 MiB chunks get 413,
# the client halves them until they pass (8 MiB) and goes on chunked.
eval "$fresh"
pport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
tests/support/proxy.sh "$pport" "$port" 8m "$w/proxy" >/dev/null
t0=$(date +%s.%N); "$bin" -q push --layout "$w/img" --tag a --to "127.0.0.1:$pport/bench/proxied" >/dev/null; t1=$(date +%s.%N)
t2=$(date +%s.%N); "$bin" -q push --layout "$w/img" --tag a --to "127.0.0.1:$port/bench/direct" >/dev/null; t3=$(date +%s.%N)

python3 - "$w" "$size" "$again_uploads" "$change_uploads" "$rss_kb" "$t0" "$t1" "$t2" "$t3" "$docker_line" <<'PY'
import json, sys, os
w, size = sys.argv[1], int(sys.argv[2])
med = lambda f: {r["command"]: r["median"] for r in json.load(open(os.path.join(w, f)))["results"]}
first = med("first.json"); again = med("again.json")
g, s = first["guildhall-image-push"], first["skopeo-copy"]
print(f"first push of a {size} MB image (median): guildhall-image {g:.2f}s, skopeo copy {s:.2f}s, ratio {g/s:.2f} (target <= 0.8)")
print(f"push again unchanged: {again['push-unchanged']:.3f}s, {sys.argv[3]} blob uploads (target <= 0.3 s, 0 uploads)")
print(f"after a one-module change: {sys.argv[4]} blob upload(s) (target: only the app layer)")
if sys.argv[10]:
    e = med("e2e.json"); a, d = e["guildhall-image-build-push"], e["docker-build-push"]
    print(f"build --push end to end (fixture directory): guildhall-image {a:.2f}s, docker build + push {d:.2f}s, ratio {a/d:.2f} (target <= 0.15)")
    e = med("e2e-phoenix.json"); a, d = e["guildhall-image-build-push"], e["docker-build-push"]
    print(f"build --push end to end (Phoenix corpus, fresh tarball): guildhall-image {a:.2f}s, docker build + push {d:.2f}s, ratio {a/d:.2f} (target <= 0.15)")
print(f"peak RSS pushing a ~500 MB layer: {int(sys.argv[5])/1024:.0f} MB (target <= 100 MB)")
p = float(sys.argv[7]) - float(sys.argv[6]); dtime = float(sys.argv[9]) - float(sys.argv[8])
print(f"through the 8 MiB-capped proxy: {size/p:.0f} MB/s vs direct {size/dtime:.0f} MB/s = {dtime/p:.0%} (target >= 50%)")
PY
