#pragma once

// A reconcile::Source over a Buildbot 3.7 database (PostgreSQL or SQLite)
// with the "buildbot" migration set applied (`livestate migrate --set
// buildbot`): live views of Buildbot's own build requests, buildsets, builds
// and steps.
//
//   auto store = livestate::db::Store::open(buildbot_url, *connector, {.migrate = false});
//   auto source = livestate::reconcile::buildbot_source(*store);
//   livestate::reconcile::LiveView view(*connector, *source, io.get_executor(),
//       {.type = "buildrequests", .revisionless_messages_are_hints = true});
//
// Bodies are exactly those Buildbot's messages carry (docs/BUILDBOT_VIEWS.md),
// plus "_rev", the revision the set's triggers keep, read in one snapshot with
// the body.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/reconcile/source.hpp"

namespace livestate::db {
class Store;
}

namespace livestate::reconcile {

/// The types a Buildbot source reads: buildrequests, buildsets, builds, steps.
[[nodiscard]] std::vector<std::string> buildbot_types();

/// The body fields of `type` that a view may narrow on (`where`): every field
/// of Buildbot's message body for it. std::invalid_argument for another type.
[[nodiscard]] std::vector<std::string> buildbot_fields(std::string_view type);

/// A source over the Buildbot database `store` is opened on (with
/// StoreOptions::migrate false: livestate's own schema is not needed there).
/// It shares the store's connections, as source_of() does: it may outlive the
/// Store object. Throws db::SchemaOutOfDate
/// when the database lacks the buildbot set's migrations (saying to run
/// `livestate migrate --set buildbot`). read() throws std::invalid_argument for a
/// type or a `where` field it doesn't know: names are checked against the
/// lists above, and values are bound, never pasted into SQL.
[[nodiscard]] std::unique_ptr<Source> buildbot_source(db::Store& store);

}  // namespace livestate::reconcile
