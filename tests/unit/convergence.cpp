// The convergence property on SQLite with SimpleMQ, across 200 seeds: views
// that follow a random workload through reordering, dropping and duplicating
// connectors end equal to the database, with reloads bounded by anomalies.

#include <doctest/doctest.h>

#include <chrono>

#include <boost/asio/io_context.hpp>

#include "convergence.hpp"
#include "livestate/livestate.hpp"
#include "test_database.hpp"

TEST_CASE("across 200 seeds, views through reordering, dropping and duplicating connectors converge to the database") {
  livestate::test::TestDatabase database;
  auto bus = livestate::mq::make_simple_mq();
  auto store = livestate::db::Store::open(database.url(), *bus);
  livestate::test::ConvergenceTotals totals;
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    CAPTURE(seed);
    boost::asio::io_context io;
    livestate::test::ConvergenceRun run;
    run.seed = seed;
    const auto result = livestate::test::run_convergence(
        run, *store, *bus, io.get_executor(),
        [&](const std::function<bool()>& done) {
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
          while (std::chrono::steady_clock::now() < deadline) {
            io.restart();
            io.run_for(std::chrono::milliseconds(2));
            if (done()) return true;
          }
          return false;
        },
        [&] {
          io.restart();
          io.poll();
        });
    REQUIRE(result.converged);
    // Every reload answers an anomaly (several coalesce into one query).
    CHECK(result.reload_queries <= result.anomalies);
    totals.add(result);
  }
  totals.check(1000);
}
