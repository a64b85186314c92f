// Errors in permdnn.
//
// Public entry points validate their arguments and throw permdnn::Error with a
// message that says what was wrong and where (file, layer, expected vs got).
// Kernels do not validate: they only debug-assert (PERMDNN_DCHECK), because
// their callers have already checked shapes once at the boundary. Library code
// never exits the process; the CLI maps an Error to a message and exit code 1.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace permdnn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throws Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void Fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace permdnn

// Validation at a public boundary: always on.
#define PERMDNN_CHECK(cond, ...)          \
  do {                                    \
    if (!(cond)) ::permdnn::Fail(__VA_ARGS__); \
  } while (0)

// Internal invariant inside kernels: only in debug builds.
#ifdef NDEBUG
#define PERMDNN_DCHECK(cond) \
  do {                       \
  } while (0)
#else
#include <cassert>
#define PERMDNN_DCHECK(cond) assert(cond)
#endif
