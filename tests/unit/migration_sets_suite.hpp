#pragma once

// Migration sets, written once for both backends after migrator_suite.hpp
// (whose Fixture and helpers it uses): tests/unit/migrator.cpp runs it on
// SQLite files, tests/pg/migrator.cpp on PostgreSQL databases.
//
// The including file also defines migrator_suite::before_sets_dump(): the
// path of a dump of a database that livestate made before sets existed.

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace migrator_suite {

// A directory of migration files of its own, removed afterwards.
class MigrationDirectory {
 public:
  MigrationDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "livestate-set-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    m_path = pattern;
  }
  MigrationDirectory(const MigrationDirectory&) = delete;
  MigrationDirectory& operator=(const MigrationDirectory&) = delete;
  ~MigrationDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(m_path, ignored);
  }
  void write(const std::string& name, const std::string& sql) const {
    const auto path = m_path / name;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << sql;
  }
  [[nodiscard]] const std::filesystem::path& path() const { return m_path; }

 private:
  std::filesystem::path m_path;
};

// An application's own set: SQL both engines read.
constexpr const char* notes_sql = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);\n";
constexpr const char* tags_sql = "CREATE TABLE note_tags (noteid INTEGER NOT NULL, tag TEXT NOT NULL);\n";

inline MigrationSet app_set(const MigrationDirectory& dir, const Store& store) {
  return MigrationSet::from_directory("app", dir.path(), store.backend());
}

// The versions livestate_migration_sets records for a set, in order.
inline std::vector<int> set_versions(Store& store, const std::string& set) {
  std::vector<int> versions;
  for (const auto& row :
       query(store, "SELECT version FROM livestate_migration_sets WHERE set_name = '" + set + "' ORDER BY version")) {
    versions.push_back(static_cast<int>(row.as_int(0)));
  }
  return versions;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace migrator_suite

TEST_CASE("an application's directory of migrations is applied in order, recorded under its set, and announced") {
  Fixture f;
  MigrationDirectory dir;
  dir.write("0001_notes.sql", notes_sql);
  dir.write("0002_note_tags.sql", tags_sql);
  dir.write("README.md", "not a migration: ignored");
  const MigrationSet set = app_set(dir, *f.store);
  REQUIRE(set.migrations().size() == 2);

  CHECK(migrate(*f.store, set) == 2);
  CHECK(set_versions(*f.store, "app") == std::vector<int>{1, 2});
  CHECK(count(*f.store, "notes") == 0);
  CHECK(count(*f.store, "note_tags") == 0);
  const auto rows = query(*f.store, "SELECT name, checksum, applied_at FROM livestate_migration_sets ORDER BY version");
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].as_text(0) == "notes");
  // The checksum of the file's bytes, as `sha256sum` gives it.
  CHECK(rows[0].as_text(1) == "7bc4c05ec912bc607f1515d7ed2b85b4358bf388bf4c833e09a7ddd35bf4db90");
  CHECK(rows[0].as_double(2) == pinned_time);
  CHECK(f.announced == std::vector<Message>{{RoutingKey{"schema", "app", "2", "migrated"},
                                             {{"set", "app"}, {"version", 2}, {"previous", 0}}}});

  // livestate's own set is untouched by it, and the other way round.
  CHECK_THROWS_AS(count(*f.store, "livestate_schema_migrations"), detail::SessionFailure);
  CHECK(migration_status(*f.store).database_version == 0);
  CHECK(migrate(*f.store) == f.latest());
  CHECK(recorded_versions(*f.store) == versions_up_to(f.latest()));
  CHECK(migration_status(*f.store, set).database_version == 2);
  CHECK(recorded_migration_sets(*f.store) == std::vector<std::string>{"livestate", "app"});

  f.announced.clear();
  CHECK(migrate(*f.store, set) == 2);
  CHECK(f.announced.empty());
}

TEST_CASE("a directory with a subdirectory for the database's backend is read from there") {
  Fixture f;
  MigrationDirectory dir;
  dir.write("sqlite/0001_notes.sql", "CREATE TABLE notes_for_sqlite (id INTEGER);");
  dir.write("postgres/0001_notes.sql", "CREATE TABLE notes_for_postgres (id INTEGER);");
  dir.write("0001_ignored.sql", "CREATE TABLE notes_for_nobody (id INTEGER);");
  CHECK(migrate(*f.store, app_set(dir, *f.store)) == 1);
  const bool sqlite = f.store->backend() == Backend::sqlite;
  CHECK(count(*f.store, sqlite ? "notes_for_sqlite" : "notes_for_postgres") == 0);
  CHECK_THROWS_AS(count(*f.store, sqlite ? "notes_for_postgres" : "notes_for_sqlite"), detail::SessionFailure);
  CHECK_THROWS_AS(count(*f.store, "notes_for_nobody"), detail::SessionFailure);
}

TEST_CASE("a migration file changed after it was applied is refused by its checksum, and nothing is applied") {
  Fixture f;
  MigrationDirectory dir;
  dir.write("0001_notes.sql", notes_sql);
  REQUIRE(migrate(*f.store, app_set(dir, *f.store)) == 1);
  const std::string applied_checksum(app_set(dir, *f.store).migrations()[0].checksum);

  dir.write("0001_notes.sql", std::string(notes_sql) + "-- a comment added later\n");
  dir.write("0002_note_tags.sql", tags_sql);
  const MigrationSet tampered = app_set(dir, *f.store);
  f.announced.clear();
  CHECK_THROWS_AS(migrate(*f.store, tampered), SchemaChecksumMismatch);
  CHECK_THROWS_AS(migration_status(*f.store, tampered), SchemaChecksumMismatch);
  CHECK_THROWS_AS(planned_migrations(*f.store, tampered), SchemaChecksumMismatch);
  const std::string message = message_of([&] { migrate(*f.store, tampered); });
  CHECK(message.find("migration 1 (notes) of set 'app' was applied with checksum " + applied_checksum) !=
        std::string::npos);
  CHECK(message.find(std::string(tampered.migrations()[0].checksum)) != std::string::npos);

  CHECK(set_versions(*f.store, "app") == std::vector<int>{1});
  CHECK_THROWS_AS(count(*f.store, "note_tags"), detail::SessionFailure);
  CHECK(f.announced.empty());
}

TEST_CASE("a set's history that holds a migration the directory lacks is refused as newer") {
  Fixture f;
  MigrationDirectory dir;
  dir.write("0001_notes.sql", notes_sql);
  dir.write("0002_note_tags.sql", tags_sql);
  REQUIRE(migrate(*f.store, app_set(dir, *f.store)) == 2);

  MigrationDirectory older;
  older.write("0001_notes.sql", notes_sql);
  const MigrationSet set = app_set(older, *f.store);
  CHECK_THROWS_AS(migrate(*f.store, set), SchemaTooNew);
  CHECK_THROWS_AS(migration_status(*f.store, set), SchemaTooNew);
  CHECK_THROWS_AS(planned_migrations(*f.store, set), SchemaTooNew);
  CHECK(message_of([&] { migrate(*f.store, set); }).find("migration 2 (note_tags) of set 'app' applied") !=
        std::string::npos);
  CHECK_THROWS_AS(migrate(*f.store, app_set(dir, *f.store), 1), SchemaTooNew);  // no going down
  CHECK(set_versions(*f.store, "app") == std::vector<int>{1, 2});
}

TEST_CASE("a dry run returns the SQL migrating would run, and changes and announces nothing") {
  Fixture f;
  MigrationDirectory dir;
  dir.write("0001_notes.sql", notes_sql);
  dir.write("0002_note_tags.sql", tags_sql);
  const MigrationSet set = app_set(dir, *f.store);

  auto plan = planned_migrations(*f.store, set);
  REQUIRE(plan.size() == 2);
  CHECK(plan[0].version == 1);
  CHECK(plan[0].sql == notes_sql);
  CHECK(plan[1].sql == tags_sql);
  CHECK(planned_migrations(*f.store, set, 1).size() == 1);
  CHECK_THROWS_AS((void)planned_migrations(*f.store, set, 3), std::invalid_argument);
  // Nothing was made, not even the history table.
  CHECK_THROWS_AS(count(*f.store, "livestate_migration_sets"), detail::SessionFailure);
  CHECK_THROWS_AS(count(*f.store, "notes"), detail::SessionFailure);
  CHECK(f.announced.empty());

  REQUIRE(migrate(*f.store, set, 1) == 1);
  plan = planned_migrations(*f.store, set);
  REQUIRE(plan.size() == 1);
  CHECK(plan[0].name == "note_tags");
  CHECK_THROWS_AS(count(*f.store, "note_tags"), detail::SessionFailure);
  CHECK(planned_migrations(*f.store, MigrationSet(std::string(MigrationSet::livestate), f.shipped())).size() ==
        f.shipped().size());
}

TEST_CASE("a set compiled into a program is handed to the migrator as it is") {
  static constexpr Migration compiled[] = {
      {1, "notes", "CREATE TABLE compiled_notes (id INTEGER);",
       "0000000000000000000000000000000000000000000000000000000000000001"},
  };
  Fixture f;
  const MigrationSet set("compiled", compiled);
  CHECK(migrate(*f.store, set) == 1);
  CHECK(count(*f.store, "compiled_notes") == 0);
  CHECK(migration_status(*f.store, set).applied.at(0).checksum == compiled[0].checksum);
  CHECK(migration_status(*f.store, set).set == "compiled");
}

TEST_CASE("a failing migration of a set is rolled back, and says how to migrate that set again") {
  Fixture f;
  MigrationDirectory dir;
  dir.write("0001_notes.sql", notes_sql);
  dir.write("0002_broken.sql", "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);");
  const MigrationSet set = app_set(dir, *f.store);
  CHECK_THROWS_AS(migrate(*f.store, set), MigrationFailed);
  CHECK(message_of([&] { migrate(*f.store, set); }).find("run `livestate migrate --set app` again") !=
        std::string::npos);
  CHECK(set_versions(*f.store, "app") == std::vector<int>{1});
  CHECK_THROWS_AS(count(*f.store, "half_done"), detail::SessionFailure);
}

TEST_CASE("a bad set name, a missing directory, a misnamed file and a gap are refused") {
  Fixture f;
  MigrationDirectory dir;
  dir.write("0001_notes.sql", notes_sql);
  CHECK_THROWS_AS(MigrationSet::from_directory("App", dir.path(), Backend::sqlite), std::invalid_argument);
  CHECK_THROWS_AS(MigrationSet::from_directory("", dir.path(), Backend::sqlite), std::invalid_argument);
  CHECK_THROWS_AS(MigrationSet::from_directory("app", dir.path() / "nowhere", Backend::sqlite), std::invalid_argument);
  {
    MigrationDirectory misnamed;
    misnamed.write("0001-notes.sql", notes_sql);
    CHECK_THROWS_AS(MigrationSet::from_directory("app", misnamed.path(), Backend::sqlite), std::invalid_argument);
  }
  {
    MigrationDirectory gap;
    gap.write("0001_notes.sql", notes_sql);
    gap.write("0003_note_tags.sql", tags_sql);
    CHECK_THROWS_AS(MigrationSet::from_directory("app", gap.path(), Backend::sqlite), std::invalid_argument);
  }
  CHECK_THROWS_AS(migrate(*f.store, app_set(dir, *f.store), 2), std::invalid_argument);
  CHECK_THROWS_AS(count(*f.store, "livestate_migration_sets"), detail::SessionFailure);
}

TEST_CASE("a database made before migration sets keeps its history, its data, and migrates on") {
  Fixture f;
  exec(*f.store, read_text(before_sets_dump()));
  // The dumps were made at livestate's migration 5, the last before sets;
  // those shipped since are pending, and applied as on any other database.
  constexpr int dumped_version = 5;
  const MigrationStatus status = migration_status(*f.store);
  CHECK(status.database_version == dumped_version);
  CHECK(status.pending.size() == static_cast<std::size_t>(f.latest() - dumped_version));
  CHECK(recorded_migration_sets(*f.store) == std::vector<std::string>{"livestate"});
  CHECK(migrate(*f.store) == f.latest());
  CHECK(f.announced == std::vector<Message>{{RoutingKey{"schema", std::to_string(f.latest()), "migrated"},
                                             {{"version", f.latest()}, {"previous", dumped_version}}}});
  CHECK(f.store->master_active("master-made-by-0.x") == 1);  // its row, kept

  MigrationDirectory dir;
  dir.write("0001_notes.sql", notes_sql);
  CHECK(migrate(*f.store, app_set(dir, *f.store)) == 1);
  CHECK(recorded_versions(*f.store) == versions_up_to(f.latest()));  // the old table, as it was
  CHECK(recorded_migration_sets(*f.store) == std::vector<std::string>{"livestate", "app"});
  // A store opened as every program opens one finds nothing to do.
  CHECK(migration_status(*f.open(true)).database_version == f.latest());
}

TEST_CASE("processes migrating an application's set at once all succeed, and apply each migration once") {
  MigrationDirectory dir;
  dir.write("0001_notes.sql", notes_sql);
  dir.write("0002_note_tags.sql", tags_sql);
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    TestDatabase database;
    CHECK(migrate_concurrently(database.url(), 4, dir.path().string()) == "0 0 0 0");
    auto connector = mq::make_simple_mq();
    StoreOptions options;
    options.migrate = false;
    const auto store = Store::open(database.url(), *connector, options);
    CHECK(set_versions(*store, "app") == std::vector<int>{1, 2});
    CHECK(count(*store, "note_tags") == 0);
  }
}

TEST_CASE("another application's tables are listed as other tables, livestate's own never") {
  Fixture f;
  CHECK(migration_status(*f.store).other_tables.empty());
  // What livestate's PostgreSQL connector makes in an empty database, and a
  // history of another set: livestate's, so the database is still "empty".
  exec(*f.store, "CREATE TABLE livestate_mq_bodies (id INTEGER)");
  MigrationDirectory dir;
  dir.write("0001_notes.sql", "CREATE TABLE livestate_notes (id INTEGER);");
  REQUIRE(migrate(*f.store, app_set(dir, *f.store)) == 1);
  CHECK(migration_status(*f.store).other_tables.empty());
  exec(*f.store, "CREATE TABLE invoices (id INTEGER)");
  CHECK(migration_status(*f.store).other_tables == std::vector<std::string>{"invoices"});
  CHECK(migration_status(*f.store, app_set(dir, *f.store)).other_tables.empty());  // applied: not asked
}
