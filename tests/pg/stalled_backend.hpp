#pragma once

// A stalled server, as a hung disk or a paused VM makes one: the backend
// process of one of this test's connections stopped with SIGSTOP (the kernel
// still acknowledges what is sent to it; nothing answers). The harness runs
// the server as the postgres user and the tests as root, so kill() may.

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "pg_test_server.hpp"

namespace livestate::test {

/// The local TCP ports of this process's sockets (/proc/self/fd, /proc/net/tcp*).
inline std::set<int> own_tcp_ports() {
  std::set<std::string> inodes;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    const auto target = std::filesystem::read_symlink(entry.path(), error).string();
    if (!error && target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::set<int> ports;
  for (const char* table : {"/proc/self/net/tcp", "/proc/self/net/tcp6"}) {
    std::ifstream file(table);
    std::string line;
    std::getline(file, line);  // the heading
    while (std::getline(file, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      if (inodes.count(inode) == 0) continue;
      ports.insert(std::stoi(local.substr(local.find(':') + 1), nullptr, 16));
    }
  }
  return ports;
}

/// The server processes of this process's connections named `application`
/// (their application_name).
inline std::vector<int> own_backends(const std::string& application) {
  const auto ports = own_tcp_ports();
  pqxx::connection connection(test_server_url());
  pqxx::nontransaction work(connection);
  std::vector<int> pids;
  for (const auto& row :
       work.exec_params("SELECT pid, client_port FROM pg_stat_activity WHERE application_name = $1", application)) {
    if (!row[1].is_null() && ports.count(row[1].as<int>()) > 0) pids.push_back(row[0].as<int>());
  }
  return pids;
}

/// A backend stopped with SIGSTOP until resume() or the end of the scope (also
/// after a failed assertion: the server must go on for the other tests).
class StoppedBackend {
 public:
  explicit StoppedBackend(int pid) : m_pid(pid) { m_stopped = ::kill(pid, SIGSTOP) == 0; }
  StoppedBackend(const StoppedBackend&) = delete;
  StoppedBackend& operator=(const StoppedBackend&) = delete;
  ~StoppedBackend() { resume(); }

  [[nodiscard]] bool stopped() const noexcept { return m_stopped; }
  void resume() {
    if (m_stopped && ::kill(m_pid, SIGCONT) != 0) std::perror("the test: SIGCONT");
    m_stopped = false;
  }

 private:
  int m_pid;
  bool m_stopped = false;
};

}  // namespace livestate::test
