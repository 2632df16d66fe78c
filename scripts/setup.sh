#!/usr/bin/env bash
# Sets up crpo on a fresh Debian/Ubuntu machine: system packages that are missing, then `npm ci`
# (which builds both native addons and compiles the TypeScript). Safe to run again: it installs
# only what is missing and says what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# libtorch-dev: the CPU libtorch the torch addon links; libopenblas0-pthread: without it libtorch
# falls back to the reference BLAS (~34x slower matmul); libgloo-dev: c10d's Gloo headers for
# multi-process training; ffmpeg: video decoding; python3-torch: PyTorch reference for
# numerics/benchmarks and torchrun; cmake, g++, make, python3: the addon builds; clang-format: the
# C++ format check of `npm run lint`.
PACKAGES=(g++ make python3 cmake pkg-config libtorch-dev libopenblas0-pthread libgloo-dev ffmpeg python3-torch clang-format)

if ! command -v apt-get >/dev/null 2>&1; then
  die "apt-get not found: this script supports Debian/Ubuntu. Elsewhere install a C++17 compiler, cmake, libtorch (set LIBTORCH=/path/to/libtorch), OpenBLAS, ffmpeg, then run 'npm ci'."
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing: run as root or install sudo"
  SUDO="sudo"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "system packages already present: ${PACKAGES[*]}"
fi

command -v node >/dev/null 2>&1 || die "node not found: install Node.js >= 20.17 (e.g. from your distribution or nodejs.org) and run again"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=17)?0:1)' \
  || die "Node.js $(node --version) is too old: crpo needs >= 20.17"

say "npm ci (installs dependencies, builds the core and torch addons, compiles TypeScript)"
npm ci --no-audit --no-fund
say "done: $(node bin/crpo.js doctor | grep -c MISSING || true) addon(s) missing (see 'npx crpo doctor')"
