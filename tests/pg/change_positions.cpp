// Change positions on PostgreSQL (migration 0007): transactions commit in
// another order than they were numbered, and a watermark must still never
// let a change slip past it. Each case works in a schema of its own.

#include <doctest/doctest.h>

#include <algorithm>
#include <string>

#include <pqxx/pqxx>

#include "livestate/livestate.hpp"
#include "pg_test_server.hpp"

namespace {

namespace db = livestate::db;
using livestate::Json;

bool names(const db::ChangesSince& changes, const std::string& id) {
  return std::any_of(changes.rows.begin(), changes.rows.end(), [&](const Json& row) { return row.at("id") == id; });
}

}  // namespace

TEST_CASE("a change committed after a later one was read is found by the next read from that read's watermark") {
  livestate::test::FreshSchema schema;
  auto mq = livestate::mq::make_simple_mq();
  auto store = db::Store::open(schema.url(), *mq);

  // `late` is written first, in a transaction that stays open...
  auto late = store->begin();
  late.upsert_resource("widgets", "late", {{"n", 1}});
  const auto watermark = store->change_watermark("widgets").value();
  // ...while `early` is written after it and commits first.
  store->upsert_resource("widgets", "early", {{"n", 1}});
  const auto first = store->changes_since("widgets", watermark).value();
  CHECK(names(first, "early"));
  CHECK_FALSE(names(first, "late"));  // not committed yet
  late.commit();

  {  // `late` holds the lower position: a watermark of "the highest position
     // read" would have skipped it.
    pqxx::connection raw(schema.url());
    pqxx::work work(raw);
    const auto positions = work.exec(
        "SELECT id, CAST(CAST(position AS TEXT) AS BIGINT) FROM resources WHERE type = 'widgets' ORDER BY id");
    REQUIRE(positions.size() == 2);
    CHECK(positions[1][0].as<std::string>() == "late");
    CHECK(positions[1][1].as<std::int64_t>() < positions[0][1].as<std::int64_t>());
  }
  const auto second = store->changes_since("widgets", first.watermark).value();
  CHECK(names(second, "late"));
  CHECK_FALSE(names(second, "early"));
  const auto third = store->changes_since("widgets", second.watermark).value();
  CHECK(third.rows.empty());
}

TEST_CASE("a change rolled back leaves nothing to find, and a row another program inserts is found") {
  livestate::test::FreshSchema schema;
  auto mq = livestate::mq::make_simple_mq();
  auto store = db::Store::open(schema.url(), *mq);
  const auto watermark = store->change_watermark("widgets").value();
  {
    auto rolled_back = store->begin();
    rolled_back.upsert_resource("widgets", "never", {{"n", 1}});
  }
  {
    pqxx::connection raw(schema.url());
    pqxx::work work(raw);
    work.exec0("INSERT INTO resources (type, id, state) VALUES ('widgets', 'foreign', '{}')");
    work.commit();
  }
  const auto changes = store->changes_since("widgets", watermark).value();
  REQUIRE(changes.rows.size() == 1);
  CHECK(changes.rows[0].at("id") == "foreign");
}
