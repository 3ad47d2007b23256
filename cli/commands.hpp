#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace livestate::cli {

/// Thrown for bad command-line input: main prints it as one line and exits 2.
struct UsageError {
  std::string message;
};

int run_demo(const std::vector<std::string>& args, std::ostream& out);

}  // namespace livestate::cli
