// The PostgreSQL test harness works: the server it starts answers on loopback
// and delivers notifications with PostgreSQL's semantics (they leave at
// commit, and a rolled-back transaction sends none). Every other PostgreSQL
// test relies on this, so when one of those fails, this one tells whether the
// harness or the code under test is at fault.

#include <doctest/doctest.h>

#include <pqxx/pqxx>

#include "pg_test_server.hpp"

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using livestate::test::test_server_url;

// Records every notification delivered on its channel.
class recording_receiver final : public pqxx::notification_receiver {
 public:
  struct notification {
    std::string channel;
    std::string payload;
  };

  recording_receiver(pqxx::connection_base& connection, const std::string& channel)
      : pqxx::notification_receiver(connection, channel) {}

  void operator()(const std::string& payload, int /*backend_pid*/) override {
    m_received.push_back({channel(), payload});
  }

  [[nodiscard]] const std::vector<notification>& received() const { return m_received; }

 private:
  std::vector<notification> m_received;
};

// A channel no other test connected to the same server listens on: the
// listening connection's backend pid is unique on the server while it lives.
std::string unique_channel(const pqxx::connection& listener, const std::string& purpose) {
  return "livestate_smoke_" + purpose + "_" + std::to_string(listener.backendpid());
}

void notify(pqxx::transaction_base& transaction, const std::string& channel, const std::string& payload) {
  transaction.exec("SELECT pg_notify(" + transaction.quote(channel) + ", " + transaction.quote(payload) + ")");
}

// Reads notifications on `connection` until `done()` or until `limit` has
// passed; returns done().
bool await_notifications_until(pqxx::connection& connection, const std::function<bool()>& done,
                               std::chrono::microseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline -
                                                                            std::chrono::steady_clock::now());
    if (left <= 0us) return done();
    connection.await_notification(static_cast<long>(left.count() / 1'000'000),
                                  static_cast<long>(left.count() % 1'000'000));
  }
  return true;
}

// Gives a notification that should not arrive the time to arrive if it were
// going to, reading whatever does.
void drain_for(pqxx::connection& connection, std::chrono::microseconds period) {
  await_notifications_until(
      connection, [] { return false; }, period);
}

constexpr std::chrono::microseconds delivery_deadline = 5s;

}  // namespace

TEST_CASE("the test server answers on loopback") {
  pqxx::connection connection{test_server_url()};
  pqxx::work work{connection};
  CHECK(work.exec1("SELECT 1")[0].as<int>() == 1);
  const auto address = work.exec1("SELECT host(inet_server_addr())")[0];
  REQUIRE_MESSAGE(!address.is_null(), "the server was reached over a unix socket, not TCP on 127.0.0.1");
  CHECK(address.as<std::string>() == "127.0.0.1");
  CHECK(work.exec1("SELECT current_setting('server_encoding')")[0].as<std::string>() == "UTF8");
}

TEST_CASE("a NOTIFY sent in a committed transaction reaches a listening connection") {
  const auto url = test_server_url();
  pqxx::connection listener{url};
  const auto channel = unique_channel(listener, "committed");
  const auto other_channel = unique_channel(listener, "other");
  recording_receiver receiver{listener, channel};
  recording_receiver other_receiver{listener, other_channel};

  pqxx::connection producer{url};
  pqxx::work work{producer};
  notify(work, channel, R"({"v":1,"m":[{"k":["builds","7","finished"],"b":{"buildid":7}}]})");

  // Notifications leave at commit: none is visible while the transaction is open.
  drain_for(listener, 200ms);
  CHECK(receiver.received().empty());

  work.commit();
  REQUIRE_MESSAGE(await_notifications_until(
                      listener, [&] { return !receiver.received().empty(); }, delivery_deadline),
                  "no notification arrived within 5 s of the commit");
  REQUIRE(receiver.received().size() == 1);
  CHECK(receiver.received()[0].channel == channel);
  CHECK(receiver.received()[0].payload == R"({"v":1,"m":[{"k":["builds","7","finished"],"b":{"buildid":7}}]})");
  CHECK(other_receiver.received().empty());
}

TEST_CASE("a NOTIFY in a rolled-back transaction never arrives") {
  const auto url = test_server_url();
  pqxx::connection listener{url};
  const auto channel = unique_channel(listener, "rollback");
  recording_receiver receiver{listener, channel};

  pqxx::connection producer{url};
  {
    pqxx::work work{producer};
    notify(work, channel, "rolled back");
    work.abort();
  }
  drain_for(listener, 1s);
  CHECK(receiver.received().empty());

  // A later committed one does arrive, and is the only one: had the rolled-back
  // notification been sent, it would have arrived before this one.
  {
    pqxx::work work{producer};
    notify(work, channel, "committed");
    work.commit();
  }
  REQUIRE_MESSAGE(await_notifications_until(
                      listener, [&] { return !receiver.received().empty(); }, delivery_deadline),
                  "the committed notification did not arrive within 5 s");
  drain_for(listener, 200ms);
  listener.get_notifs();
  REQUIRE(receiver.received().size() == 1);
  CHECK(receiver.received()[0].channel == channel);
  CHECK(receiver.received()[0].payload == "committed");
}
