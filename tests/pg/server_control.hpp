#pragma once

// Stopping and starting the harness's own PostgreSQL server (tests that
// restart it must run alone: RUN_SERIAL). The harness exports
// LIVESTATE_TEST_PG_CTL (tests/pg/with-test-postgres.sh, when it started the
// server itself); without it these tests are skipped.

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pg_test_server.hpp"

extern char** environ;

namespace livestate::test {

using namespace std::chrono_literals;

// The harness's pg_ctl for the server LIVESTATE_TEST_PG names; nullopt when
// there is none (a server given by the caller is not ours to stop).
inline std::optional<std::string> server_control() {
  const char* ctl = std::getenv("LIVESTATE_TEST_PG_CTL");
  const char* owner = std::getenv("LIVESTATE_TEST_PG_CTL_URL");
  if (ctl == nullptr || *ctl == '\0' || owner == nullptr || test_server_url() != owner) return std::nullopt;
  return std::string(ctl);
}

// ctest reports the test as skipped when its output has this (the test's
// SKIP_REGULAR_EXPRESSION in CMakeLists.txt).
inline constexpr char skip_reason[] =
    "skipped: LIVESTATE_TEST_PG_CTL is not set for the server LIVESTATE_TEST_PG names, so this test may not stop "
    "and start it; run it through tests/pg/with-test-postgres.sh without LIVESTATE_TEST_PG, so that it starts a "
    "throwaway server of its own";

// Runs `words` (a program, found on PATH, and its arguments) in `directory`
// (empty: this one) and waits for it; returns its exit status, -1 when it
// could not run or was killed.
inline int run_program(std::vector<std::string> words, const std::string& directory = {}) {
  std::vector<char*> argv;
  for (auto& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  if (posix_spawn_file_actions_init(&actions) != 0) return -1;
  if (!directory.empty() && posix_spawn_file_actions_addchdir_np(&actions, directory.c_str()) != 0) {
    posix_spawn_file_actions_destroy(&actions);
    return -1;
  }
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs the harness's pg_ctl (as the server's user, with its data directory and
// log file) with `args`; returns its exit status, -1 when it could not run.
// pg_ctl bounds its own waits (-t).
inline int pg_ctl(const std::string& ctl, const std::vector<std::string>& args) {
  std::vector<std::string> words{ctl};
  words.insert(words.end(), args.begin(), args.end());
  return run_program(std::move(words));
}

// The harness's server, stopped and started by the test; running again when
// this goes out of scope, also when an assertion failed on the way.
class Server {
 public:
  explicit Server(std::string ctl) : m_ctl(std::move(ctl)) {}
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server() {
    if (running()) return;
    std::fprintf(stderr, "the test: the server was left stopped; starting it again\n");
    if (!start())
      std::fprintf(stderr, "the test: the server did not start again: the tests after this one will fail\n");
  }

  [[nodiscard]] bool running() const { return pg_ctl(m_ctl, {"status"}) == 0; }
  // Like a crash: no shutdown checkpoint, every session cut at once.
  //
  // What is committed is made durable first. The harness's server runs with
  // synchronous_commit = off, so an immediate stop, like a crash, loses the
  // commits of the last few hundred milliseconds, and crash recovery brings
  // back a database without them: here, without the connector's tables when
  // its first produce created them just before. That is data loss on the
  // server, not what these tests are about (a restart with the committed data
  // intact); a CHECKPOINT flushes everything committed so far.
  [[nodiscard]] bool stop_immediately() const {
    livestate::test::run_on_server("CHECKPOINT");
    return pg_ctl(m_ctl, {"stop", "-m", "immediate", "-w", "-t", "20"}) == 0;
  }
  [[nodiscard]] bool start() const { return pg_ctl(m_ctl, {"start", "-w", "-t", "60"}) == 0; }

 private:
  std::string m_ctl;
};

}  // namespace livestate::test
