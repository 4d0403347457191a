# `cmake --install` provides find_package(moegrad) -> moegrad::moegrad; add_subdirectory users
# get the same target name through the alias below.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

add_library(moegrad INTERFACE)
add_library(moegrad::moegrad ALIAS moegrad)
set_target_properties(moegrad PROPERTIES EXPORT_NAME moegrad)
# moegrad.hpp includes the MoE module and the data library, so the umbrella target links them (and
# through the MoE module nn).
target_link_libraries(moegrad INTERFACE moegrad_engine moegrad_moe moegrad_data)

# An emulated-CUDA build (tests/cuda_emulator) exists to run the tests; it installs nothing.
if(MOEGRAD_CUDA_EMULATOR)
  return()
endif()

# The static libraries, their headers (include/moegrad/{moegrad.hpp,engine/,nn/,moe/,data/}) and
# the package files. moegrad::nn, moegrad::moe and moegrad::data are exported too, for users of the
# modules, optimizers, MoE layers and data sets.
install(TARGETS moegrad moegrad_engine moegrad_nn moegrad_moe moegrad_data EXPORT moegradTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${PROJECT_SOURCE_DIR}/moegrad.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/moegrad)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/engine ${PROJECT_SOURCE_DIR}/nn ${PROJECT_SOURCE_DIR}/moe
                  ${PROJECT_SOURCE_DIR}/data
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/moegrad FILES_MATCHING PATTERN "*.hpp")
install(EXPORT moegradTargets NAMESPACE moegrad:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/moegrad)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/moegradConfig.cmake.in
  ${PROJECT_BINARY_DIR}/moegradConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/moegrad)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/moegradConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/moegradConfig.cmake ${PROJECT_BINARY_DIR}/moegradConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/moegrad)
