// docs/STORE.md's example: state in SQLite, every change announced after it commits.
#include <livestate/livestate.hpp>

#include <iostream>

int main() {
  using namespace livestate;
  auto mq = mq::make_simple_mq();
  auto store = db::Store::open("sqlite::memory:", *mq);  // or sqlite:PATH, postgresql://…

  // A consumer that reloads on every claim always finds the claim committed.
  auto claims = mq->start_consuming(
      [&](const RoutingKey& key, const Json& body) {
        const auto row = store->get_buildrequest(body["buildrequestid"]);
        std::cout << key.str() << " _rev " << body["_rev"] << ", reloaded claimed=" << row->at("claimed") << "\n";
      },
      Filter::parse("buildrequests.*.claimed"));

  const auto master = store->master_active("master-1");
  const auto builder = store->builder_started("linux", master);
  db::NewBuildset buildset;
  buildset.builderids = {builder};
  buildset.reason = "a push";
  const auto request = store->add_buildset(buildset).buildrequestids.at(builder);

  store->claim_buildrequests(std::vector<std::int64_t>{request}, master);  // one transaction, its messages after COMMIT
  try {
    store->claim_buildrequests(std::vector<std::int64_t>{request}, store->master_active("master-2"));
  } catch (const db::AlreadyClaimed& refused) {
    std::cout << "master-2: " << refused.what() << "\n";
  }

  {  // Several changes, and their messages, commit together or not at all.
    auto tx = store->begin();
    tx.complete_buildrequests(std::vector<std::int64_t>{request}, db::results::success, master);
    tx.produce(RoutingKey{"app", "notes", "written"}, {{"text", "never announced"}});
  }  // no commit(): rolled back, messages dropped
  std::cout << "complete after rollback: " << store->get_buildrequest(request)->at("complete") << "\n";
  return store->get_buildrequest(request)->at("complete") == false ? 0 : 1;
}
