// A durable consumer of the logical transport, a process of its own
// (logical_kill_consumer), killed with SIGKILL at random moments while four
// writers commit 20,000 changes (and roll some back), and started again each
// time. At the end it has every committed change at least once, none out of
// its writer's commit order, and none of a transaction that rolled back:
// counted exactly.

#include <doctest/doctest.h>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../unit/eventually.hpp"
#include "connector_fixtures.hpp"
#include "livestate/livestate.hpp"
#include "pg_test_server.hpp"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using livestate::Filter;
using livestate::Json;
namespace mq = livestate::mq;
namespace db = livestate::db;

constexpr int writers = 4;
constexpr int changes_per_writer = 5000;

pid_t spawn_consumer(const std::vector<std::string>& arguments) {
  std::vector<std::string> words{LIVESTATE_KILL_CONSUMER};
  words.insert(words.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
  return pid;
}

void kill_and_reap(pid_t pid, int signal) {
  ::kill(pid, signal);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// The ids in the consumer's file, in the order it got them ("kill.w2-17.new {…}").
std::vector<std::string> received_ids(const std::string& file) {
  std::vector<std::string> ids;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("kill.")) continue;  // the stores' own announcements
    const auto first = line.find('.');
    const auto second = line.find('.', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;  // a line cut short: never acknowledged
    ids.push_back(line.substr(first + 1, second - first - 1));
  }
  return ids;
}

}  // namespace

TEST_CASE(
    "a durable consumer killed at random moments while four writers commit 20,000 changes gets every "
    "committed change at least once, in each writer's commit order, and none rolled back") {
  livestate::test::FreshSchema schema;
  livestate::test::Executor executor;
  const auto options = livestate::test::fresh_channel();
  const auto url = livestate::test::with_connection_parameters(schema.url(), "transport=logical", "transport=logical");
  const std::string name = "killed";
  const std::string file = "/tmp/" + livestate::test::random_name("livestate_kill") + ".lines";
  const std::shared_ptr<void> remove_file(nullptr, [&](void*) { std::remove(file.c_str()); });

  {  // The name's slot, from now on.
    auto connector = mq::make_postgres_connector(url, executor.get(), options);
    livestate::test::Inbox ignored;
    connector->start_consuming(ignored.callback(), Filter::parse("#"), name)->stop_consuming();
  }

  std::mutex ledger_mutex;
  std::vector<std::vector<std::string>> committed(writers);  // each writer's, in commit order
  std::set<std::string> rolled_back;
  std::atomic<int> writing{writers};
  const auto write = [&](int writer) {
    auto connector = mq::make_postgres_connector(url, executor.get(), options);
    auto store = db::Store::open(url, *connector);
    std::mt19937_64 random(static_cast<std::uint64_t>(writer) + 1);
    for (int n = 0; n < changes_per_writer; ++n) {
      const std::string id = "w" + std::to_string(writer) + "-" + std::to_string(n);
      auto transaction = store->begin();
      transaction.upsert_resource("kill", id, {{"n", n}});
      if (random() % 10 == 0) {
        transaction.rollback();
        std::lock_guard lock(ledger_mutex);
        rolled_back.insert(id);
        continue;
      }
      transaction.commit();
      std::lock_guard lock(ledger_mutex);
      committed[static_cast<std::size_t>(writer)].push_back(id);
    }
    --writing;
  };
  std::vector<std::thread> threads;
  for (int writer = 0; writer < writers; ++writer) threads.emplace_back(write, writer);

  // Started, killed after 50 to 600 ms, started again: until the writers are done.
  const std::vector<std::string> arguments{url, options.channel, name, file};
  std::mt19937_64 random(20261128);
  int kills = 0;
  while (writing > 0) {
    const pid_t consumer = spawn_consumer(arguments);
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + random() % 550));
    kill_and_reap(consumer, SIGKILL);
    ++kills;
  }
  for (auto& thread : threads) thread.join();

  // The last one runs until it has everything.
  std::set<std::string> expected;
  for (const auto& ids : committed) expected.insert(ids.begin(), ids.end());
  const pid_t last = spawn_consumer(arguments);
  const bool complete = livestate::test::eventually(
      [&] {
        const auto ids = received_ids(file);
        return std::set<std::string>(ids.begin(), ids.end()).size() >= expected.size();
      },
      60s, 100ms);
  std::this_thread::sleep_for(300ms);  // anything more would come now
  kill_and_reap(last, SIGTERM);
  CHECK(complete);

  const auto ids = received_ids(file);
  const std::set<std::string> distinct(ids.begin(), ids.end());
  std::size_t from_rolled_back = 0;
  for (const auto& id : distinct) from_rolled_back += rolled_back.count(id);
  CHECK(from_rolled_back == 0);
  CHECK(distinct == expected);  // every committed one, nothing else
  // In each writer's commit order: after the first copy of its k-th commit
  // comes nothing of a later one before the (k+1)-th; repeats (after a kill)
  // are never newer than what came first.
  std::map<std::string, std::pair<int, std::size_t>> place;  // id -> (writer, index in its commits)
  for (int writer = 0; writer < writers; ++writer) {
    for (std::size_t i = 0; i < committed[static_cast<std::size_t>(writer)].size(); ++i) {
      place[committed[static_cast<std::size_t>(writer)][i]] = {writer, i};
    }
  }
  std::vector<std::size_t> next(writers, 0);
  std::size_t out_of_order = 0;
  for (const auto& id : ids) {
    const auto found = place.find(id);
    if (found == place.end()) continue;
    auto& frontier = next[static_cast<std::size_t>(found->second.first)];
    if (found->second.second > frontier) ++out_of_order;
    if (found->second.second == frontier) ++frontier;
  }
  CHECK(out_of_order == 0);
  MESSAGE(kills, " kills; ", expected.size(), " changes committed, ", rolled_back.size(), " rolled back; ", ids.size(),
          " deliveries (", ids.size() - distinct.size(), " again after a kill)");
}
