#!/usr/bin/env bash
# Regenerates the runtime section of docs/benchmarks.md: installs ONNX
# Runtime if missing (scripts/install-ort.sh, into build/ort), builds the
# model zoo if missing (scripts/make-zoo.sh, into build/zoo), then runs
# scripts/bench-runtime.py (permdnn and ONNX Runtime alternating on the same
# model files and inputs, batch 1 and 16, 1 and 2 threads, outputs checked)
# and splices its table between the runtime:begin / runtime:end markers.
# Extra arguments go to bench-runtime.py (e.g. --only resnet18 --rounds 1).
# Exit status 1 when some outputs disagree (the table is still written).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build/release}
export BUILD_DIR
scripts/install-ort.sh
scripts/make-zoo.sh
rc=0
python3 scripts/bench-runtime.py --zoo build/zoo --json "$BUILD_DIR/bench-runtime.json" \
  --markdown "$BUILD_DIR/bench-runtime.md" "$@" || rc=$?
python3 scripts/splice_section.py docs/benchmarks.md runtime "$BUILD_DIR/bench-runtime.md"
echo "updated docs/benchmarks.md runtime section (JSON: $BUILD_DIR/bench-runtime.json)"
exit $rc
