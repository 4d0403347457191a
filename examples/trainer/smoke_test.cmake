# ctest train_moe_smoke (cmake -P): runs train_moe on 600 Fashion-MNIST training images for two
# epochs in two invocations (--stop-after-epochs 1, then --resume), then --expert-summary, and
# fails unless each exits 0 and the run folder holds what a run promises. First, a device no
# machine has must stop train_moe with exit code 1 and one line naming it, before any run folder.
# Inputs: -DTRAIN_MOE=<path of train_moe> -DRUN_DIR=<scratch folder>
file(REMOVE_RECURSE "${RUN_DIR}")

function(run_step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "train_moe ${name} exited with ${rc}\n--- stdout\n${out}\n--- stderr\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

execute_process(COMMAND "${TRAIN_MOE}" --device cuda:99 --out "${RUN_DIR}" RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "^error: train_moe: --device cuda:99 is not available: [^\n]+\n$"
   OR NOT out STREQUAL "" OR EXISTS "${RUN_DIR}")
  message(FATAL_ERROR "train_moe --device cuda:99 exited with ${rc}, expected 1 with one error line "
                      "and no run folder\n--- stdout\n${out}\n--- stderr\n${err}")
endif()

run_step(first "${TRAIN_MOE}" --dataset fashion-mnist --max-train-examples 600 --max-test-examples 300
         --epochs 2 --stop-after-epochs 1 --width 4 --batch-size 50 --experts 3 --expert-hidden 16
         --log-every 4 --threads 1 --workers 1 --out "${RUN_DIR}")
run_step(resume "${TRAIN_MOE}" --resume "${RUN_DIR}" --threads 1)
run_step(summary "${TRAIN_MOE}" --expert-summary "${RUN_DIR}" --threads 1)
if(NOT step_output MATCHES "parameters" OR NOT step_output MATCHES "top-1")
  message(FATAL_ERROR "--expert-summary printed no expert table:\n${step_output}")
endif()

foreach(file config.json metrics.jsonl last.safetensors best.safetensors report.html loss.svg accuracy.svg
             expert_share_head.svg routing_head_classes.svg routing_head_superclasses.svg superclass_accuracy.svg)
  if(NOT EXISTS "${RUN_DIR}/${file}")
    message(FATAL_ERROR "the run folder ${RUN_DIR} has no ${file}")
  endif()
endforeach()

file(STRINGS "${RUN_DIR}/metrics.jsonl" epoch_lines REGEX "\"type\":\"epoch\"")
list(LENGTH epoch_lines epochs)
if(NOT epochs EQUAL 2)
  message(FATAL_ERROR "metrics.jsonl has ${epochs} epoch records after 1 epoch + resume + 1 epoch, expected 2")
endif()
file(READ "${RUN_DIR}/report.html" html)
if(NOT html MATCHES "<svg" OR NOT html MATCHES "Routing: head")
  message(FATAL_ERROR "report.html does not inline the plots")
endif()
