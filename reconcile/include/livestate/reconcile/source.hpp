#pragma once

// Where a live view reads what it loads and reloads: a db::Store, or anything
// else that keeps rows by type and id with a revision (a replayed trace).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/core/json.hpp"

namespace livestate::db {
class Store;
}

namespace livestate::reconcile {

/// Rows by type and id, each body carrying its revision as "_rev".
///
/// Thread safety: a view calls it from its strand, and verify() from the
/// caller's thread; an implementation used by a view must allow both.
class Source {
 public:
  Source() = default;
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;
  virtual ~Source();

  /// The entries of `type` whose body fields equal `where`'s (among `ids`,
  /// when given), by id. std::invalid_argument for a field it can't filter on.
  virtual std::map<std::string, Json> read(std::string_view type, const Json& where,
                                           const std::optional<std::vector<std::string>>& ids) = 0;
  /// The entries of `type` that were deleted (among `ids`, when given; within
  /// the last `within`, when given, by the clock of the store that deleted
  /// them), each with the revision of its deletion. Empty for types never
  /// deleted.
  virtual std::map<std::string, std::int64_t> deletions(std::string_view type,
                                                        const std::optional<std::vector<std::string>>& ids,
                                                        std::optional<std::chrono::milliseconds> within) = 0;

  // --- repairs by what was missed (optional) --------------------------------
  // A source that keeps a history of its changes lets a view that missed
  // messages (a gap, an overflow, a reconnect) read only what changed since
  // it last read, instead of its whole type. The defaults keep no history:
  // the view then reads everything, as before.

  /// What changed in a type since a watermark.
  struct Changes {
    /// The entries changed since, by id, each as it is now and whatever its
    /// fields (the view applies its narrowing itself).
    std::map<std::string, Json> rows;
    /// The entries deleted since, with the revision of the deletion.
    std::map<std::string, std::int64_t> deletions;
    /// Where the next changes_since() starts: taken before these were read.
    std::string watermark;
  };

  /// Where the source's history stands now, as opaque text: a read() that
  /// starts after this call sees every change made before it, and
  /// changes_since() later finds every change made after it. std::nullopt
  /// (the default): the source keeps no history.
  virtual std::optional<std::string> watermark(std::string_view type);
  /// The entries of `type` changed since `watermark` (a watermark() or a
  /// changes_since() of this source), deletions included. std::nullopt (the
  /// default) when the source can't tell (no history, a watermark older
  /// than the history it keeps, or not its own): the view reads everything
  /// (counted in ViewStats::full_resyncs).
  virtual std::optional<Changes> changes_since(std::string_view type, const std::string& watermark);
};

/// The store as a source: Store::list and Store::deletions. Borrowed: the
/// store must outlive the source.
[[nodiscard]] std::unique_ptr<Source> source_of(db::Store& store);

}  // namespace livestate::reconcile
