#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "pg_test_server.hpp"

using livestate::test::test_server_url;

namespace {

struct Collector final : pqxx::notification_receiver {
  Collector(pqxx::connection_base& connection, const std::string& channel)
      : pqxx::notification_receiver(connection, channel) {}
  void operator()(const std::string& payload, int) override { payloads.push_back(payload); }
  std::vector<std::string> payloads;
};

// Waits on the listening connection until `count` payloads arrived or the deadline passed.
void await_payloads(pqxx::connection& listener, Collector& collector, std::size_t count,
                    std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (collector.payloads.size() < count && std::chrono::steady_clock::now() < until) {
    listener.await_notification(0, 100'000);
  }
}

}  // namespace

TEST_CASE("the test server answers on loopback") {
  pqxx::connection connection(test_server_url());
  pqxx::work work(connection);
  CHECK(work.exec1("SELECT 1")[0].as<int>() == 1);
  CHECK(work.exec1("SELECT host(inet_server_addr())")[0].as<std::string>() == "127.0.0.1");
}

TEST_CASE("a NOTIFY sent in a committed transaction reaches a listening connection") {
  pqxx::connection listener(test_server_url());
  Collector collector(listener, "livestate_smoke");
  pqxx::connection sender(test_server_url());
  {
    pqxx::work work(sender);
    work.exec("SELECT pg_notify('livestate_smoke', '{\"v\":1,\"m\":[]}')");
    work.commit();
  }
  await_payloads(listener, collector, 1, std::chrono::seconds(5));
  REQUIRE(collector.payloads.size() == 1);
  CHECK(collector.payloads[0] == "{\"v\":1,\"m\":[]}");
}

TEST_CASE("a NOTIFY in a rolled-back transaction never arrives") {
  pqxx::connection listener(test_server_url());
  Collector collector(listener, "livestate_smoke");
  pqxx::connection sender(test_server_url());
  {
    pqxx::work work(sender);
    work.exec("SELECT pg_notify('livestate_smoke', 'rolled back')");
    work.abort();
  }
  {
    pqxx::work work(sender);
    work.exec("SELECT pg_notify('livestate_smoke', 'committed')");
    work.commit();
  }
  // The committed one arriving proves the rolled-back one, sent earlier, would have.
  await_payloads(listener, collector, 1, std::chrono::seconds(5));
  listener.get_notifs();
  CHECK(collector.payloads == std::vector<std::string>{"committed"});
}
