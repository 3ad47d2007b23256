#include <doctest/doctest.h>

#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include <sqlite3.h>

#include "livestate/db/migrations.hpp"

using namespace livestate::db;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string file_name(Backend backend, const Migration& migration) {
  char number[8];
  std::snprintf(number, sizeof number, "%04d", migration.version);
  return std::string(LIVESTATE_SOURCE_DIR "/schema/") + (backend == Backend::sqlite ? "sqlite/" : "postgres/") +
         number + "_" + std::string(migration.name) + ".sql";
}

struct Sqlite {
  sqlite3* db = nullptr;
  Sqlite() { REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK); }
  ~Sqlite() { sqlite3_close(db); }
  void exec(const std::string& sql) {
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    const std::string message = error ? error : "";
    sqlite3_free(error);
    REQUIRE_MESSAGE(rc == SQLITE_OK, message);
  }
  std::string text(const std::string& sql) {
    sqlite3_stmt* statement = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK);
    std::string out;
    while (sqlite3_step(statement) == SQLITE_ROW) {
      for (int column = 0; column < sqlite3_column_count(statement); ++column) {
        const auto* value = sqlite3_column_text(statement, column);
        if (column > 0) out += '|';
        out += value != nullptr ? reinterpret_cast<const char*>(value) : "NULL";
      }
      out += "\n";
    }
    sqlite3_finalize(statement);
    return out;
  }
};

}  // namespace

TEST_CASE("both backends ship the same migrations, numbered from 1 without gaps") {
  for (auto backend : {Backend::sqlite, Backend::postgresql}) {
    CAPTURE(to_string(backend));
    const auto migrations = shipped_migrations(backend);
    REQUIRE(migrations.size() >= 2);
    for (std::size_t i = 0; i < migrations.size(); ++i) {
      CHECK(migrations[i].version == static_cast<int>(i) + 1);
      CHECK(migrations[i].name == shipped_migrations(Backend::sqlite)[i].name);
    }
  }
  CHECK(shipped_migrations(Backend::sqlite).size() == shipped_migrations(Backend::postgresql).size());
}

TEST_CASE("a compiled-in migration is exactly its file in schema/, with a SHA-256 checksum") {
  std::set<std::string_view> checksums;
  for (auto backend : {Backend::sqlite, Backend::postgresql}) {
    for (const auto& migration : shipped_migrations(backend)) {
      CAPTURE(file_name(backend, migration));
      CHECK(migration.sql == read_file(file_name(backend, migration)));
      CHECK(migration.checksum.size() == 64);
      CHECK(migration.checksum.find_first_not_of("0123456789abcdef") == std::string_view::npos);
      checksums.insert(migration.checksum);
    }
  }
  CHECK(checksums.size() == 2 * shipped_migrations(Backend::sqlite).size());
}

TEST_CASE("the SQLite migrations apply in order to an empty database") {
  Sqlite sqlite;
  for (const auto& migration : shipped_migrations(Backend::sqlite)) sqlite.exec(std::string(migration.sql));
  const auto tables = sqlite.text("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");
  CHECK(tables ==
        "builder_masters\nbuilders\nbuildrequest_claims\nbuildrequests\nbuilds\nbuildsets\nlivestate_changes\n"
        "masters\nresources\nsteps\nworkers\n");
}

TEST_CASE("migrating SQLite from the first migration keeps the data and moves claims to their own table") {
  Sqlite sqlite;
  const auto migrations = shipped_migrations(Backend::sqlite);
  sqlite.exec(std::string(migrations[0].sql));
  sqlite.exec(
      "INSERT INTO masters (id, name) VALUES (1, 'master-1');"
      "INSERT INTO builders (id, name) VALUES (2, 'quick');"
      "INSERT INTO buildsets (id, submitted_at, reason) VALUES (1, 1795838740, 'it''s; a \"test\"');"
      "INSERT INTO buildrequests (id, buildsetid, builderid, submitted_at, claimed_by_masterid, claimed_at, revision)"
      "  VALUES (1, 1, 2, 1795838740, 1, 1795838741.5, 3), (2, 1, 2, 1795838740, NULL, NULL, 1);");
  for (std::size_t i = 1; i < migrations.size(); ++i) sqlite.exec(std::string(migrations[i].sql));
  CHECK(sqlite.text("SELECT brid, masterid, claimed_at FROM buildrequest_claims") == "1|1|1795838741.5\n");
  CHECK(sqlite.text("SELECT id, revision FROM buildrequests ORDER BY id") == "1|3\n2|1\n");
  CHECK(sqlite.text("SELECT reason FROM buildsets") == "it's; a \"test\"\n");
}

TEST_CASE("after the second SQLite migration a request cannot be claimed twice") {
  Sqlite sqlite;
  for (const auto& migration : shipped_migrations(Backend::sqlite)) sqlite.exec(std::string(migration.sql));
  sqlite.exec(
      "INSERT INTO masters (id, name) VALUES (1, 'a'), (2, 'b');"
      "INSERT INTO builders (id, name) VALUES (1, 'x');"
      "INSERT INTO buildsets (id, submitted_at) VALUES (1, 0);"
      "INSERT INTO buildrequests (id, buildsetid, builderid, submitted_at) VALUES (7, 1, 1, 0);"
      "INSERT INTO buildrequest_claims (brid, masterid, claimed_at) VALUES (7, 1, 10);");
  const int rc = sqlite3_exec(sqlite.db, "INSERT INTO buildrequest_claims VALUES (7, 2, 11)", nullptr, nullptr,
                              nullptr);
  CHECK(rc == SQLITE_CONSTRAINT);
}
