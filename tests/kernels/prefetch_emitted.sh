#!/bin/sh
# The batched rows' software prefetches are in the binary (stop 54): GCC 12
# takes a function whose only effects are prefetches for pure and drops the
# calls to it that were not inlined first, and the kernels ran without them
# unnoticed (permdiag_simd.cc, PrefetchLine). For each of the AVX2 and AVX3
# targets compiled into the library (at least one must be), each named
# kernel must contain a prefetch instruction in some instance.
# Usage: prefetch_emitted.sh OBJDUMP LIBRARY
set -eu
objdump=$1 lib=$2
listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
"$objdump" -d -C --no-show-raw-insn "$lib" >"$listing"
status=0 checked=""
for target in AVX2 AVX3; do
  grep -q "N_${target}::" "$listing" || continue  # not compiled in (e.g. a static-target build)
  checked="$checked $target"
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
if [ -z "$checked" ]; then
  echo "neither the AVX2 nor the AVX3 target is compiled into $lib: nothing checked" >&2
  exit 1
fi
[ "$status" -eq 0 ] && echo "prefetches present in LanesChunk, RowsBatched, RowsMultiple, RowsPacked (${checked# })"
exit "$status"
