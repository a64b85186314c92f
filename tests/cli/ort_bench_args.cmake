# scripts/ort_bench.js (the ONNX Runtime side of scripts/bench-runtime.py):
# its argument parsing, without ONNX Runtime (--parse-only stops before
# loading it). Good arguments parse to the expected values; each bad one
# exits 2 naming the flag.
function(run_driver)
  execute_process(COMMAND ${NODE} ${DRIVER} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(rc "${rc}" PARENT_SCOPE)
  set(out "${out}" PARENT_SCOPE)
  set(err "${err}" PARENT_SCOPE)
endfunction()

run_driver(--model m.onnx --input x.npy --threads=2 --min-time 0.25 --output y.npy --parse-only)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "good arguments failed (${rc}): ${err}")
endif()
foreach(pair "model:m.onnx" "input:x.npy" "output:y.npy")
  string(REPLACE ":" ";" kv "${pair}")
  list(GET kv 0 key)
  list(GET kv 1 want)
  string(JSON got GET "${out}" ${key})
  if(NOT got STREQUAL want)
    message(FATAL_ERROR "${key}: got '${got}', expected '${want}' in ${out}")
  endif()
endforeach()
string(JSON threads GET "${out}" threads)
string(JSON min_time GET "${out}" minTime)
string(JSON min_runs GET "${out}" minRuns)
if(NOT threads EQUAL 2 OR NOT min_time STREQUAL "0.25" OR NOT min_runs EQUAL 5)
  message(FATAL_ERROR "parsed threads=${threads} minTime=${min_time} minRuns=${min_runs}: ${out}")
endif()

foreach(case
    "--threads;x;--model;m;--input;x|--threads: 'x' is not an integer"
    "--threads;0;--model;m;--input;x|--threads must be >= 1"
    "--min-time;-1;--model;m;--input;x|--min-time must be >= 0"
    "--input;x|--model is required"
    "--model;m|--input is required"
    "--model;m;--input;x;--bogus|unknown argument '--bogus'"
    "--model;m;--input|--input needs a value"
    "--model;m;--input;x;--parse-only=1|--parse-only takes no value")
  string(REPLACE "|" ";" parts "${case}")
  list(GET parts -1 want)
  list(REMOVE_AT parts -1)
  run_driver(${parts} --parse-only)
  if(NOT rc EQUAL 2)
    message(FATAL_ERROR "'${parts}': exit ${rc}, expected 2 (${err})")
  endif()
  string(FIND "${err}" "${want}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "'${parts}': error '${err}' lacks '${want}'")
  endif()
endforeach()
