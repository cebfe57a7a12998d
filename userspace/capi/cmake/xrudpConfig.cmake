# CMake package config for the xrudp C API: `find_package(xrudp CONFIG REQUIRED)` then
# `target_link_libraries(game PRIVATE xrudp::xrudp)`. Point CMake here with
# -Dxrudp_DIR=<repo>/userspace/capi/cmake. The library is looked for in XRUDP_LIB_DIR,
# then in the repository's target/release and target/debug (docs/CLIENTS.md).
# XRUDP_STATIC=ON links libxrudp_c.a (or xrudp_c.lib) instead of the shared library.
get_filename_component(_xrudp_capi "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
get_filename_component(_xrudp_repo "${_xrudp_capi}/../.." ABSOLUTE)
set(_xrudp_hints ${XRUDP_LIB_DIR} "${_xrudp_repo}/target/release" "${_xrudp_repo}/target/debug")

if(XRUDP_STATIC)
  find_library(XRUDP_LIBRARY NAMES libxrudp_c.a xrudp_c.lib HINTS ${_xrudp_hints} NO_DEFAULT_PATH)
  set(_xrudp_kind STATIC)
else()
  # On Windows the import library (xrudp_c.dll.lib / libxrudp_c.dll.a) is what links.
  find_library(XRUDP_LIBRARY NAMES xrudp_c xrudp_c.dll libxrudp_c.dll.a HINTS ${_xrudp_hints} NO_DEFAULT_PATH)
  set(_xrudp_kind UNKNOWN)
endif()

if(NOT XRUDP_LIBRARY)
  set(xrudp_FOUND FALSE)
  set(xrudp_NOT_FOUND_MESSAGE
    "libxrudp_c not found in ${_xrudp_hints}: build it (cargo build --release -p xrudp-capi) or set XRUDP_LIB_DIR")
  return()
endif()

if(NOT TARGET xrudp::xrudp)
  add_library(xrudp::xrudp ${_xrudp_kind} IMPORTED)
  set_target_properties(xrudp::xrudp PROPERTIES
    IMPORTED_LOCATION "${XRUDP_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${_xrudp_capi}/include")
  if(XRUDP_STATIC AND UNIX)
    # What the Rust standard library needs from the system when linked statically.
    set_property(TARGET xrudp::xrudp PROPERTY INTERFACE_LINK_LIBRARIES pthread dl m)
  elseif(XRUDP_STATIC AND WIN32)
    set_property(TARGET xrudp::xrudp PROPERTY INTERFACE_LINK_LIBRARIES ws2_32 userenv bcrypt ntdll)
  endif()
endif()
set(xrudp_FOUND TRUE)
