#!/usr/bin/env bash
# Builds (once) the benchmark corpus: a Phoenix-shaped mix release, and prints
# the work directory that holds it:
#   WORK/a/guildhall/                 the release directory (as _build/prod/rel/guildhall)
#   WORK/a/guildhall-0.1.0.tar.gz     its tarball, from mix's :tar step
#   WORK/b/…                          the same after a one-module change
#                                     (Guildhall.Greeting), rebuilt by mix
#   WORK/corpus.txt                   size, file count and gzip ratio
#
# Usage: scripts/make-phoenix-corpus.sh
#
# Why: the README's first benchmark release (fixtures/build-release.sh
# --big-mb 50) is 50 MiB of random bytes, which a compressor only stores, and
# a tiny app. A real Phoenix release is mostly compressible code and text
# with some incompressible media, and its shape (which layer holds what)
# decides what a rebuild recompresses. So the corpus is made as `mix release`
# makes a Phoenix app's release, from the fixture project (fixtures/
# guildhall_fixture) with:
#   - ERTS and OTP as mix ships them (Debian's Elixir/OTP), with the OTP
#     applications a Phoenix app pulls in (ssl, public_key, asn1, eex,
#     runtime_tools, crypto, inets, compiler, …): the `erts` layer;
#   - 25 dependency applications named and sized like a Phoenix 1.7 app's hex
#     deps (phoenix, phoenix_live_view, ecto, postgrex, plug, bandit, …; about
#     11 MB of stripped BEAM files), REAL compiled modules: generated Elixir
#     sources of ordinary shape (scripts/phoenix-corpus/gen_code.exs), path
#     dependencies of the project, compiled by mix, each with its ebin/*.app
#     and listed in the release's .rel: the `deps` layer. castore's
#     priv/cacerts.pem is the system's CA bundle (text);
#   - the app's own 150 generated modules beside the fixture's: the `app` layer;
#   - priv/static as `mix assets.deploy` leaves it (gen_assets.exs): bundles
#     of real JavaScript and CSS (Debian's libjs-* packages), real web fonts,
#     photo-like PNG images (incompressible), and phx.digest's output beside
#     them — digested copies NAME-MD5.EXT and the .gz copies of both for the
#     gzippable types: the `assets` layer.
# About 60 MB in all. The tarball is what CI gets (mix :tar); b/ differs from
# a/ in one module (Elixir.Guildhall.Greeting.beam), built incrementally in
# the same project as a developer's next commit would be.
#
# Cached under $CACHE/phoenix-corpus-KEY (key: fixture sources, the
# generators, this script, the toolchain, the libjs package versions); a
# finished WORK is never rebuilt; flock-protected; offline (no hex: the deps
# are path dependencies). The first build compiles ~1,400 modules (a few
# minutes on 2 cores). CACHE = ${GUILDHALL_IMAGE_TEST_CACHE:-$HOME/.cache/guildhall-image-tests}.
set -euo pipefail

here="$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
src="$root/fixtures/guildhall_fixture"
gen="$here/phoenix-corpus"
cache="${GUILDHALL_IMAGE_TEST_CACHE:-$HOME/.cache/guildhall-image-tests}"
[ $# -eq 0 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
command -v mix >/dev/null || { echo "make-phoenix-corpus.sh: mix not found (scripts/install-deps.sh)" >&2; exit 1; }

js_pkgs=(libjs-bootstrap5 libjs-jquery-ui libjs-highlight.js libjs-d3 fonts-font-awesome libjs-chart.js
  libjs-codemirror libjs-moment libjs-lodash libjs-leaflet libjs-vue libjs-katex libjs-sortable ca-certificates)
pkg_versions="$(dpkg-query -W -f='${Package} ${Version}\n' "${js_pkgs[@]}" 2>/dev/null)" \
  || { echo "make-phoenix-corpus.sh: missing packages; run scripts/install-deps.sh (${js_pkgs[*]})" >&2; exit 1; }

src_hash="$( (tar -C "$src" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --exclude=./_build --exclude=./deps -cf - . ; cat "$gen"/*.exs "${BASH_SOURCE[0]}") | sha256sum | cut -c1-64)"
el="$(readlink -f "$(command -v elixir)")"; er="$(readlink -f "$(command -v erl)")"
toolchain="$(cat "$el" "$er" | sha256sum | cut -c1-64) $(cat "$(dirname "$er")"/../releases/*/OTP_VERSION 2>/dev/null | tr '\n' ' ')"
key="$(printf 'corpus v1\n%s\n%s\n%s\n' "$src_hash" "$toolchain" "$pkg_versions" | sha256sum | cut -c1-16)"

mkdir -p "$cache"
work="$cache/phoenix-corpus-$key"
exec 9>"$cache/.phoenix-corpus-$key.lock"
flock -w 1800 9 || { echo "make-phoenix-corpus.sh: timed out waiting for the lock of $work" >&2; exit 1; }
if [ -f "$work/.done" ]; then echo "$work"; exit 0; fi

echo "make-phoenix-corpus.sh: building the corpus in $work (a few minutes)" >&2
rm -rf "$work"; mkdir -p "$work"
p="$work/project"
mkdir -p "$p"
tar -C "$src" --exclude=./_build --exclude=./deps -cf - . | tar -C "$p" -xf -

# mix.exs: the generated apps as path dependencies; a Phoenix app's OTP apps.
edit() { # FILE AWK-PROGRAM: rewrite FILE, which must match exactly once
  awk "$2" "$1" > "$1.new" || { echo "make-phoenix-corpus.sh: $1 does not have the expected line" >&2; exit 1; }
  mv "$1.new" "$1"
}
edit "$p/mix.exs" '/^      deps: \[\],$/ { print "      deps: for(d <- Enum.sort(File.ls!(\"vendor\")), do: {String.to_atom(d), path: \"vendor/\" <> d}),"; n++; next } { print } END { if (n != 1) exit 1 }'
edit "$p/mix.exs" '/^      extra_applications: \[:logger, :inets, :crypto\],$/ { print "      extra_applications: [:logger, :inets, :crypto, :ssl, :public_key, :asn1, :eex, :runtime_tools],"; n++; next } { print } END { if (n != 1) exit 1 }'

export LANG=C.UTF-8 LC_ALL=C.UTF-8
elixir "$gen/gen_code.exs" deps "$p/vendor"
elixir "$gen/gen_code.exs" app "$p/lib/guildhall_web"
mkdir -p "$p/vendor/castore/priv"
cp /etc/ssl/certs/ca-certificates.crt "$p/vendor/castore/priv/cacerts.pem"
elixir "$gen/gen_assets.exs" "$p/priv/static"

mkdir -p "$cache/home" "$cache/mix" "$cache/hex"
release() { # OUT: mix release, then copy the release and its tarball to OUT
  (
    cd "$p"
    unset MIX_EXS MIX_BUILD_PATH MIX_BUILD_ROOT MIX_DEPS_PATH MIX_TARGET MIX_LOCKFILE ERL_LIBS
    export HOME="$cache/home" MIX_HOME="$cache/mix" HEX_HOME="$cache/hex" HEX_OFFLINE=1 MIX_ENV=prod
    timeout 1800 mix release --overwrite --quiet > "$work/mix-$(basename "$1").log" 2>&1 \
      || { tail -30 "$work/mix-$(basename "$1").log" >&2; exit 1; }
  )
  mkdir -p "$1"
  cp -a "$p/_build/prod/rel/guildhall" "$1/guildhall"
  cp -a "$p/_build/prod/guildhall-0.1.0.tar.gz" "$1/"
}
release "$work/a"
edit "$p/lib/guildhall/greeting.ex" '/^  @greeting "/ { print "  @greeting \"Hello from the corpus, one module later\""; n++; next } { print } END { if (n != 1) exit 1 }'
release "$work/b"

# The one-module change must be one module: compare the two trees.
changed="$(diff -rq "$work/a/guildhall" "$work/b/guildhall" || true)"
[ "$(printf '%s\n' "$changed" | grep -c .)" -eq 1 ] && printf '%s' "$changed" | grep -q 'Elixir.Guildhall.Greeting.beam' \
  || { echo "make-phoenix-corpus.sh: a/ and b/ differ in more than one module:" >&2; printf '%s\n' "$changed" >&2; exit 1; }

rel="$work/a/guildhall"
bytes="$(tar -C "$rel" -cf - . | wc -c)"
gz="$(tar -C "$rel" -cf - . | gzip -6 | wc -c)"
{
  echo "release: $(du -s --apparent-size -B1 "$rel" | cut -f1) bytes in $(find "$rel" -type f | wc -l) files ($(find "$rel" | wc -l) entries)"
  echo "tar: $bytes bytes; gzip -6: $gz bytes (ratio $(awk -v a="$gz" -v b="$bytes" 'BEGIN { printf "%.3f", a / b }'))"
  echo "tarball: $(stat -c %s "$work/a/guildhall-0.1.0.tar.gz") bytes"
  for d in "$rel"/erts-* "$rel"/lib/* "$rel"/lib/guildhall-*/priv/static; do
    printf '  %-40s %10s bytes\n' "${d#"$rel"/}" "$(du -s --apparent-size -B1 "$d" | cut -f1)"
  done
} > "$work/corpus.txt"
cat "$work/corpus.txt" >&2
rm -rf "$p/_build/prod/rel"
touch "$work/.done"
echo "$work"
