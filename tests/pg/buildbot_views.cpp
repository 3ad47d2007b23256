// The buildbot set, its source and views over it on PostgreSQL: the shared
// suite (tests/unit/buildbot_views_suite.hpp), each case in a schema of its
// own.

#include <fstream>
#include <functional>
#include <memory>
#include <sstream>

#include <pqxx/pqxx>

#include "livestate/db/migrator.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/simple_mq.hpp"
#include "pg_test_server.hpp"

namespace buildbot_views_suite {

inline std::string buildbot_schema() {
  std::ifstream in(LIVESTATE_SOURCE_DIR "/tests/data/buildbot-3.7-schema.postgres.sql");
  if (!in) throw std::runtime_error("tests/data/buildbot-3.7-schema.postgres.sql is missing");
  std::ostringstream text;
  text << in.rdbuf();
  // Made in the schema of the test's own (its search_path), not in public.
  std::string sql = text.str();
  for (auto at = sql.find("public."); at != std::string::npos; at = sql.find("public.", at)) sql.erase(at, 7);
  return sql;
}

class BuildbotDatabase {
 public:
  livestate::test::FreshSchema schema;
  std::unique_ptr<livestate::mq::Connector> connector = livestate::mq::make_simple_mq();
  std::unique_ptr<livestate::db::Store> store;

  explicit BuildbotDatabase(bool with_set = true) {
    sql(buildbot_schema());
    livestate::db::StoreOptions options;
    options.migrate = false;
    store = livestate::db::Store::open(schema.url(), *connector, options);
    if (with_set) {
      livestate::db::migrate(*store,
                             *livestate::db::shipped_migration_set("buildbot", livestate::db::Backend::postgresql));
    }
  }
  void sql(const std::string& text) const {
    pqxx::connection connection(schema.url());
    pqxx::nontransaction work(connection);
    work.exec(text);
  }
  std::string columns() const {
    pqxx::connection connection(schema.url());
    pqxx::nontransaction work(connection);
    std::string all;
    for (const auto& row : work.exec("SELECT table_name, column_name, data_type, column_default, is_nullable "
                                     "FROM information_schema.columns WHERE table_schema = current_schema() "
                                     "AND table_name NOT LIKE 'livestate%' ORDER BY table_name, ordinal_position")) {
      for (const auto& field : row) all += std::string(field.is_null() ? "NULL" : field.c_str()) + "|";
      all += "\n";
    }
    return all;
  }
  // A writer of its own connection: each call raises build request 1's
  // priority by one in a transaction, and returns the priority and revision
  // that transaction saw (the revision drawn under the row's lock).
  std::function<std::pair<int, std::int64_t>()> writer() const {
    auto connection = std::make_shared<pqxx::connection>(schema.url());
    return [connection] {
      pqxx::work work(*connection);
      const int priority =
          work.exec1("UPDATE buildrequests SET priority = priority + 1 WHERE id = 1 RETURNING priority")[0].as<int>();
      const auto revision = work.exec1(
                                    "SELECT revision FROM livestate_buildbot_revisions "
                                    "WHERE type = 'buildrequests' AND id = 1")[0]
                                .as<std::int64_t>();
      work.commit();
      return std::make_pair(priority, revision);
    };
  }
};

}  // namespace buildbot_views_suite

#include "../unit/buildbot_views_suite.hpp"
