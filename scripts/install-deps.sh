#!/usr/bin/env bash
# Installs the Debian packages permdnn needs, and only those that are missing.
# Idempotent: a second run installs nothing and exits 0.
#
#   scripts/install-deps.sh            # everything (build, tests, benchmarks, training)
#   PERMDNN_DEPS=core scripts/install-deps.sh   # only what the runtime/kernels and their tests need
#   PERMDNN_DEPS=fuzz scripts/install-deps.sh   # clang + libFuzzer for `make fuzz` only
#   PERMDNN_DEPS=sanitize scripts/install-deps.sh   # gcc's ASan/UBSan runtimes for `make test-asan`
set -euo pipefail

core_pkgs=(
  cmake g++ make pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libhwy-dev libopenblas-dev libeigen3-dev libfftw3-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev zlib1g-dev
  libprotobuf-dev protobuf-compiler libonnx-dev libdnnl-dev
  gnuplot-nox dataset-fashion-mnist libonnx-testdata
)
# The data sets are here because a test that cannot read them fails
# (tests/support/installed.h) rather than skipping.
# Training and the benchmarks' extras: torchvision for the
# model zoo (scripts/make-zoo.sh), XNNPACK for bench/dense_probe.cc,
# fortunes for `permdnn train --model charlm` (its default text corpus,
# /usr/share/games/fortunes; the unit tests write their own corpus).
extra_pkgs=(
  libtorch-dev
  python3-torchvision libxnnpack-dev libpthreadpool-dev
  fortunes
)

# Only for `make fuzz` (libFuzzer is clang's; llvm-symbolizer names the
# frames of a crash) and `make test-asan`; `make test` needs none of them.
fuzz_pkgs=(
  clang-14 libclang-rt-14-dev llvm-14
)
sanitize_pkgs=(
  libasan8 libubsan1
)

case "${PERMDNN_DEPS:-all}" in
  core) pkgs=("${core_pkgs[@]}") ;;
  fuzz) pkgs=("${fuzz_pkgs[@]}") ;;
  sanitize) pkgs=("${sanitize_pkgs[@]}") ;;
  *) pkgs=("${core_pkgs[@]}" "${extra_pkgs[@]}") ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "install-deps: error: these Debian packages are missing and installing them needs root:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${#missing[@]} packages"
