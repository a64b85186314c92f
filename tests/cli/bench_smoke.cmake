# permdnn bench on tiny shapes: exits 0, prints the table, writes valid JSON
# with the contract's fields.
execute_process(COMMAND ${PERMDNN} bench --layers 64x96,33x50 --p 4,8 --batch 1,3 --act-density 1,0.35
                        --threads 1,2 --min-time 0 --reps 1 --json ${OUT}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "bench failed (${rc}):\n${out}\n${err}")
endif()
if(NOT out MATCHES "permdiag-skip" OR NOT out MATCHES "csr-eqbytes" OR NOT out MATCHES "dense")
  message(FATAL_ERROR "bench table lacks a format:\n${out}")
endif()
file(READ ${OUT} json)
# Each permdnn row names the kernel-table row that ran (kernels/table.h).
if(NOT out MATCHES "permdiag\\.packed\\.[a-z_]+<[0-9]+>" OR NOT out MATCHES "permdiag\\.matmul_rows\\.[a-z_]+"
   OR NOT out MATCHES "permdiag\\.sparse_input\\.(pow2|scatter)")
  message(FATAL_ERROR "bench table lacks the kernel names:\n${out}")
endif()
foreach(key layer m n format kernel p batch act_density threads median_ms speedup_vs_dense openblas_corename)
  string(FIND "${json}" "\"${key}\"" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "JSON lacks key ${key}")
  endif()
endforeach()
string(JSON nrec LENGTH "${json}" records)
# 2 layers x (dense 2 batches x 2 threads x 2 acts = 8; per p: csr 8 + csr-eqbytes 8 + permdiag 8 + skip 2
# = 26, x2 p) = 2 x 60
if(NOT nrec EQUAL 120)
  message(FATAL_ERROR "expected 120 records, got ${nrec}")
endif()

# bench_records(N ARGS...): runs `permdnn bench --layers 64x96 --p 8 --batch 1
# --act-density 1 --min-time 0 --reps 1 ARGS --json OUT`, fails unless it
# exits 0 with N records; leaves the JSON in `json` and stderr in `err`.
function(bench_records n)
  string(JOIN " " args ${ARGN})
  execute_process(COMMAND ${PERMDNN} bench --layers 64x96 --p 8 --batch 1 --act-density 1 --min-time 0 --reps 1
                          ${ARGN} --json ${OUT}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "bench ${args} failed (${rc}):\n${out}\n${err}")
  endif()
  file(READ ${OUT} json)
  string(JSON nrec LENGTH "${json}" records)
  if(NOT nrec EQUAL n)
    message(FATAL_ERROR "bench ${args}: expected ${n} records, got ${nrec}")
  endif()
  set(json "${json}" PARENT_SCOPE)
  set(err "${err}" PARENT_SCOPE)
  set(out "${out}" PARENT_SCOPE)
endfunction()

# --cpu-time: one-thread rows timed by CPU time, two-thread rows by the wall
# clock, and each record says which.
bench_records(2 --format permdiag --threads 1,2 --cpu-time)
foreach(i 0 1)
  string(JSON threads GET "${json}" records ${i} threads)
  string(JSON timer GET "${json}" records ${i} timer)
  string(JSON wall_ms GET "${json}" records ${i} wall_median_ms)
  if(NOT wall_ms GREATER 0)
    message(FATAL_ERROR "record ${i}: wall_median_ms '${wall_ms}' is not positive")
  endif()
  if((threads EQUAL 1 AND NOT timer STREQUAL "cpu") OR (threads EQUAL 2 AND NOT timer STREQUAL "wall"))
    message(FATAL_ERROR "record ${i}: threads ${threads} timed by '${timer}'")
  endif()
endforeach()

# --rounds 3: the same grid, one record per measurement, every median positive.
bench_records(2 --format permdiag,dense --threads 1 --rounds 3)
if(NOT err MATCHES "round 3 of 3")
  message(FATAL_ERROR "bench --rounds 3 did not report its rounds:\n${err}")
endif()
foreach(i 0 1)
  string(JSON reps GET "${json}" records ${i} reps)
  string(JSON speedup GET "${json}" records ${i} speedup_vs_dense)
  if(reps LESS 3 OR NOT speedup GREATER 0)
    message(FATAL_ERROR "record ${i}: reps ${reps}, speedup ${speedup} after 3 rounds")
  endif()
endforeach()

# --format read: one bare-read record per p at batch 1 and one thread, with
# the bytes of permdiag's values; next to permdiag and circulant it adds the
# read-bound line.
bench_records(3 --format permdiag,circulant,read --threads 1)
string(JSON format GET "${json}" records 0 format)
string(JSON bytes GET "${json}" records 0 weight_bytes)
if(NOT format STREQUAL "read" OR NOT bytes EQUAL 3072)
  message(FATAL_ERROR "first record: format '${format}', weight_bytes ${bytes} (expected read, 64x96/8 floats)")
endif()
if(NOT out MATCHES "read bound: 64x96 p=8: a bare read of permdiag's values takes [0-9.]+ ms; permdiag runs at [0-9]+% of it; circulant FFT / bare read = [0-9.]+x")
  message(FATAL_ERROR "no read-bound line:\n${out}")
endif()

# --simd-target: the grid once per named Highway target (SSE4 and SSSE3 exist on
# every x86-64 CPU this builds for), each record naming its target, and the
# fastest-target table; an unknown target is an error naming the available ones.
bench_records(4 --format permdiag,dense --threads 1 --simd-target sse4,SSSE3)
set(seen "")
foreach(i 0 1 2 3)
  string(JSON target GET "${json}" records ${i} simd_target)
  list(APPEND seen ${target})
endforeach()
if(NOT seen STREQUAL "SSE4;SSE4;SSSE3;SSSE3")
  message(FATAL_ERROR "--simd-target sse4,SSSE3 records ran on '${seen}'")
endif()
if(NOT out MATCHES "Fastest SIMD target per kernel and p" OR NOT out MATCHES "SIMD target SSE4:")
  message(FATAL_ERROR "--simd-target output lacks the per-target tables:\n${out}")
endif()
# ... and in Markdown (docs/benchmarks.md): the read bound per target, the
# fastest-target table with both targets' times, each row's kernel@target.
bench_records(6 --format permdiag,dense,read --threads 1 --simd-target sse4,ssse3 --markdown ${OUT}.md)
file(READ ${OUT}.md md)
if(NOT md MATCHES "### Fastest SIMD target per kernel and p" OR NOT md MATCHES "\\| SSE4 ms \\| SSSE3 ms \\|"
   OR NOT md MATCHES "\\| 64x96 \\| permdiag \\| 8 \\| 1 \\| [0-9.]+ \\| [0-9.]+ \\| SS"
   OR NOT md MATCHES "Read bound \\(batch 1, one thread, SIMD target SSSE3\\)" OR NOT md MATCHES "@SSE4 \\|"
   OR NOT md MATCHES "SIMD targets SSE4, SSSE3 in turn")
  message(FATAL_ERROR "--simd-target --markdown lacks the per-target sections:\n${md}")
endif()
# --blas-per-target: each target in a child process with OpenBLAS on the
# kernels of a CPU whose best target it is (SSE4: Nehalem, SSSE3: Core2),
# named in the dense rows' kernel and in the Markdown; without
# --simd-target it is an error.
bench_records(4 --format permdiag,dense --threads 1 --simd-target sse4,ssse3 --blas-per-target --markdown ${OUT}.md)
string(JSON k0 GET "${json}" records 0 kernel)
string(JSON t0 GET "${json}" records 0 simd_target)
string(JSON t2 GET "${json}" records 2 simd_target)
string(JSON c0 GET "${json}" environment openblas_per_target SSE4)
if(NOT k0 STREQUAL "openblas.sgemv (Nehalem)" OR NOT t0 STREQUAL "SSE4" OR NOT t2 STREQUAL "SSSE3"
   OR NOT c0 STREQUAL "Nehalem")
  message(FATAL_ERROR "--blas-per-target: first record '${k0}' on '${t0}', third on '${t2}', SSE4 core '${c0}'")
endif()
file(READ ${OUT}.md md)
if(NOT md MATCHES "OpenBLAS core per SIMD target \\(--blas-per-target[^\n]*SSE4 Nehalem, SSSE3 Core2")
  message(FATAL_ERROR "--blas-per-target --markdown lacks the cores:\n${md}")
endif()
execute_process(COMMAND ${PERMDNN} bench --layers 64x96 --blas-per-target
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "--blas-per-target needs --simd-target")
  message(FATAL_ERROR "--blas-per-target without --simd-target should fail (${rc}):\n${err}")
endif()
execute_process(COMMAND ${PERMDNN} bench --layers 64x96 --simd-target avx9
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "'avx9' is not a SIMD target" OR NOT err MATCHES "available: .*SSE4")
  message(FATAL_ERROR "--simd-target avx9 should fail naming the available targets (${rc}):\n${err}")
endif()
# --kernel: the named row of the kernel table runs in place of dispatch's
# pick (here the 8-bit product's fallback, on every machine's table), under
# --simd-target too; an unknown row is an error that lists the target's rows.
foreach(targets "" "--simd-target;sse4")
  execute_process(COMMAND ${PERMDNN} bench --layers 64x144 --format ternary-u8 --p 16 --batch 4 --act-density 1
                          --threads 1 --min-time 0 --reps 1 --kernel ternary.matmul_u8.plain ${targets} --json ${OUT}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "bench --kernel ternary.matmul_u8.plain ${targets} failed (${rc}):\n${out}\n${err}")
  endif()
  file(READ ${OUT} json)
  string(JSON k0 GET "${json}" records 0 kernel)
  if(NOT k0 STREQUAL "ternary.matmul_u8.plain")
    message(FATAL_ERROR "bench --kernel ternary.matmul_u8.plain ${targets} ran '${k0}'")
  endif()
endforeach()
execute_process(COMMAND ${PERMDNN} bench --layers 64x96 --kernel ternary.matmul_u8.nope
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "'ternary.matmul_u8.nope' is no row of the kernel table on SIMD target"
   OR NOT err MATCHES "ternary.matmul_u8.plain")
  message(FATAL_ERROR "--kernel ternary.matmul_u8.nope should fail listing the rows (${rc}):\n${err}")
endif()
# --kernel is checked on every --simd-target before anything is timed: the
# 8-bit product's .madd row exists on AVX2 but not on SSE4, so this fails
# naming SSE4 without having run the AVX2 pass (when this CPU has AVX2).
execute_process(COMMAND ${PERMDNN} bench --layers 64x144 --format ternary-u8 --p 16 --batch 4 --act-density 1
                        --threads 1 --min-time 0 --reps 1 --simd-target avx2,sse4 --kernel ternary.matmul_u8.madd
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(err MATCHES "'avx2' is not a SIMD target")
  message(STATUS "no AVX2 on this CPU: the two-target --kernel check is skipped")
elseif(rc EQUAL 0 OR NOT err MATCHES "'ternary.matmul_u8.madd' is no row of the kernel table on SIMD target SSE4"
       OR err MATCHES "SIMD target AVX2\n")
  message(FATAL_ERROR "--kernel should be refused for SSE4 before the AVX2 pass runs (${rc}):\n${out}\n${err}")
endif()
