#pragma once

// A streaming replica of the harness's server (tests/pg/with-test-postgres.sh):
// pg_basebackup -R of the running server into a directory of its own, started
// on a free port as a hot standby that applies what it receives only after a
// delay (recovery_min_apply_delay), so that it lags by that much. It needs the
// harness's variables (LIVESTATE_TEST_PG_CTL for the server LIVESTATE_TEST_PG
// names, LIVESTATE_TEST_PG_BIN, LIVESTATE_TEST_PG_DATA, LIVESTATE_TEST_PG_USER);
// harness_for_replica() says whether they are there.
//
// The replica is stopped (immediate) and its directory removed when the
// object goes, also when an assertion failed on the way.

#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "pg_test_server.hpp"
#include "server_control.hpp"

namespace livestate::test {

// What a replica needs from the harness; nullopt when a variable is missing.
struct HarnessServer {
  std::string bin;   // the server's bin directory
  std::string data;  // the primary's data directory
  std::string user;  // the OS user the server runs as
  std::string port;  // the primary's port (from LIVESTATE_TEST_PG)
};

inline std::optional<HarnessServer> harness_for_replica() {
  if (!server_control()) return std::nullopt;
  const char* bin = std::getenv("LIVESTATE_TEST_PG_BIN");
  const char* data = std::getenv("LIVESTATE_TEST_PG_DATA");
  const char* user = std::getenv("LIVESTATE_TEST_PG_USER");
  if (bin == nullptr || *bin == '\0' || data == nullptr || *data == '\0' || user == nullptr || *user == '\0') {
    return std::nullopt;
  }
  // postgresql://postgres@127.0.0.1:PORT/livestate_test, as the harness writes it.
  const std::string url = test_server_url();
  const auto slash = url.find('/', url.find("://") + 3);
  const auto colon = url.rfind(':', slash);
  if (slash == std::string::npos || colon == std::string::npos) return std::nullopt;
  return HarnessServer{bin, data, user, url.substr(colon + 1, slash - colon - 1)};
}

// A TCP port on 127.0.0.1 that nothing listens on now (0 when none was found).
inline int free_local_port() {
  const int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (socket_fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  int port = 0;
  if (::bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(socket_fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(socket_fd);
  return port;
}

class Replica {
 public:
  // Makes and starts the replica; std::runtime_error when a step fails (what
  // was made is undone).
  Replica(const HarnessServer& server, std::chrono::seconds apply_delay) : m_server(server) {
    // Next to the primary's data directory: a directory the server's user can enter.
    std::string pattern = (std::filesystem::path(server.data).parent_path() / "replica.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("replica: mkdtemp failed for " + pattern);
    m_root = pattern;
    m_data = (m_root / "data").string();
    try {
      give_to_server_user(m_root);
      if (as_server_user({m_server.bin + "/pg_basebackup", "-h", "127.0.0.1", "-p", m_server.port, "-U", "postgres",
                          "-D", m_data, "-R", "-X", "stream", "-c", "fast"}) != 0) {
        throw std::runtime_error("replica: pg_basebackup of 127.0.0.1:" + m_server.port + " failed");
      }
      for (int attempt = 0; attempt < 5 && m_port == 0; ++attempt) {
        const int port = free_local_port();
        if (port == 0) continue;
        configure(port, apply_delay);
        if (as_server_user({m_server.bin + "/pg_ctl", "-D", m_data, "-l", log(), "-w", "-t", "60", "start"}) == 0) {
          m_port = port;
        }
      }
      if (m_port == 0) throw std::runtime_error("replica: the standby did not start (see " + log() + ")");
    } catch (...) {
      remove();
      throw;
    }
  }
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;
  ~Replica() { remove(); }

  // The replica's livestate_test database.
  [[nodiscard]] std::string url() const {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(m_port) + "/livestate_test";
  }
  [[nodiscard]] std::string log() const { return (m_root / "replica.log").string(); }

 private:
  int as_server_user(std::vector<std::string> words) const {
    if (::geteuid() == 0) words.insert(words.begin(), {"runuser", "-u", m_server.user, "--"});
    return run_program(std::move(words), m_root.string());
  }

  void give_to_server_user(const std::filesystem::path& path) const {
    if (::geteuid() != 0) return;
    const passwd* account = ::getpwnam(m_server.user.c_str());
    if (account == nullptr || ::chown(path.c_str(), account->pw_uid, account->pw_gid) != 0) {
      throw std::runtime_error("replica: cannot give " + path.string() + " to " + m_server.user);
    }
  }

  // Appended after the primary's settings (copied by pg_basebackup): the last
  // one of a name wins.
  void configure(int port, std::chrono::seconds apply_delay) const {
    std::ofstream conf(m_data + "/postgresql.conf", std::ios::app);
    conf << "\n# replica.hpp: a lagging hot standby\n"
         << "port = " << port << "\n"
         << "listen_addresses = '127.0.0.1'\n"
         << "unix_socket_directories = '" << m_root.string() << "'\n"
         << "hot_standby = on\n"
         << "recovery_min_apply_delay = '" << apply_delay.count() << "s'\n";
    if (!conf) throw std::runtime_error("replica: cannot write " + m_data + "/postgresql.conf");
  }

  void remove() noexcept {
    if (m_root.empty()) return;
    if (std::filesystem::exists(m_data + "/postmaster.pid")) {
      if (as_server_user({m_server.bin + "/pg_ctl", "-D", m_data, "-m", "immediate", "-w", "-t", "20", "stop"}) != 0) {
        std::fprintf(stderr, "replica: pg_ctl stop failed for %s\n", m_data.c_str());
      }
    }
    std::error_code ignored;
    std::filesystem::remove_all(m_root, ignored);
    m_root.clear();
  }

  HarnessServer m_server;
  std::filesystem::path m_root;
  std::string m_data;
  int m_port = 0;
};

// Has the replica replayed everything the primary committed so far? The
// primary's commits are made durable first (the harness runs it with
// synchronous_commit off), so that its flush position covers them.
class ReplayWatch {
 public:
  ReplayWatch(const std::string& primary_url, const std::string& replica_url)
      : m_primary(primary_url), m_replica(replica_url) {}

  // The position the replica must reach to have everything committed until now.
  std::string mark() {
    pqxx::work flush(m_primary);
    flush.exec("SET LOCAL synchronous_commit = on");
    // A write of its own, so that the commit is flushed (with all WAL before
    // it); a transaction that only takes an xid commits asynchronously.
    flush.exec("SELECT pg_logical_emit_message(true, 'livestate-test', 'replay mark')");
    flush.commit();
    pqxx::nontransaction read(m_primary);
    return read.exec1("SELECT pg_current_wal_flush_lsn()::text")[0].as<std::string>();
  }
  bool replayed(const std::string& position) {
    pqxx::nontransaction read(m_replica);
    return read.exec1("SELECT coalesce(pg_last_wal_replay_lsn() >= '" + position + "'::pg_lsn, false)")[0].as<bool>();
  }

 private:
  pqxx::connection m_primary;
  pqxx::connection m_replica;
};

}  // namespace livestate::test
