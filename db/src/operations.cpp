// The Buildbot-shaped data model, written once for both backends against
// detail::Session: each update method changes its rows, bumps their revision
// and announces the change on every routing-key path Buildbot uses, with the
// row as it now is (plus "_rev") as the body. Here: masters, builders,
// workers, buildsets and the build requests' lifecycle; builds, steps and
// resources in operations_builds.cpp, reads in operations_reads.cpp, what
// changed since a watermark in operations_changes.cpp, what they share in
// model.hpp.

#include <set>
#include <string>

#include "livestate/core/wire.hpp"
#include "livestate/db/store.hpp"
#include "model.hpp"

namespace livestate::db {

using namespace detail::model;

// --- masters, builders, workers ----------------------------------------------

std::int64_t Operations::master_active(std::string_view name) {
  std::int64_t masterid = 0;
  run(true, [&](Context& context) {
    context.execute("INSERT INTO masters (name, position) VALUES (?, " + context.change_position("masters") +
                        ") ON CONFLICT (name) DO NOTHING",
                    {std::string(name)});
    const auto found = context.query("SELECT id, active FROM masters WHERE name = ?", {std::string(name)});
    masterid = found.front().as_int(0);
    const bool was_active = found.front().as_bool(1);
    const auto row = update_one(context, "masters", "active = ?, last_active = ?", master_columns,
                                {true, context.now()}, masterid, "master");
    if (!was_active) {
      context.announce(RoutingKey({"masters", key_element(masterid), "started"}), master_body(row));
    }
  });
  return masterid;
}

void Operations::master_stopped(std::int64_t masterid) {
  run(true, [&](Context& context) {
    const auto found = context.query("SELECT active FROM masters WHERE id = ?", {masterid});
    if (found.empty()) throw NotFound("no master with id " + std::to_string(masterid));
    if (found.front().as_bool(0)) {
      const auto row = update_one(context, "masters", "active = ?", master_columns, {false}, masterid, "master");
      context.announce(RoutingKey({"masters", key_element(masterid), "stopped"}), master_body(row));
    }
    release_claims(context, nullptr, masterid);
  });
}

std::int64_t Operations::builder_started(std::string_view name, std::int64_t masterid) {
  std::int64_t builderid = 0;
  run(true, [&](Context& context) {
    context.execute("INSERT INTO builders (name, position) VALUES (?, " + context.change_position("builders") +
                        ") ON CONFLICT (name) DO NOTHING",
                    {std::string(name)});
    builderid = context.query("SELECT id FROM builders WHERE name = ?", {std::string(name)}).front().as_int(0);
    if (context.query("SELECT id FROM masters WHERE id = ?", {masterid}).empty()) {
      throw NotFound("no master with id " + std::to_string(masterid));
    }
    context.execute("INSERT INTO builder_masters (builderid, masterid) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    {builderid, masterid});
    const auto row = update_one(context, "builders", "name = name", builder_columns, {}, builderid, "builder");
    context.announce(
        RoutingKey({"builders", key_element(builderid), "started"}),
        Json{{"builderid", builderid}, {"masterid", masterid}, {"name", std::string(name)}, {"_rev", row.as_int(4)}});
  });
  return builderid;
}

std::int64_t Operations::find_worker_id(std::string_view name) {
  std::int64_t workerid = 0;
  run(true, [&](Context& context) {
    context.execute("INSERT INTO workers (name, position) VALUES (?, " + context.change_position("workers") +
                        ") ON CONFLICT (name) DO NOTHING",
                    {std::string(name)});
    workerid = context.query("SELECT id FROM workers WHERE name = ?", {std::string(name)}).front().as_int(0);
  });
  return workerid;
}

// --- buildsets and build requests -------------------------------------------

AddedBuildset Operations::add_buildset(const NewBuildset& buildset) {
  // Their bodies hold these one level down.
  wire::check_depth(buildset.sourcestamps, "the buildset's sourcestamps", wire::max_body_depth - 1);
  wire::check_depth(buildset.properties, "the buildset's properties", wire::max_body_depth - 1);
  AddedBuildset added;
  const auto builderids = sorted_unique(buildset.builderids);
  run(true, [&](Context& context) {
    added = {};
    if (!builderids.empty()) {
      const auto missing = missing_from(
          builderids, context.query("SELECT id FROM builders WHERE id IN " + placeholders(builderids.size()),
                                    values_of(builderids)));
      if (!missing.empty()) throw NotFound("no builder with id " + join_ids(missing));
    }
    const double now = context.now();
    const auto set_row = context.query(
        "INSERT INTO buildsets (external_idstring, reason, scheduler, submitted_at, sourcestamps, position) "
        "VALUES (?, ?, ?, ?, ?, " +
            context.change_position("buildsets") + ") RETURNING " + std::string(buildset_columns),
        {optional_text(buildset.external_idstring), optional_text(buildset.reason), optional_text(buildset.scheduler),
         now, buildset.sourcestamps.dump()});
    added.bsid = set_row.front().as_int(0);
    context.announce(RoutingKey({"buildsets", key_element(added.bsid), "new"}), buildset_body(set_row.front()));
    const Value properties = buildset.properties.is_null() ? Value(std::monostate{})
                                                           : Value(buildset.properties.dump());
    for (const auto builderid : builderids) {
      const auto rows = context.query(
          "INSERT INTO buildrequests (buildsetid, builderid, priority, submitted_at, waited_for, properties, "
          "position) VALUES (?, ?, ?, ?, ?, ?, " +
              context.change_position("buildrequests") + ") RETURNING " + buildrequest_columns,
          {added.bsid, builderid, std::int64_t{buildset.priority}, now, buildset.waited_for, properties});
      added.buildrequestids[builderid] = announce_buildrequest(context, rows.front(), "new").id;
    }
  });
  return added;
}

void Operations::claim_buildrequests(std::span<const std::int64_t> buildrequestids, std::int64_t masterid) {
  const auto ids = sorted_unique(buildrequestids);
  if (ids.empty()) return;
  run(true, [&](Context& context) {
    std::vector<Value> params{masterid, context.now()};
    params.insert(params.end(), ids.begin(), ids.end());
    params.emplace_back(false);
    // A claim is a row whose primary key is the request: of two masters racing,
    // one inserts and the other's ON CONFLICT finds the row and claims nothing.
    std::string insert =
        "INSERT INTO buildrequest_claims (brid, masterid, claimed_at) "
        "SELECT id, CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION) FROM buildrequests "
        "WHERE id IN " +
        placeholders(ids.size()) + " AND complete = ? ON CONFLICT (brid) DO NOTHING";
    // On PostgreSQL one statement claims and bumps the claimed requests, one
    // round trip fewer. A refusal throws below, and the rollback (of the
    // transaction, or of the operation's savepoint) takes back the claims
    // and bumps made for the others.
    if (context.backend() == Backend::postgresql) {
      const auto rows = context.query("WITH claimed AS (" + insert +
                                          " RETURNING brid, masterid, claimed_at) "
                                          "UPDATE buildrequests SET revision = " +
                                          bump(context, "buildrequests") +
                                          " FROM claimed WHERE id = claimed.brid RETURNING " +
                                          std::string(buildrequest_own_columns) + ", masterid, claimed_at",
                                      params);
      if (rows.size() != ids.size()) refuse_claims(context, missing_from(ids, rows));
      announce_buildrequests(context, rows, "claimed");
      return;
    }
    std::vector<std::int64_t> refused;
    if (read_after_change(context, ids.size())) {
      if (context.execute(insert, params) != 1) refused = ids;
    } else {
      refused = missing_from(ids, context.query(insert + " RETURNING brid", params));
    }
    if (!refused.empty()) refuse_claims(context, refused);
    // The claim is known: the RETURNING list takes it as parameters rather
    // than looking it up again.
    static const std::string claimed_columns = std::string(buildrequest_own_columns) +
                                               ", CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION)";
    announce_buildrequests(context,
                           change_returning(context,
                                            "UPDATE buildrequests SET revision = " + bump(context, "buildrequests") +
                                                " WHERE id IN " + placeholders(ids.size()),
                                            values_of(ids), claimed_columns, "buildrequests", ids,
                                            {masterid, params[1]}),
                           "claimed");
  });
}

void Operations::unclaim_buildrequests(std::span<const std::int64_t> buildrequestids, std::int64_t masterid) {
  const auto ids = sorted_unique(buildrequestids);
  if (ids.empty()) return;
  run(true, [&](Context& context) { release_claims(context, &ids, masterid); });
}

void Operations::complete_buildrequests(std::span<const std::int64_t> buildrequestids, int results,
                                        std::int64_t masterid) {
  const auto ids = sorted_unique(buildrequestids);
  if (ids.empty()) return;
  run(true, [&](Context& context) {
    std::vector<Value> params{true, std::int64_t{results}, context.now()};
    params.insert(params.end(), ids.begin(), ids.end());
    params.emplace_back(false);
    params.emplace_back(masterid);
    const std::string set = "UPDATE buildrequests SET complete = ?, results = ?, complete_at = ?, revision = " +
                            bump(context, "buildrequests");
    const std::string which = " WHERE id IN " + placeholders(ids.size()) + " AND complete = ?";
    // On PostgreSQL the claim check is a join, whose row also gives the
    // claim to the body; the same statement then locks the requests'
    // buildsets (see complete_finished_buildsets), one round trip fewer:
    // the requests are locked (updated) before their buildsets, in id order,
    // as in the other operations that change both.
    const bool lock_here = context.backend() == Backend::postgresql;
    const auto rows =
        lock_here
            ? context.query("WITH updated AS (" + set + " FROM buildrequest_claims AS claim" + which +
                                " AND claim.brid = buildrequests.id AND claim.masterid = ? RETURNING " +
                                std::string(buildrequest_own_columns) +
                                ", claim.masterid, claim.claimed_at) SELECT updated.* FROM updated JOIN buildsets "
                                "ON buildsets.id = updated.buildsetid ORDER BY buildsets.id FOR UPDATE OF buildsets",
                            params)
            : change_returning(context,
                               set + which +
                                   " AND EXISTS (SELECT 1 FROM buildrequest_claims WHERE brid = buildrequests.id "
                                   "AND masterid = ?)",
                               std::move(params), buildrequest_columns, "buildrequests", ids);
    if (rows.size() != ids.size()) {
      const auto refused = missing_from(ids, rows);
      throw NotClaimed("master " + std::to_string(masterid) + " does not hold the claim of " + requests(refused) +
                           " (not claimed, claimed by another master, or complete); nothing was completed",
                       refused);
    }
    std::set<std::int64_t> bsids;
    for (const auto& request : announce_buildrequests(context, rows, "complete")) bsids.insert(request.buildsetid);
    complete_finished_buildsets(context, bsids, lock_here);
  });
}

void Operations::cancel_buildrequests(std::span<const std::int64_t> buildrequestids) {
  const auto ids = sorted_unique(buildrequestids);
  if (ids.empty()) return;
  run(true, [&](Context& context) {
    std::vector<Value> params{true, std::int64_t{results::cancelled}, context.now()};
    params.insert(params.end(), ids.begin(), ids.end());
    params.emplace_back(false);
    const auto rows = context.query("UPDATE buildrequests SET complete = ?, results = ?, complete_at = ?, revision = " +
                                        bump(context, "buildrequests") +
                                        " "
                                        "WHERE id IN " +
                                        placeholders(ids.size()) + " AND complete = ? RETURNING " +
                                        std::string(buildrequest_columns),
                                    params);
    std::set<std::int64_t> bsids;
    for (const auto& request : announce_buildrequests(context, rows, "complete")) {
      bsids.insert(request.buildsetid);
      announce_buildrequest(context, request, "cancel");
    }
    complete_finished_buildsets(context, bsids);
  });
}

}  // namespace livestate::db
