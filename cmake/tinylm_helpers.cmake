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

# tinylm_add_test(name SOURCES a.cpp b.cpp [LIBS ...] [LABELS ...])
# One Boost.Test executable per area, linked against the shared unit_test_framework.
function(tinylm_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE tinylm_test_main tinylm::tinylm Boost::unit_test_framework ${ARG_LIBS})
  target_compile_definitions(${name} PRIVATE BOOST_TEST_DYN_LINK
                                             TINYLM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  tinylm_set_warnings(${name})
  add_test(NAME ${name} COMMAND ${name} --log_level=message --report_level=short)
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()

# tinylm_add_example(name SOURCES ...)
function(tinylm_add_example name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE tinylm::tinylm ${ARG_LIBS})
  tinylm_set_warnings(${name})
endfunction()
