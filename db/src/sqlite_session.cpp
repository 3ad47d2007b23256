// The embedded backend: one sqlite3 connection per session, WAL mode, a busy
// timeout, foreign keys on, and a cache of prepared statements.

#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <unordered_map>

#include "livestate/db/detail/sqlite_url.hpp"
#include "session.hpp"

namespace livestate::db::detail {
namespace {

struct ConnectionCloser {
  void operator()(sqlite3* connection) const noexcept { sqlite3_close_v2(connection); }
};
using ConnectionHandle = std::unique_ptr<sqlite3, ConnectionCloser>;

struct StatementFinalizer {
  void operator()(sqlite3_stmt* statement) const noexcept { sqlite3_finalize(statement); }
};
using StatementHandle = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

FailureKind kind_of(int extended_code) noexcept {
  switch (extended_code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return FailureKind::busy;
    case SQLITE_READONLY: return FailureKind::read_only;
    case SQLITE_CANTOPEN:
    case SQLITE_NOTADB:
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_PERM: return FailureKind::connection;
    default: break;
  }
  if (extended_code == SQLITE_CONSTRAINT_PRIMARYKEY || extended_code == SQLITE_CONSTRAINT_UNIQUE) {
    return FailureKind::unique_violation;
  }
  return FailureKind::other;
}

// "sqlite:PATH", "sqlite://PATH", "sqlite::memory:".
class SqliteSession final : public Session {
 public:
  SqliteSession(ConnectionHandle connection, const std::string& name)
      : m_connection(std::move(connection)), m_name(name) {}

  Backend backend() const noexcept override { return Backend::sqlite; }

  void begin(bool write) override {
    step_once(write ? m_begin_immediate : m_begin_deferred, write ? "BEGIN IMMEDIATE" : "BEGIN", "begin a transaction");
    m_in_transaction = true;
  }

  void commit() override {
    try {
      step_once(m_commit, "COMMIT", "commit");
    } catch (...) {
      rollback();
      throw;
    }
    m_in_transaction = false;
  }

  void rollback() noexcept override {
    if (!m_in_transaction) return;
    m_in_transaction = false;
    if (sqlite3_get_autocommit(m_connection.get()) != 0) return;  // SQLite already rolled back
    if (sqlite3_exec(m_connection.get(), "ROLLBACK", nullptr, nullptr, nullptr) != SQLITE_OK) {
      m_healthy = false;
    }
  }

  Rows query(std::string_view sql, std::span<const Value> params) override {
    Rows rows;
    run(sql, params, &rows);
    return rows;
  }

  std::int64_t execute(std::string_view sql, std::span<const Value> params) override {
    run(sql, params, nullptr);
    return sqlite3_changes64(m_connection.get());
  }

  void execute_script(std::string_view sql) override {
    const std::string text(sql);
    char* message = nullptr;
    const int code = sqlite3_exec(m_connection.get(), text.c_str(), nullptr, nullptr, &message);
    if (code != SQLITE_OK) {
      std::string reason = message != nullptr ? message : sqlite3_errstr(code);
      sqlite3_free(message);
      throw SessionFailure(kind_of(sqlite3_extended_errcode(m_connection.get())),
                           m_name + ": script failed: " + reason);
    }
  }

  void lock_advisory(std::int64_t) override {}
  void unlock_advisory(std::int64_t) noexcept override {}
  bool healthy() const noexcept override { return m_healthy; }

 private:
  [[noreturn]] void fail(const std::string& doing) {
    const int code = sqlite3_extended_errcode(m_connection.get());
    const FailureKind kind = kind_of(code);
    std::string message = m_name + ": cannot " + doing + ": " + sqlite3_errmsg(m_connection.get());
    if (kind == FailureKind::busy) message += " (still locked by another connection after the busy timeout)";
    throw SessionFailure(kind, message);
  }

  // BEGIN and COMMIT run for every transaction: prepared once, as the other
  // statements are, rather than parsed again by sqlite3_exec each time.
  void step_once(StatementHandle& statement, std::string_view sql, const char* doing) {
    if (!statement) statement.reset(compile(sql));
    const int code = sqlite3_step(statement.get());
    if (code != SQLITE_DONE && code != SQLITE_ROW) {
      try {
        fail(doing);
      } catch (...) {
        sqlite3_reset(statement.get());
        throw;
      }
    }
    sqlite3_reset(statement.get());
  }

  sqlite3_stmt* compile(std::string_view sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v3(m_connection.get(), sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &raw, nullptr) != SQLITE_OK) {
      fail("prepare a statement");
    }
    return raw;
  }

  sqlite3_stmt* prepare(std::string_view sql) {
    // Looked up by the view: no copy of the SQL text unless it is new.
    auto found = m_statements.find(sql);
    if (found != m_statements.end()) return found->second.get();
    StatementHandle statement(compile(sql));
    return m_statements.emplace(std::string(sql), std::move(statement)).first->second.get();
  }

  void bind(sqlite3_stmt* statement, std::span<const Value> params) {
    for (std::size_t i = 0; i < params.size(); ++i) {
      const int index = static_cast<int>(i + 1);
      const Value& value = params[i];
      int code = SQLITE_OK;
      switch (value.index()) {
        case 0: code = sqlite3_bind_null(statement, index); break;
        case 1: code = sqlite3_bind_int64(statement, index, std::get<std::int64_t>(value)); break;
        case 2: code = sqlite3_bind_double(statement, index, std::get<double>(value)); break;
        case 3: {
          const auto& text = std::get<std::string>(value);
          code = sqlite3_bind_text64(statement, index, text.data(), text.size(), SQLITE_STATIC, SQLITE_UTF8);
          break;
        }
        default: code = sqlite3_bind_int(statement, index, std::get<bool>(value) ? 1 : 0); break;
      }
      if (code != SQLITE_OK) fail("bind parameter " + std::to_string(index));
    }
  }

  static Value column(sqlite3_stmt* statement, int index) {
    switch (sqlite3_column_type(statement, index)) {
      case SQLITE_INTEGER: return static_cast<std::int64_t>(sqlite3_column_int64(statement, index));
      case SQLITE_FLOAT: return sqlite3_column_double(statement, index);
      case SQLITE_NULL: return std::monostate{};
      default: {
        const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement, index));
        const int size = sqlite3_column_bytes(statement, index);
        return std::string(text, static_cast<std::size_t>(size));
      }
    }
  }

  void run(std::string_view sql, std::span<const Value> params, Rows* rows) {
    sqlite3_stmt* statement = prepare(sql);
    struct Resetter {
      sqlite3_stmt* statement;
      ~Resetter() {
        sqlite3_reset(statement);
        sqlite3_clear_bindings(statement);
      }
    } resetter{statement};
    bind(statement, params);
    const int columns = sqlite3_column_count(statement);
    for (;;) {
      const int code = sqlite3_step(statement);
      if (code == SQLITE_DONE) return;
      if (code != SQLITE_ROW) fail("run `" + std::string(sql.substr(0, 60)) + "…`");
      if (rows == nullptr) continue;
      std::vector<Value> values;
      values.reserve(static_cast<std::size_t>(columns));
      for (int i = 0; i < columns; ++i) values.push_back(column(statement, i));
      rows->emplace_back(std::move(values));
    }
  }

  // Declared first so that it is destroyed last, after the statements.
  ConnectionHandle m_connection;
  std::string m_name;
  struct SqlHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view sql) const noexcept { return std::hash<std::string_view>{}(sql); }
  };
  std::unordered_map<std::string, StatementHandle, SqlHash, std::equal_to<>> m_statements;
  StatementHandle m_begin_immediate;
  StatementHandle m_begin_deferred;
  StatementHandle m_commit;
  bool m_in_transaction = false;
  bool m_healthy = true;
};

class SqliteFactory final : public SessionFactory {
 public:
  SqliteFactory(std::string_view url, const SessionOptions& options)
      : m_name(url), m_location(location_of(url)), m_options(options) {
    if (m_location.memory) {
      // A named in-memory database of the memdb VFS can be shared by several
      // connections of this process, with ordinary locking. The anchor keeps it
      // alive while every pooled session may come and go.
      static std::atomic<std::uint64_t> counter{0};
      m_location.filename = "file:/livestate-memory-" + std::to_string(++counter) + "?vfs=memdb";
      m_options.read_only = false;  // nothing to read yet
      m_anchor = connect();
    }
  }

  Backend backend() const noexcept override { return Backend::sqlite; }
  const std::string& display_name() const noexcept override { return m_name; }

  std::unique_ptr<Session> open() override { return std::make_unique<SqliteSession>(connect(), m_name); }

 private:
  static SqliteUrl location_of(std::string_view url) {
    auto location = parse_sqlite_url(url);
    if (!location) throw std::invalid_argument("not a SQLite URL: '" + std::string(url) + "'");
    return std::move(*location);
  }

  ConnectionHandle connect() {
    auto connection = open_file(m_location.filename);
    if (m_options.read_only && !m_location.file.empty() && !readable(connection.get())) {
      // Reading a WAL database needs its -shm file, which a directory the
      // process can't write can't get. With no -wal file there is nothing
      // beyond the database file to read, so it is read as immutable.
      std::error_code ignored;
      if (!std::filesystem::exists(m_location.file + "-wal", ignored)) {
        connection = open_file(immutable_uri());
      }
    }
    return connection;
  }

  ConnectionHandle open_file(const std::string& filename) {
    sqlite3* raw = nullptr;
    const int flags = (m_options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                      SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
    const int code = sqlite3_open_v2(filename.c_str(), &raw, flags, nullptr);
    ConnectionHandle connection(raw);
    if (code != SQLITE_OK) {
      const std::string reason = raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(code);
      throw SessionFailure(FailureKind::connection, "cannot open " + m_name + ": " + reason);
    }
    sqlite3_extended_result_codes(raw, 1);
    sqlite3_busy_timeout(raw, static_cast<int>(m_options.busy_timeout.count()));
    configure(raw);
    return connection;
  }

  static bool readable(sqlite3* connection) {
    return sqlite3_exec(connection, "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr) == SQLITE_OK;
  }

  // The file as a URI filename with immutable=1, the URL's own query kept.
  std::string immutable_uri() const {
    const std::string& filename = m_location.filename;
    if (filename.starts_with("file:")) {
      return filename + (filename.find('?') == std::string::npos ? "?" : "&") + "immutable=1";
    }
    std::string uri = "file:";
    for (const char c : filename) {
      if (c == '%' || c == '?' || c == '#') {
        static constexpr char hex[] = "0123456789ABCDEF";
        uri += '%';
        uri += hex[static_cast<unsigned char>(c) >> 4];
        uri += hex[static_cast<unsigned char>(c) & 0xf];
      } else {
        uri += c;
      }
    }
    return uri + "?immutable=1";
  }

  void configure(sqlite3* connection) {
    auto pragma = [&](const char* sql, bool tolerate_read_only) {
      // Switching to WAL takes an exclusive lock without calling the busy
      // handler, so processes opening a new file at once would see "locked":
      // wait for it as the busy timeout would.
      const auto deadline = std::chrono::steady_clock::now() + m_options.busy_timeout;
      char* message = nullptr;
      int code = sqlite3_exec(connection, sql, nullptr, nullptr, &message);
      while ((code & 0xff) == SQLITE_BUSY && std::chrono::steady_clock::now() < deadline) {
        sqlite3_free(message);
        message = nullptr;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        code = sqlite3_exec(connection, sql, nullptr, nullptr, &message);
      }
      if (code == SQLITE_OK) return;
      std::string reason = message != nullptr ? message : sqlite3_errstr(code);
      sqlite3_free(message);
      const FailureKind kind = kind_of(sqlite3_extended_errcode(connection));
      if (tolerate_read_only && kind == FailureKind::read_only) return;
      throw SessionFailure(kind, "cannot open " + m_name + ": " + sql + ": " + reason);
    };
    pragma("PRAGMA foreign_keys = ON", false);
    if (!m_location.memory && !m_options.read_only) {
      // WAL lets readers go on while one connection writes; NORMAL is WAL's
      // usual durability (a power cut can lose the last commits, never corrupt).
      // A read-only file stays in its journal mode; its writes fail clearly.
      pragma("PRAGMA journal_mode = WAL", true);
      pragma("PRAGMA synchronous = NORMAL", false);
    }
  }

  std::string m_name;
  SqliteUrl m_location;
  SessionOptions m_options;
  ConnectionHandle m_anchor;
};

}  // namespace

std::unique_ptr<SessionFactory> make_sqlite_factory(std::string_view url, const SessionOptions& options) {
  return std::make_unique<SqliteFactory>(url, options);
}

}  // namespace livestate::db::detail
