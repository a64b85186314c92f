#!/usr/bin/env bash
# Installs ONNX Runtime (CPU) for the runtime benchmarks, only when missing:
# Node.js and npm from Debian if absent, then the npm package onnxruntime-node
# into $ORT_DIR (default build/ort) with --ignore-scripts (its install script
# downloads GPU binaries; the CPU library ships inside the package).
# ONNX Runtime is a benchmark dependency only: the build, the runtime and
# `make test` never use it. Idempotent; prints the installed version.
#
#   scripts/install-ort.sh            # into build/ort
#   ORT_DIR=/tmp/ort scripts/install-ort.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_DIR=${ORT_DIR:-build/ort}
ORT_PACKAGE=${ORT_PACKAGE:-onnxruntime-node}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install-ort: installing nodejs and npm from Debian"
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; else
      echo "install-ort: error: node/npm are missing and installing them needs root: sudo apt-get install -y nodejs npm" >&2
      exit 1
    fi
  else
    SUDO=
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  command -v node >/dev/null 2>&1 || $SUDO apt-get install -y -qq --no-install-recommends nodejs
  # Debian's nodejs comes without npm (a separate package); other builds of
  # nodejs bundle it and conflict with Debian's npm.
  command -v npm >/dev/null 2>&1 || $SUDO apt-get install -y -qq --no-install-recommends npm
fi

mod="$ORT_DIR/node_modules/onnxruntime-node"
if [[ ! -f "$mod/package.json" ]] || ! (cd "$ORT_DIR" && node -e "require('onnxruntime-node')") >/dev/null 2>&1; then
  mkdir -p "$ORT_DIR"
  [[ -f "$ORT_DIR/package.json" ]] || echo '{"name": "permdnn-ort-bench", "private": true}' > "$ORT_DIR/package.json"
  echo "install-ort: npm install --ignore-scripts $ORT_PACKAGE into $ORT_DIR"
  (cd "$ORT_DIR" && npm install --ignore-scripts --no-audit --no-fund "$ORT_PACKAGE")
fi
version=$(cd "$ORT_DIR" && node -e "console.log(require('onnxruntime-node').env.versions.common)")
echo "install-ort: onnxruntime-node $version in $ORT_DIR (node $(node --version))"
