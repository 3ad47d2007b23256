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

inline std::string before_sets_dump() { return LIVESTATE_SOURCE_DIR "/tests/data/livestate-before-sets.sqlite.sql"; }

}  // namespace migrator_suite

// The sets suite uses what the migrator suite defines: it comes first.
#include "migrator_suite.hpp"

#include "migration_sets_suite.hpp"
#include "migrator_sha256.hpp"  // db/src

TEST_CASE("a SQLite database in memory is migrated like a file") {
  auto connector = livestate::mq::make_simple_mq();
  const auto store = Store::open("sqlite::memory:", *connector);
  CHECK(migration_status(*store).database_version == shipped_migrations(Backend::sqlite).back().version);
  CHECK(recorded_versions(*store) == versions_up_to(shipped_migrations(Backend::sqlite).back().version));
}

TEST_CASE("checksums of migrations read at run time are SHA-256, as the build computes them") {
  using detail::sha256_hex;
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Around the block's padding: 55 bytes fit one block, 56 need two.
  CHECK(sha256_hex(std::string(55, 'a')) == "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  CHECK(sha256_hex(std::string(56, 'a')) == "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  CHECK(sha256_hex(std::string(64, 'a')) == "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
  CHECK(sha256_hex(std::string(119, 'a')) == "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb");
  CHECK(sha256_hex(std::string(1'000'000, 'a')) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Every shipped migration's compiled-in checksum is its text's.
  for (const Backend backend : {Backend::sqlite, Backend::postgresql}) {
    for (const auto& name : shipped_migration_set_names(backend)) {
      const MigrationSet set = *shipped_migration_set(name, backend);  // outlives the loop over it
      for (const auto& migration : set.migrations()) {
        CAPTURE(migration.name);
        CHECK(sha256_hex(migration.sql) == migration.checksum);
      }
    }
  }
}

TEST_CASE("the library ships livestate's own set and the buildbot set, for both backends") {
  for (const Backend backend : {Backend::sqlite, Backend::postgresql}) {
    CHECK(shipped_migration_set_names(backend) == std::vector<std::string>{"livestate", "buildbot"});
    REQUIRE(shipped_migration_set("buildbot", backend).has_value());
    CHECK(shipped_migration_set("buildbot", backend)->migrations().front().name == "revisions");
    CHECK_FALSE(shipped_migration_set("nonesuch", backend).has_value());
  }
}
