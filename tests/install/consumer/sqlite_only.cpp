// Links livestate::db alone: an embedded store with the in-process connector,
// and no PostgreSQL client library (CMakeLists.txt checks the binary's
// NEEDED entries). PostgreSQL URLs are then refused with a clear error.
#include <livestate/db/store.hpp>
#include <livestate/mq/connect.hpp>
#include <livestate/mq/simple_mq.hpp>

#include <boost/asio/io_context.hpp>

#include <iostream>
#include <string>

int main() {
  auto mq = livestate::mq::make_simple_mq();
  int claims = 0;
  auto consumer = mq->start_consuming([&](const livestate::RoutingKey&, const livestate::Json&) { ++claims; },
                                      livestate::Filter::parse("buildrequests.*.claimed"));
  auto store = livestate::db::Store::open("sqlite::memory:", *mq);
  const auto master = store->master_active("m");
  livestate::db::NewBuildset buildset;
  buildset.builderids = {store->builder_started("b", master)};
  const auto added = store->add_buildset(buildset);
  store->claim_buildrequests(std::vector<std::int64_t>{added.buildrequestids.begin()->second}, master);
  if (claims != 1) {
    std::cerr << "sqlite_only: expected 1 claimed message, got " << claims << "\n";
    return 1;
  }
  try {
    (void)livestate::db::Store::open("postgresql://127.0.0.1:1/none", *mq);
    std::cerr << "sqlite_only: a PostgreSQL URL opened without the PostgreSQL backend\n";
    return 1;
  } catch (const livestate::UnsupportedUrl& refused) {
    if (std::string(refused.what()).find("livestate::db_postgres") == std::string::npos) {
      std::cerr << "sqlite_only: the refusal does not say what to link: " << refused.what() << "\n";
      return 1;
    }
  }
  boost::asio::io_context io;
  try {
    (void)livestate::mq::connect("postgresql://127.0.0.1:1/none", io.get_executor());
    std::cerr << "sqlite_only: a PostgreSQL connector was made without livestate::mq_postgres\n";
    return 1;
  } catch (const livestate::UnsupportedUrl& refused) {
    if (std::string(refused.what()).find("livestate::mq_postgres") == std::string::npos) {
      std::cerr << "sqlite_only: the refusal does not say what to link: " << refused.what() << "\n";
      return 1;
    }
  }
  std::cout << "sqlite_only: ok\n";
  return 0;
}
