# Helpers for tinylm's own targets (not installed).

# Warnings every tinylm translation unit compiles with.
function(tinylm_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unknown-pragmas)
  if(TINYLM_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(TINYLM_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
endfunction()

# A test executable's optimisation in Release builds (TINYLM_TEST_OPTIMIZATION, after the build type's -O3).
function(tinylm_set_test_optimization target)
  if(TINYLM_TEST_OPTIMIZATION)
    target_compile_options(${target} PRIVATE $<$<CONFIG:Release>:${TINYLM_TEST_OPTIMIZATION}>)
  endif()
endfunction()

# A program's optimisation in Release builds (TINYLM_PROGRAM_OPTIMIZATION, after the build type's -O3).
function(tinylm_set_program_optimization target)
  if(TINYLM_PROGRAM_OPTIMIZATION)
    target_compile_options(${target} PRIVATE $<$<CONFIG:Release>:${TINYLM_PROGRAM_OPTIMIZATION}>)
  endif()
endfunction()

# TINYLM_UNITY: the target's files compile as one translation unit (CMakeLists.txt says why).
function(tinylm_set_unity target)
  if(TINYLM_UNITY)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 0)
    # The files are #included by the unity file, so GCC takes them for headers and warns when a template of a
    # named namespace uses a type of the file's anonymous namespace: right for headers, meaningless here.
    target_compile_options(${target} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-subobject-linkage>)
  endif()
endfunction()

# tinylm_add_test(name SOURCES a.cpp b.cpp [LIBS ...] [LABELS ...] [SHARED_DATA])
# One Boost.Test executable per area, linked against the shared unit_test_framework. Test cases that need the
# data dir (tl_test::needs_data, tests/support/data.hpp) make the executable exit with 77 when their data is
# absent: ctest reports that as skipped. SHARED_DATA: the executable mixes such cases with others; they then
# run as their own ctest entry, ${name}_shared_data (label "shared_data"), so that the others still count as
# passed without the data.
function(tinylm_add_test name)
  cmake_parse_arguments(ARG "SHARED_DATA" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE tinylm_test_main tinylm::tinylm Boost::unit_test_framework ${ARG_LIBS})
  target_compile_definitions(${name} PRIVATE BOOST_TEST_DYN_LINK
                                             TINYLM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  tinylm_set_warnings(${name})
  tinylm_set_test_optimization(${name})
  tinylm_set_unity(${name})
  set(_tests ${name})
  if(ARG_SHARED_DATA)
    add_test(NAME ${name} COMMAND ${name} --log_level=message --report_level=short "--run_test=!@shared_data")
    add_test(NAME ${name}_shared_data COMMAND ${name} --log_level=message --report_level=short --run_test=@shared_data)
    set_tests_properties(${name}_shared_data PROPERTIES LABELS "${ARG_LABELS};shared_data")
    list(APPEND _tests ${name}_shared_data)
  else()
    add_test(NAME ${name} COMMAND ${name} --log_level=message --report_level=short)
  endif()
  set_tests_properties(${_tests} PROPERTIES SKIP_RETURN_CODE 77)
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()

# tinylm_add_example(name SOURCES ...)
function(tinylm_add_example name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE tinylm::tinylm ${ARG_LIBS})
  # examples/common/cli_checks.hpp: flag ranges, the output folder, one-line errors (every program).
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/examples/common)
  tinylm_set_warnings(${name})
  tinylm_set_program_optimization(${name})
endfunction()

# tinylm_add_example_test(name PASS regex [SKIP_RETURN_CODE n] COMMAND target-or-program args...)
# An example's smoke test (label "example"): passes only when the program exits with 0 and its output matches
# `regex` (grep -E over the whole output), through tests/support/run_example.sh; PASS_REGULAR_EXPRESSION alone
# would ignore the exit code. SKIP_RETURN_CODE: the program's exit code for "my data is absent", which ctest
# then reports as skipped. The program sees TINYLM_DATA_DIR, by default <source>/../shared/data. An argument
# cannot hold a ";" (CMake splits it): chain shell commands with && or newlines.
function(tinylm_add_example_test name)
  cmake_parse_arguments(ARG "" "PASS;SKIP_RETURN_CODE" "COMMAND" ${ARGN})
  if(NOT ARG_PASS OR NOT ARG_COMMAND)
    message(FATAL_ERROR "tinylm_add_example_test(${name}): PASS and COMMAND are required")
  endif()
  list(POP_FRONT ARG_COMMAND _program)
  if(TARGET ${_program})
    set(_program $<TARGET_FILE:${_program}>)
  endif()
  set(_opts -d ${PROJECT_SOURCE_DIR}/../shared/data)
  if(DEFINED ARG_SKIP_RETURN_CODE)
    list(APPEND _opts -s ${ARG_SKIP_RETURN_CODE})
  endif()
  add_test(NAME ${name} COMMAND bash ${PROJECT_SOURCE_DIR}/tests/support/run_example.sh ${_opts} ${ARG_PASS}
                                ${_program} ${ARG_COMMAND})
  set_tests_properties(${name} PROPERTIES LABELS "example")
  if(DEFINED ARG_SKIP_RETURN_CODE)
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE ${ARG_SKIP_RETURN_CODE})
  endif()
endfunction()
