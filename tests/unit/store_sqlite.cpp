// The SQLite backend's own behaviour and failure paths: locks, read-only and
// missing files, in-memory databases, URLs.

#include <doctest/doctest.h>

#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "livestate/livestate.hpp"
#include "test_database.hpp"

namespace {

namespace db = livestate::db;
using livestate::Json;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A second, raw connection to the same file that holds SQLite's write lock.
class WriteLockHolder {
 public:
  explicit WriteLockHolder(const std::filesystem::path& path) {
    REQUIRE(sqlite3_open(path.c_str(), &m_connection) == SQLITE_OK);
    REQUIRE(sqlite3_exec(m_connection, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  }
  ~WriteLockHolder() {
    sqlite3_exec(m_connection, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(m_connection);
  }
  WriteLockHolder(const WriteLockHolder&) = delete;
  WriteLockHolder& operator=(const WriteLockHolder&) = delete;

 private:
  sqlite3* m_connection = nullptr;
};

}  // namespace

TEST_CASE("a file locked by another connection past the busy timeout fails with DatabaseBusy, naming the file") {
  livestate::test::TestDatabase database;
  auto mq = livestate::mq::make_simple_mq();
  db::StoreOptions options;
  options.busy_timeout = std::chrono::milliseconds(200);
  auto store = db::Store::open(database.url(), *mq, options);
  const auto master = store->master_active("m1");
  {
    WriteLockHolder lock(database.path());
    try {
      store->upsert_resource("things", "a", Json::object());
      FAIL("the write should have timed out");
    } catch (const db::DatabaseBusy& busy) {
      CHECK(contains(busy.what(), database.path().string()));
      CHECK(contains(busy.what(), "busy timeout"));
    }
  }
  // Once the lock is gone the store works, and the failed write left nothing.
  CHECK_FALSE(store->get_resource("things", "a").has_value());
  store->upsert_resource("things", "a", Json::object());
  CHECK(store->get_master(master)->at("active") == true);
}

TEST_CASE("a read-only database refuses writes with ReadOnlyDatabase and keeps its data") {
  livestate::test::TestDatabase database;
  auto mq = livestate::mq::make_simple_mq();
  {
    auto store = db::Store::open(database.url(), *mq);
    store->upsert_resource("things", "kept", Json{{"v", 1}});
  }
  db::StoreOptions options;
  options.migrate = false;
  auto read_only = db::Store::open("sqlite:file:" + database.path().string() + "?mode=ro", *mq, options);
  CHECK(read_only->get_resource("things", "kept")->at("state") == Json{{"v", 1}});
  CHECK_THROWS_AS(read_only->upsert_resource("things", "new", Json::object()), db::ReadOnlyDatabase);

  if (geteuid() != 0) {  // root writes through file permissions
    std::filesystem::permissions(database.path(), std::filesystem::perms::owner_read);
    auto store = db::Store::open(database.url(), *mq, options);
    CHECK_THROWS_AS(store->upsert_resource("things", "new", Json::object()), db::ReadOnlyDatabase);
  }
}

TEST_CASE("a database in a directory that does not exist fails to open with ConnectionFailed naming it") {
  auto mq = livestate::mq::make_simple_mq();
  const std::string url = "sqlite:/nonexistent-livestate-dir/sub/state.db";
  try {
    (void)db::Store::open(url, *mq);
    FAIL("opening should have failed");
  } catch (const db::ConnectionFailed& failed) {
    CHECK(contains(failed.what(), "/nonexistent-livestate-dir/sub/state.db"));
  }
}

TEST_CASE("a file that is not a database is refused with a DatabaseError, and left as it was") {
  livestate::test::TestDatabase database;
  {
    std::FILE* file = std::fopen(database.path().c_str(), "w");
    REQUIRE(file != nullptr);
    std::fputs("this is not a database, it is a shopping list\n", file);
    std::fclose(file);
  }
  auto mq = livestate::mq::make_simple_mq();
  CHECK_THROWS_AS((void)db::Store::open(database.url(), *mq), db::DatabaseError);
  CHECK(std::filesystem::file_size(database.path()) == 46);
}

TEST_CASE("URLs that name no store are refused with UnsupportedUrl") {
  auto mq = livestate::mq::make_simple_mq();
  CHECK_THROWS_AS((void)db::Store::open("mysql://localhost/x", *mq), livestate::UnsupportedUrl);
  CHECK_THROWS_AS((void)db::Store::open("sqlite:", *mq), livestate::UnsupportedUrl);
  CHECK_THROWS_AS((void)db::Store::open("", *mq), livestate::UnsupportedUrl);
}

TEST_CASE("an in-memory store is private to itself and shared by all of its connections") {
  auto mq = livestate::mq::make_simple_mq();
  auto first = db::Store::open("sqlite::memory:", *mq);
  auto second = db::Store::open("sqlite::memory:", *mq);
  first->upsert_resource("things", "only-in-first", Json::object());
  CHECK_FALSE(second->get_resource("things", "only-in-first").has_value());

  // Threads use connections of their own, which see one database. (In memory
  // there is no WAL: a reader waits while another connection writes.)
  auto tx = first->begin();
  tx.upsert_resource("things", "pending", Json::object());
  std::optional<Json> seen_from_other_thread;
  std::thread reader([&] { seen_from_other_thread = first->get_resource("things", "pending"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  tx.commit();
  reader.join();
  CHECK(seen_from_other_thread.has_value());
}

TEST_CASE("a file store is in WAL mode, so readers go on while a transaction writes") {
  livestate::test::TestDatabase database;
  auto mq = livestate::mq::make_simple_mq();
  auto store = db::Store::open(database.url(), *mq);
  store->upsert_resource("things", "a", Json{{"v", 1}});
  auto tx = store->begin();
  tx.upsert_resource("things", "a", Json{{"v", 2}});
  CHECK(store->get_resource("things", "a")->at("state") == Json{{"v", 1}});
  tx.commit();
  CHECK(store->get_resource("things", "a")->at("state") == Json{{"v", 2}});
  CHECK(std::filesystem::exists(database.path().string() + "-wal"));
}
