// The data model's builds, steps and application-defined resources
// (operations.cpp says how an update method works).

#include <set>
#include <string>

#include "livestate/core/wire.hpp"
#include "livestate/db/store.hpp"
#include "model.hpp"

namespace livestate::db {

using namespace detail::model;

// --- builds and steps ----------------------------------------------------------

AddedBuild Operations::add_build(std::int64_t builderid, std::int64_t buildrequestid,
                                 std::optional<std::int64_t> workerid, std::int64_t masterid,
                                 std::string_view state_string) {
  AddedBuild added;
  run(true, [&](Context& context) {
    if (context.query("SELECT id FROM buildrequests WHERE id = ?", {buildrequestid}).empty()) {
      throw NotFound("no build request with id " + std::to_string(buildrequestid));
    }
    if (context.backend() == Backend::postgresql) {
      // One build number at a time per builder: the next transaction waits,
      // then its MAX(number) sees this one's build (READ COMMITTED). Without
      // the lock, masters racing for a builder's numbers could collide more
      // often than the retries below allow.
      context.query("SELECT id FROM builders WHERE id = ? FOR UPDATE", {builderid});
    }
    Rows rows;
    try {
      rows = context.query(
          "INSERT INTO builds (number, builderid, buildrequestid, workerid, masterid, started_at, state_string, "
          "position) VALUES ((SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE builderid = ?), ?, ?, ?, ?, ?, "
          "?, " +
              context.change_position("builds") + ") RETURNING " + std::string(build_columns),
          {builderid, builderid, buildrequestid, workerid ? Value(*workerid) : Value(std::monostate{}), masterid,
           context.now(), std::string(state_string)});
    } catch (const detail::SessionFailure& failure) {
      // Should two transactions still number a build of this builder at
      // once, retrying takes the next number.
      if (failure.kind() != detail::FailureKind::unique_violation) throw;
      throw detail::SessionFailure(detail::FailureKind::serialization, failure.what());
    }
    Json body = build_body(rows.front());
    added = {body["buildid"].get<std::int64_t>(), body["number"].get<int>()};
    announce_build(context, std::move(body), "new");
  });
  return added;
}

void Operations::set_build_state_string(std::int64_t buildid, std::string_view state_string) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "builds", "state_string = ?", build_columns, {std::string(state_string)},
                                buildid, "build");
    announce_build(context, build_body(row), "update");
  });
}

void Operations::finish_build(std::int64_t buildid, int results) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "builds", "complete_at = ?, results = ?", build_columns,
                                {context.now(), std::int64_t{results}}, buildid, "build");
    announce_build(context, build_body(row), "finished");
  });
}

AddedStep Operations::add_step(std::int64_t buildid, std::string_view name) {
  AddedStep added;
  run(true, [&](Context& context) {
    if (context.query("SELECT id FROM builds WHERE id = ?", {buildid}).empty()) {
      throw NotFound("no build with id " + std::to_string(buildid));
    }
    std::set<std::string> names;
    std::int64_t number = 0;
    for (const auto& row : context.query("SELECT number, name FROM steps WHERE buildid = ?", {buildid})) {
      number = std::max(number, row.as_int(0) + 1);
      names.insert(row.as_text(1));
    }
    // Buildbot makes a repeated name unique with a suffix: test, test_2, test_3.
    std::string unique_name(name);
    for (int suffix = 2; names.contains(unique_name); ++suffix) {
      unique_name = std::string(name) + "_" + std::to_string(suffix);
    }
    const auto rows = context.query(
        "INSERT INTO steps (number, name, buildid, state_string, position) VALUES (?, ?, ?, ?, " +
            context.change_position("steps") + ") RETURNING " + std::string(step_columns),
        {number, unique_name, buildid, std::string("pending")});
    Json body = step_body(rows.front());
    added = {body["stepid"].get<std::int64_t>(), static_cast<int>(number), unique_name};
    announce_step(context, std::move(body), "new");
  });
  return added;
}

void Operations::start_step(std::int64_t stepid) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "steps", "started_at = ?", step_columns, {context.now()}, stepid, "step");
    announce_step(context, step_body(row), "started");
  });
}

void Operations::set_step_state_string(std::int64_t stepid, std::string_view state_string) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "steps", "state_string = ?", step_columns, {std::string(state_string)}, stepid,
                                "step");
    announce_step(context, step_body(row), "updated");
  });
}

void Operations::finish_step(std::int64_t stepid, int results, bool hidden) {
  run(true, [&](Context& context) {
    const auto row = update_one(context, "steps", "complete_at = ?, results = ?, hidden = ?", step_columns,
                                {context.now(), std::int64_t{results}, hidden}, stepid, "step");
    announce_step(context, step_body(row), "finished");
  });
}

// --- application-defined resources ---------------------------------------------

std::int64_t Operations::upsert_resource(std::string_view type, std::string_view id, const Json& state) {
  check_resource_type(type, id);
  // Its body holds the state one level down.
  wire::check_depth(state, "the state of " + std::string(type) + " " + std::string(id), wire::max_body_depth - 1);
  std::int64_t revision = 0;
  const std::string text = state.dump();
  run(true, [&](Context& context) {
    const auto before = context.query("SELECT deleted FROM resources WHERE type = ? AND id = ?",
                                      {std::string(type), std::string(id)});
    const bool created = before.empty() || before.front().as_bool(0);
    const auto rows = context.query(
        "INSERT INTO resources (type, id, state, position) VALUES (?, ?, ?, " + context.change_position("resources") +
            ") ON CONFLICT (type, id) DO UPDATE SET state = excluded.state, deleted = ?, deleted_at = NULL, "
            "revision = " +
            bump(context, "resources", "resources.revision") + " RETURNING " + std::string(resource_columns),
        {std::string(type), std::string(id), text, false});
    const Json body = resource_body(rows.front());
    revision = body["_rev"].get<std::int64_t>();
    context.announce(RoutingKey({type, id, created ? "new" : "updated"}), body);
  });
  return revision;
}

bool Operations::delete_resource(std::string_view type, std::string_view id) {
  check_resource_type(type, id);
  bool deleted = false;
  run(true, [&](Context& context) {
    const auto rows = context.query(
        "UPDATE resources SET deleted = ?, deleted_at = ?, revision = " + bump(context, "resources") +
            " WHERE type = ? AND id = ? AND deleted = ? RETURNING revision",
        {true, context.now(), std::string(type), std::string(id), false});
    deleted = !rows.empty();
    if (deleted) {
      context.announce(RoutingKey({type, id, "deleted"}),
                       Json{{"type", std::string(type)}, {"id", std::string(id)}, {"_rev", rows.front().as_int(0)}});
    }
  });
  return deleted;
}

}  // namespace livestate::db
