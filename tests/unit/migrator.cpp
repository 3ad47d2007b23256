// The migrator on SQLite files: the shared suite (migrator_suite.hpp), plus
// what only SQLite has.

#include <stdlib.h>

#include <cerrno>

#include <filesystem>
#include <string>
#include <system_error>

namespace migrator_suite {

// A SQLite file of its own in a directory of its own, removed afterwards.
class TestDatabase {
 public:
  TestDatabase() {
    std::string pattern = (std::filesystem::temp_directory_path() / "livestate-migrator-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::system_error(errno, std::generic_category(), "mkdtemp");
    m_directory = pattern;
  }
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;
  ~TestDatabase() {
    std::error_code ignored;
    std::filesystem::remove_all(m_directory, ignored);
  }
  [[nodiscard]] std::string url() const { return "sqlite:" + (m_directory / "state.db").string(); }

 private:
  std::filesystem::path m_directory;
};

}  // namespace migrator_suite

#include "migrator_suite.hpp"

TEST_CASE("a SQLite database in memory is migrated like a file") {
  auto connector = livestate::mq::make_simple_mq();
  const auto store = Store::open("sqlite::memory:", *connector);
  CHECK(migration_status(*store).database_version == shipped_migrations(Backend::sqlite).back().version);
  CHECK(recorded_versions(*store) == versions_up_to(shipped_migrations(Backend::sqlite).back().version));
}
