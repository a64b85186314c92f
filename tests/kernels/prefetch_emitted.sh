#!/bin/sh
# The batched rows' software prefetches are in the binary (stop 54): GCC 12
# takes a function whose only effects are prefetches for pure and drops the
# calls to it that were not inlined first, and the kernels ran without them
# unnoticed (permdiag_simd.cc, PrefetchLine). For each compiled x86 target
# each named kernel must contain a prefetch instruction.
# Usage: prefetch_emitted.sh OBJDUMP LIBRARY
set -eu
objdump=$1 lib=$2
listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
"$objdump" -d -C --no-show-raw-insn "$lib" >"$listing"
status=0
for target in AVX2 AVX3; do
  for kernel in LanesChunk RowsBatched RowsMultiple RowsPacked; do
    if ! awk -v want="N_${target}::${kernel}<" '
        /^[0-9a-f]+ </ { inside = index($0, want) > 0; next }
        inside && /prefetcht[012]/ { found = 1; exit }
        END { exit found ? 0 : 1 }' "$listing"; then
      echo "no prefetch instruction in N_${target}::${kernel} ($lib)" >&2
      status=1
    fi
  done
done
[ "$status" -eq 0 ] && echo "prefetches present in LanesChunk, RowsBatched, RowsMultiple, RowsPacked (AVX2, AVX3)"
exit "$status"
