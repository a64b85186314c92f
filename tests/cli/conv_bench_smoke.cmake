# permdnn_conv_bench on resnet18's layer4 shapes at p = 4, one run each:
# exits 0, prints a row per layer, both counts at 70% and the rows below
# their activation floor, the issue-rate line and the bound it puts on the
# 1x1 rows, and writes JSON with the rows (each with its floor) and the
# rates; bad arguments are errors that name them.
execute_process(COMMAND ${BENCH} --batch 1 --p 4 --only layer4 --reps 1 --rounds 1 --json ${OUT}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "permdnn_conv_bench failed (${rc}):\n${out}\n${err}")
endif()
foreach(pattern "layer4 3x3 +1 +4 " "layer4.0 3x3 s2 +1 +4 " "layer4.0 down 1x1 s2 +1 +4 "
                "3x3 layers with permdiag GMAC/s per stored weight >= 70% of oneDNN's direct dense: [0-2] of 2"
                "1x1 layers with permdiag GMAC/s per stored weight >= 70% of oneDNN's direct dense: [01] of 1"
                "below the activation floor at 70% \\(one read of the input and one write of the output take longer\\): [0-2] of 2 3x3 rows, [01] of 1 1x1 rows"
                "issue rates \\([A-Z0-9_]+, 12 chains, 0.2 s each\\): [0-9.]+ FMAs/ns alone, [0-9.]+ permutations/ns alone, [0-9.]+ permutation\\+FMA pairs/ns"
                "one permutation per FMA \\(1x1 runs\\): at most [0-9.]+ GMAC/s per stored weight = [0-9]+% of the median dense 1x1 row")
  if(NOT out MATCHES "${pattern}")
    message(FATAL_ERROR "permdnn_conv_bench output lacks '${pattern}':\n${out}")
  endif()
endforeach()
file(READ ${OUT} json)
string(JSON nrows LENGTH "${json}" rows)
if(NOT nrows EQUAL 3)
  message(FATAL_ERROR "expected 3 rows in the JSON, got ${nrows}")
endif()
foreach(i 0 1 2)
  string(JSON floor GET "${json}" rows ${i} activation_floor_ms)
  if(NOT floor GREATER 0)
    message(FATAL_ERROR "row ${i}: activation_floor_ms = '${floor}'")
  endif()
endforeach()
string(JSON kernel GET "${json}" rows 2 kernel)
if(NOT kernel STREQUAL "permdiag.conv.1x1s2")
  message(FATAL_ERROR "the 1x1 row ran '${kernel}'")
endif()
foreach(key fma_per_ns permute_per_ns pair_per_ns)
  string(JSON rate GET "${json}" issue ${key})
  if(NOT rate GREATER 0)
    message(FATAL_ERROR "issue ${key} = '${rate}'")
  endif()
endforeach()
execute_process(COMMAND ${BENCH} --p 0 RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "--p takes positive block sizes, got 0")
  message(FATAL_ERROR "--p 0 should fail naming it (${rc}):\n${err}")
endif()
execute_process(COMMAND ${BENCH} --simd-target avx9 RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "--simd-target: 'avx9' is not a SIMD target this build and CPU run \\(available: [A-Z0-9, ]+\\)")
  message(FATAL_ERROR "--simd-target avx9 should fail naming it (${rc}):\n${err}")
endif()
