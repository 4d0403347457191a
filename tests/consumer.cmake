# ctest `consumer`: installs this build of moegrad into a scratch prefix and builds a tiny project
# against it with find_package(moegrad), then builds the same project with add_subdirectory of the
# source tree (tests/consumer/run_consumer.cmake). Needs the libraries built first (`cmake --build`).
add_test(NAME consumer
         COMMAND ${CMAKE_COMMAND}
                 -DMOEGRAD_SOURCE_DIR=${PROJECT_SOURCE_DIR}
                 -DMOEGRAD_BINARY_DIR=${PROJECT_BINARY_DIR}
                 -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/consumer
                 -DGENERATOR=${CMAKE_GENERATOR}
                 -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
                 -DCONFIG=$<CONFIG>
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/consumer/run_consumer.cmake)
set_tests_properties(consumer PROPERTIES LABELS consumer TIMEOUT 600)
