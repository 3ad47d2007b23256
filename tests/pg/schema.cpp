#include <doctest/doctest.h>

#include <string>

#include <pqxx/pqxx>

#include "livestate/db/migrations.hpp"
#include "pg_test_server.hpp"

using namespace livestate::db;
using livestate::test::test_server_url;

namespace {

// Each case works in a schema of its own, dropped afterwards.
struct Schema {
  pqxx::connection connection{test_server_url()};
  std::string name;
  explicit Schema(std::string schema_name) : name(std::move(schema_name)) {
    pqxx::nontransaction work(connection);
    work.exec("DROP SCHEMA IF EXISTS " + name + " CASCADE");
    work.exec("CREATE SCHEMA " + name);
    work.exec("SET search_path TO " + name);
  }
  ~Schema() {
    try {
      pqxx::nontransaction work(connection);
      work.exec("DROP SCHEMA IF EXISTS " + name + " CASCADE");
    } catch (...) {
    }
  }
  void apply(const Migration& migration) {
    pqxx::work work(connection);
    work.exec(std::string(migration.sql));
    work.commit();
  }
};

}  // namespace

TEST_CASE("the PostgreSQL migrations apply in order to an empty schema") {
  Schema schema("livestate_schema_empty");
  for (const auto& migration : shipped_migrations(Backend::postgresql)) schema.apply(migration);
  pqxx::work work(schema.connection);
  const auto tables = work.exec(
      "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables "
      "WHERE table_schema = 'livestate_schema_empty'");
  CHECK(tables[0][0].as<std::string>() ==
        "builder_masters,builders,buildrequest_claims,buildrequests,builds,buildsets,livestate_changes,masters,"
        "resources,steps,workers");
}

TEST_CASE("migrating PostgreSQL from the first migration keeps the data and moves claims to their own table") {
  Schema schema("livestate_schema_upgrade");
  const auto migrations = shipped_migrations(Backend::postgresql);
  schema.apply(migrations[0]);
  {
    pqxx::work work(schema.connection);
    work.exec(
        "INSERT INTO masters (id, name) VALUES (1, 'master-1');"
        "INSERT INTO builders (id, name) VALUES (2, 'quick');"
        "INSERT INTO buildsets (id, submitted_at, reason) VALUES (1, 1795838740, 'it''s; a \"test\"');"
        "INSERT INTO buildrequests (id, buildsetid, builderid, submitted_at, claimed_by_masterid, claimed_at, revision)"
        "  VALUES (1, 1, 2, 1795838740, 1, 1795838741.5, 3), (2, 1, 2, 1795838740, NULL, NULL, 1);");
    work.commit();
  }
  for (std::size_t i = 1; i < migrations.size(); ++i) schema.apply(migrations[i]);
  pqxx::work work(schema.connection);
  const auto claims = work.exec("SELECT brid, masterid, claimed_at FROM buildrequest_claims");
  REQUIRE(claims.size() == 1);
  CHECK(claims[0][0].as<long>() == 1);
  CHECK(claims[0][2].as<double>() == doctest::Approx(1795838741.5));
  CHECK(work.exec1("SELECT revision FROM buildrequests WHERE id = 1")[0].as<long>() == 3);
  CHECK(work.exec1("SELECT reason FROM buildsets")[0].as<std::string>() == "it's; a \"test\"");
}
