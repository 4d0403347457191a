// mg::Error and the check macro every op uses to reject bad input. Messages name the op and the
// offending shapes/dtypes, so a user can find the mistake without a debugger.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace mg {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace mg

// MG_CHECK(cond, "op: ", details...) throws mg::Error with the concatenated message when cond fails.
#define MG_CHECK(cond, ...)                                       \
  do {                                                            \
    if (!(cond)) throw ::mg::Error(::mg::detail::concat(__VA_ARGS__)); \
  } while (0)
