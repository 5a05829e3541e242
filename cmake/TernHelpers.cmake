# Shared CMake helpers for tern.

# Adds a component folder when it has a CMakeLists.txt.
macro(tern_add_component dir)
  if(EXISTS ${PROJECT_SOURCE_DIR}/${dir}/CMakeLists.txt)
    add_subdirectory(${PROJECT_SOURCE_DIR}/${dir} ${PROJECT_BINARY_DIR}/${dir})
  endif()
endmacro()

# tern_add_library(NAME SOURCES ... DEPS ... [PLANE control|data|common])
# One library target per component folder; PLANE records which side of the
# control/data boundary the target lives on so tern_check_plane_boundaries() can verify it.
function(tern_add_library name)
  cmake_parse_arguments(ARG "" "PLANE" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  if(ARG_PLANE)
    set_property(GLOBAL APPEND PROPERTY TERN_${ARG_PLANE}_TARGETS ${name})
  endif()
endfunction()

# tern_add_test(NAME SOURCES ... DEPS ... LABELS unit|integration|slow|gpu ... [TIMEOUT s])
# Adds a GoogleTest executable and registers it with CTest under the given labels, so that
# `ctest -L unit` and `ctest -LE slow` select tests by kind.
function(tern_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "TERN_BIN_DIR=${CMAKE_BINARY_DIR}/bin;TERN_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
  if("gpu" IN_LIST ARG_LABELS)
    # Exit code 77 from a GPU test means "no GPU here": reported as skipped, not passed.
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77)
  endif()
endfunction()

# Collects every library a target links, transitively.
function(_tern_collect_links target out_var)
  set(seen "")
  set(queue ${target})
  while(queue)
    list(POP_FRONT queue item)
    if(item IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${item})
    if(TARGET ${item})
      get_target_property(libs ${item} LINK_LIBRARIES)
      get_target_property(ilibs ${item} INTERFACE_LINK_LIBRARIES)
      foreach(l IN LISTS libs ilibs)
        if(l AND NOT l MATCHES "NOTFOUND" AND NOT l MATCHES "^\\$<")
          list(APPEND queue ${l})
        endif()
      endforeach()
    endif()
  endwhile()
  set(${out_var} ${seen} PARENT_SCOPE)
endfunction()

# Fails the configure step when a control-plane target links Torch or a data-plane target
# links gRPC: the boundary between the planes (docs/architecture.md, "Two planes"), checked on
# every configure.
function(tern_check_plane_boundaries)
  get_property(control GLOBAL PROPERTY TERN_control_TARGETS)
  get_property(data GLOBAL PROPERTY TERN_data_TARGETS)
  foreach(t IN LISTS control)
    _tern_collect_links(${t} links)
    foreach(l IN LISTS links)
      if(l MATCHES "^(torch|torch_cpu|torch_cuda|c10|c10_cuda)$" OR l MATCHES "libtorch")
        message(FATAL_ERROR "control-plane target ${t} links ${l}: the control plane must not link LibTorch")
      endif()
    endforeach()
  endforeach()
  foreach(t IN LISTS data)
    _tern_collect_links(${t} links)
    foreach(l IN LISTS links)
      if(l MATCHES "grpc" OR l MATCHES "^tern_rpc$" OR l MATCHES "^tern_proto$")
        message(FATAL_ERROR "data-plane target ${t} links ${l}: the data plane must not link gRPC")
      endif()
    endforeach()
  endforeach()
endfunction()
