# cmake -DINPUT=x.cu -DOUTPUT=x.cpp -P rewrite_launches.cmake
# Turns every kernel launch `name<<<config>>>(args)` (name possibly with template arguments) into
# `::mg_cuda_emulator::Launch(config)([=](auto&&... mg_args) { name(mg_args...); }, args)`, plain C++
# the CUDA emulator runs (include/cuda_runtime.h). The generic lambda lets the call deduce a
# kernel template's arguments from the launch's, as nvcc does.
file(READ "${INPUT}" source)
string(REGEX REPLACE
  "([A-Za-z_][A-Za-z0-9_]*(<[^;<>]*>)?)<<<([^;]*)>>>\\("
  "::mg_cuda_emulator::Launch(\\3)([=](auto&&... mg_args) { \\1(mg_args...); }, "
  source "${source}")
string(FIND "${source}" "<<<" left_over)
if(NOT left_over EQUAL -1)
  message(FATAL_ERROR "rewrite_launches: a launch in ${INPUT} has a form this script does not know")
endif()
file(WRITE "${OUTPUT}.tmp" "#line 1 \"${INPUT}\"\n${source}")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
