#include <livestate/livestate.hpp>

#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <iostream>

namespace db = livestate::db;
namespace reconcile = livestate::reconcile;

int main() {
  const auto path = std::filesystem::temp_directory_path() / "livestate-example-view.db";
  std::filesystem::remove(path);
  auto mq = livestate::mq::make_simple_mq();
  auto store = db::Store::open("sqlite:" + path.string(), *mq);
  const auto master = store->master_active("master-1");
  const auto builder = store->builder_started("linux", master);

  // A view of the build requests of one builder, on an executor of ours.
  boost::asio::io_context io;
  reconcile::LiveView view(*mq, *store, io.get_executor(),
                           {.type = "buildrequests", .where = {{"builderid", builder}}});
  view.on_change([](const reconcile::Change& change) {
    const char* kind = change.kind == reconcile::ChangeKind::added     ? "added"
                       : change.kind == reconcile::ChangeKind::changed ? "changed"
                                                                       : "removed";
    std::cout << kind << " " << change.id << "\n";
  });
  view.start();
  io.run();  // loads the snapshot: no request yet

  db::NewBuildset buildset;
  buildset.builderids = {builder};
  const auto request = store->add_buildset(buildset).buildrequestids.at(builder);
  io.restart();
  io.run();  // added 1
  store->claim_buildrequests(std::vector<std::int64_t>{request}, master);
  io.restart();
  io.run();  // changed 1

  std::cout << "claimed: " << view.get(std::to_string(request))->at("claimed") << "\n";
  std::cout << "equal to the database: " << std::boolalpha << view.verify().empty() << "\n";
  std::filesystem::remove(path);
  return view.verify().empty() ? 0 : 1;
}
