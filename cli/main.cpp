#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "livestate/core/error.hpp"

namespace {

constexpr const char* usage =
    "usage: livestate COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  demo    produce Buildbot-shaped messages through the in-process connector\n"
    "          to a few filtered consumers and print what each received\n"
    "\n"
    "Run 'livestate COMMAND --help' for a command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << "livestate: no command given; run 'livestate --help'\n";
    return 2;
  }
  const std::string command = args.front();
  args.erase(args.begin());
  try {
    if (command == "--help" || command == "-h" || command == "help") {
      std::cout << usage;
      return 0;
    }
    if (command == "demo") return livestate::cli::run_demo(args, std::cout);
    std::cerr << "livestate: unknown command '" << command << "'; run 'livestate --help'\n";
    return 2;
  } catch (const livestate::cli::UsageError& error) {
    std::cerr << "livestate " << command << ": " << error.message << "\n";
    return 2;
  } catch (const std::exception& error) {
    std::cerr << "livestate " << command << ": " << error.what() << "\n";
    return 1;
  }
}
