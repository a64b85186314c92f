# `permdnn sim --validate` end to end: passes on the shipped table (with the
# functional check on every layer), fails when a figure drifts, and
# --strict fails on the documented gaps.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})
set(TECH ${SRC}/data/sim/tech_28nm.json)
execute_process(COMMAND ${PERMDNN} sim --validate --tech ${TECH} --json ${OUT}/validate.json
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "permdnn sim --validate failed (${rc}):\n${out}\n${err}")
endif()
foreach(needle "Published figures the models are held to" "PermDNN chip +power" "EIE per layer"
        "int16 output == kernels::PermDiagMatVecI16 on 9/9 layers")
  if(NOT out MATCHES "${needle}")
    message(FATAL_ERROR "permdnn sim --validate output lacks '${needle}':\n${out}")
  endif()
endforeach()
file(READ ${OUT}/validate.json json)
string(JSON passed GET "${json}" validation passed)
if(NOT passed STREQUAL "ON")
  message(FATAL_ERROR "validate.json: passed = ${passed}")
endif()

# A table whose SRAM reads cost half: the modeled figures move, and the
# command must say so with exit status 1.
file(READ ${TECH} table)
string(JSON v8 GET "${table}" energy_pj sram_read_64b_8kb value)
string(JSON v32 GET "${table}" energy_pj sram_read_64b_32kb value)
string(JSON v1m GET "${table}" energy_pj sram_read_64b_1mb value)
if(NOT v8 EQUAL 10 OR NOT v32 EQUAL 20 OR NOT v1m EQUAL 100)
  message(FATAL_ERROR "update this test: the shipped SRAM energies changed (${v8}, ${v32}, ${v1m})")
endif()
string(JSON table SET "${table}" energy_pj sram_read_64b_8kb value "5.0")
string(JSON table SET "${table}" energy_pj sram_read_64b_32kb value "10.0")
string(JSON table SET "${table}" energy_pj sram_read_64b_1mb value "50.0")
file(WRITE ${OUT}/cheap_sram.json "${table}")
execute_process(COMMAND ${PERMDNN} sim --validate --no-check --tech ${OUT}/cheap_sram.json
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "outside its tolerance or drifted")
  message(FATAL_ERROR "--validate with halved SRAM energies: expected exit 1, got ${rc}:\n${out}\n${err}")
endif()

execute_process(COMMAND ${PERMDNN} sim --validate --strict --no-check --tech ${TECH}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "published targets are not met")
  message(FATAL_ERROR "--validate --strict: expected exit 1 on the documented gaps, got ${rc}:\n${out}\n${err}")
endif()
