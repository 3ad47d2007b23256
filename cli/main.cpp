#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "livestate/core/detail/text.hpp"
#include "livestate/core/error.hpp"

namespace {

constexpr const char* usage =
    "usage: livestate COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  chaos    masters run Buildbot's build-request lifecycle while live views\n"
    "           follow it through faulty connectors; every view must converge\n"
    "  demo     produce Buildbot-shaped messages through the in-process connector\n"
    "           to a few filtered consumers and print what each received\n"
    "  migrate  apply the schema migrations to a database, or show them (--status)\n"
    "  produce  produce one message (KEY JSON) on the database's connector\n"
    "  replay   replay a Buildbot message trace into the store and, through\n"
    "           faulty connectors, to live views of every type in it\n"
    "  slots    list the logical transport's replication slots and the WAL each\n"
    "           keeps, or drop a durable consumer's (slots drop NAME)\n"
    "  view     print a database's entries of a resource type\n"
    "  watch    print the messages matching a filter as they arrive, one JSON\n"
    "           line each, and the connector's control events\n"
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
    if (command == "chaos") return livestate::cli::run_chaos(args, std::cout);
    if (command == "demo") return livestate::cli::run_demo(args, std::cout);
    if (command == "migrate") return livestate::cli::run_migrate(args, std::cout);
    if (command == "produce") return livestate::cli::run_produce(args, std::cout);
    if (command == "replay") return livestate::cli::run_replay(args, std::cout);
    if (command == "slots") return livestate::cli::run_slots(args, std::cout);
    if (command == "view") return livestate::cli::run_view(args, std::cout);
    if (command == "watch") return livestate::cli::run_watch(args, std::cout);
    std::cerr << "livestate: unknown command '" << command << "'; run 'livestate --help'\n";
    return 2;
  } catch (const livestate::cli::UsageError& error) {
    std::cerr << "livestate " << command << ": " << livestate::detail::one_line(error.message) << "\n";
    return 2;
  } catch (const std::exception& error) {
    std::cerr << "livestate " << command << ": " << livestate::detail::one_line(error.what()) << "\n";
    return 1;
  }
}
