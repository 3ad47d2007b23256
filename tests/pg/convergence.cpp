// The convergence property on PostgreSQL, through the PostgreSQL connector,
// across 200 seeds (tests/store/convergence.hpp).

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "connector_fixtures.hpp"
#include "convergence.hpp"
#include "livestate/livestate.hpp"
#include "pg_test_server.hpp"

TEST_CASE("across 200 seeds, views on PostgreSQL through reordering, dropping and duplicating connectors converge") {
  livestate::test::FreshSchema schema;
  livestate::test::Executor executor;
  livestate::mq::PostgresOptions options;
  options.channel = livestate::test::random_name("ch");
  auto bus = livestate::mq::make_postgres_connector(livestate::test::connector_url(schema.url()), executor.get(),
                                                    options);
  REQUIRE(bus->wait_listening(std::chrono::seconds(10)));
  auto store = livestate::db::Store::open(schema.url(), *bus);
  {
    // Opening migrated the schema and announced it; a view that hears that
    // announcement reads its whole type again, which would count as a repair
    // that was not by what changed. The logical transport delivers it a WAL
    // flush later, possibly to the first seed's views: let it pass first
    // (messages arrive in commit order, so a marker sent after it comes after).
    livestate::test::Inbox marker;
    auto consumer = bus->start_consuming(marker.callback(), livestate::Filter::parse("test.schema_announced"));
    bus->produce(livestate::RoutingKey{"test", "schema_announced"}, livestate::Json::object());
    REQUIRE(marker.wait_for(1));
  }
  // The views run on an executor declared after the store, so that a read
  // still running when the last views are destroyed ends before the store goes.
  livestate::test::Executor views;
  livestate::test::ConvergenceTotals totals;
  const char* only = std::getenv("LIVESTATE_CONVERGENCE_SEED");  // to replay one seed
  const std::uint64_t first = only != nullptr ? std::stoull(only) : 1;
  const std::uint64_t last = only != nullptr ? first : 200;
  for (std::uint64_t seed = first; seed <= last; ++seed) {
    CAPTURE(seed);
    livestate::test::ConvergenceRun run;
    run.seed = seed;
    run.operations = 30;
    const auto result = livestate::test::run_convergence(
        run, *store, *bus, views.get(),
        [&](const std::function<bool()>& done) {
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
          while (std::chrono::steady_clock::now() < deadline) {
            if (done()) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          return false;
        },
        [] {});
    REQUIRE(result.converged);
    CHECK(result.reload_queries <= result.anomalies);
    totals.add(result);
  }
  totals.check(500);
}
