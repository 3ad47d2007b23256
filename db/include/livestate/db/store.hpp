#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "livestate/core/json.hpp"
#include "livestate/core/routing_key.hpp"
#include "livestate/db/errors.hpp"
#include "livestate/db/migrations.hpp"

namespace livestate::mq {
class Connector;
}

namespace livestate::db {

namespace detail {
class Context;
class StoreCore;
}  // namespace detail

/// Buildbot's build results.
namespace results {
inline constexpr int success = 0;
inline constexpr int warnings = 1;
inline constexpr int failure = 2;
inline constexpr int skipped = 3;
inline constexpr int exception = 4;
inline constexpr int retry = 5;
inline constexpr int cancelled = 6;
}  // namespace results

struct StoreOptions {
  /// SQLite: how long a statement waits for another connection's lock before
  /// it fails with DatabaseBusy.
  std::chrono::milliseconds busy_timeout{5000};
  /// Apply the shipped migrations when the store opens (see migrator.hpp). Off:
  /// opening succeeds whatever the schema, and the first use of a missing
  /// table fails; `livestate migrate --status` opens this way.
  bool migrate = true;
  /// Seconds since the UNIX epoch, for the timestamps the store writes
  /// (claimed_at, complete_at…). Tests pin it.
  std::function<double()> clock;
  /// PostgreSQL: how long making a connection may take before it fails with
  /// ConnectionFailed (libpq's connect_timeout; a connect_timeout in the URL
  /// wins). Connections also send TCP keepalives, so that a server host that
  /// vanishes breaks them instead of leaving a call waiting forever.
  std::chrono::seconds connect_timeout{10};
  /// Open for reading only, changing nothing: no SQLite file is created, its
  /// journal mode is left as it is (a WAL database in a directory the
  /// process can't write is read as it stands), no migration is applied
  /// (`migrate` is ignored), and writes fail with ReadOnlyDatabase (on
  /// PostgreSQL, every transaction is READ ONLY). `livestate view` and
  /// `livestate migrate --status` open this way.
  bool read_only = false;
  /// PostgreSQL: how long one statement (or BEGIN, COMMIT) may wait for the
  /// server's answer. Past it the connection is closed and the call fails
  /// with ConnectionFailed (CommitInDoubt for a COMMIT), so that a server
  /// that stops answering — a stopped backend, a host gone quiet whose kernel
  /// still answers TCP keepalives — can't hold a thread for ever. Enforced by
  /// one watchdog thread per process, running while a store with a statement
  /// timeout is open (0: none, and no thread). Long migrations count too.
  std::chrono::milliseconds statement_timeout{std::chrono::seconds(60)};
};

/// What add_buildset creates: a buildset and one build request per builder.
struct NewBuildset {
  std::vector<std::int64_t> builderids;
  std::optional<std::string> reason;
  std::optional<std::string> scheduler;
  std::optional<std::string> external_idstring;
  Json sourcestamps = Json::array();  ///< stored and announced as given
  Json properties = nullptr;          ///< the build requests' properties
  int priority = 0;
  bool waited_for = false;
};

struct AddedBuildset {
  std::int64_t bsid = 0;
  std::map<std::int64_t, std::int64_t> buildrequestids;  ///< builderid -> buildrequestid
};

struct AddedBuild {
  std::int64_t buildid = 0;
  int number = 0;  ///< per builder, from 1
};

struct AddedStep {
  std::int64_t stepid = 0;
  int number = 0;    ///< per build, from 0
  std::string name;  ///< the requested name, made unique in the build ("test_2")
};

/// Narrows list_buildrequests and count_buildrequests; every field set must
/// match.
struct BuildRequestFilter {
  std::optional<std::int64_t> builderid = std::nullopt;
  std::optional<std::int64_t> buildsetid = std::nullopt;
  std::optional<bool> complete = std::nullopt;
  std::optional<bool> claimed = std::nullopt;
  std::optional<std::int64_t> claimed_by_masterid = std::nullopt;
  /// At most this many, the oldest first (requests are listed by id, which is
  /// their order of submission): what a master's request distributor asks
  /// for, so that a long backlog costs it no more than a short one. The
  /// pending requests (complete = false) are found through an index of their
  /// own, however long the history. None: every match.
  std::optional<std::size_t> limit = std::nullopt;
};

/// What changed in a type after a watermark (Operations::changes_since).
struct ChangesSince {
  /// The rows changed since, each as it is now (once, however often it
  /// changed), as list() reads them and whatever their fields; by id.
  std::vector<Json> rows;
  /// The application resources deleted since: id -> the revision of the
  /// deletion.
  std::map<std::string, std::int64_t> deletions;
  /// Where the next changes_since() starts: taken before these were read.
  std::string watermark;
};

/// The Buildbot-shaped data model: update methods and reads. Store runs each
/// call in a transaction of its own; Transaction runs them in itself, so that
/// several changes and their messages commit or roll back together.
///
/// Every update bumps the changed rows' `revision` and announces the change as
/// Buildbot does: on every routing-key path of the event (e.g.
/// buildsets.B.builders.X.buildrequests.R.claimed, buildrequests.R.claimed,
/// builders.X.buildrequests.R.claimed), with Buildbot's body plus "_rev", the
/// row's new revision. Reads return the same bodies (with "_rev"), so a reload
/// and a message body are interchangeable.
///
/// Strings and JSON are bound as parameters, never spliced into SQL.
class Operations {
 public:
  Operations() = default;
  Operations(const Operations&) = delete;
  Operations& operator=(const Operations&) = delete;

  // --- masters, builders, workers -------------------------------------------
  /// Finds or creates the master and marks it active; announces
  /// masters.ID.started when it was not active. Returns its id.
  std::int64_t master_active(std::string_view name);
  /// Marks the master stopped (masters.ID.stopped) and releases its claims on
  /// incomplete build requests (each announced as unclaimed), as Buildbot does.
  void master_stopped(std::int64_t masterid);
  /// Finds or creates the builder, records that `masterid` runs it, announces
  /// builders.ID.started. Returns its id.
  std::int64_t builder_started(std::string_view name, std::int64_t masterid);
  /// Finds or creates a worker (no message, as in Buildbot). Returns its id.
  std::int64_t find_worker_id(std::string_view name);

  // --- buildsets and build requests -----------------------------------------
  /// Announces buildsets.B.new, then each request's new on its three paths.
  AddedBuildset add_buildset(const NewBuildset& buildset);
  /// Claims every request for `masterid`, or none: AlreadyClaimed when one of
  /// them is claimed or complete. NotFound for an unknown id.
  void claim_buildrequests(std::span<const std::int64_t> buildrequestids, std::int64_t masterid);
  /// Releases `masterid`'s claims on the incomplete requests among these;
  /// others are left alone (Buildbot's rule). Announces unclaimed.
  void unclaim_buildrequests(std::span<const std::int64_t> buildrequestids, std::int64_t masterid);
  /// Completes requests claimed by `masterid`: NotClaimed (nothing done) when
  /// it holds the claim of not every one. Announces complete; a buildset whose
  /// requests are all complete is completed with the worst result
  /// (buildsets.B.complete).
  void complete_buildrequests(std::span<const std::int64_t> buildrequestids, int results, std::int64_t masterid);
  /// Cancels the incomplete requests among these, claimed or not: completes
  /// them with results::cancelled and announces complete, then cancel.
  void cancel_buildrequests(std::span<const std::int64_t> buildrequestids);

  // --- builds and steps -----------------------------------------------------
  /// Announces new on builders.X.builds.NUMBER, builds.ID, workers.W.builds.ID.
  AddedBuild add_build(std::int64_t builderid, std::int64_t buildrequestid, std::optional<std::int64_t> workerid,
                       std::int64_t masterid, std::string_view state_string);
  void set_build_state_string(std::int64_t buildid, std::string_view state_string);
  void finish_build(std::int64_t buildid, int results);
  /// Announces new on builds.B.steps.ID and steps.ID.
  AddedStep add_step(std::int64_t buildid, std::string_view name);
  void start_step(std::int64_t stepid);
  void set_step_state_string(std::int64_t stepid, std::string_view state_string);
  void finish_step(std::int64_t stepid, int results, bool hidden = false);

  // --- application-defined resources ----------------------------------------
  /// Creates or replaces resource (type, id). Announces TYPE.ID.new or
  /// TYPE.ID.updated with body {"type","id","state","_rev"}. `type` must not
  /// be one of the built-in types; type and id must be routing-key elements.
  /// Returns the new revision.
  std::int64_t upsert_resource(std::string_view type, std::string_view id, const Json& state);
  /// Deletes it and announces TYPE.ID.deleted (with the revision the deletion
  /// would have had). False when it did not exist (nothing announced).
  bool delete_resource(std::string_view type, std::string_view id);

  // --- reads (bodies as in messages, with "_rev") ---------------------------
  [[nodiscard]] std::optional<Json> get_master(std::int64_t masterid);
  [[nodiscard]] std::optional<Json> get_builder(std::int64_t builderid);
  [[nodiscard]] std::optional<Json> get_buildset(std::int64_t bsid);
  [[nodiscard]] std::optional<Json> get_buildrequest(std::int64_t buildrequestid);
  [[nodiscard]] std::optional<Json> get_build(std::int64_t buildid);
  [[nodiscard]] std::optional<Json> get_step(std::int64_t stepid);
  [[nodiscard]] std::optional<Json> get_resource(std::string_view type, std::string_view id);
  /// The matching build requests by id (oldest first), at most filter.limit.
  [[nodiscard]] std::vector<Json> list_buildrequests(const BuildRequestFilter& filter = {});
  /// How many build requests match, counting no further than filter.limit
  /// when it is set (so "are there fewer than N waiting?" costs at most N
  /// rows, however many wait).
  [[nodiscard]] std::size_t count_buildrequests(const BuildRequestFilter& filter = {});

  /// Generic reads by resource type (masters, builders, workers, buildsets,
  /// buildrequests, builds, steps, or an application type in `resources`),
  /// ordered by id. `where`: column equalities on the type's body fields
  /// (e.g. {{"builderid", 3}}); `ids`: only these (the reconciler's batched
  /// reload). std::invalid_argument for an unknown field.
  [[nodiscard]] std::vector<Json> list(std::string_view type, const Json& where = Json::object(),
                                       std::optional<std::vector<std::string>> ids = std::nullopt);
  /// The deleted entries of an application type (or of these ids among
  /// them), each with the revision of its deletion: what a reader that missed
  /// a deletion message needs to tell a late message about a deleted entry
  /// from a new one. `within`: only those deleted in that time before now
  /// (StoreOptions::clock; the deleting store's clock stamped them), and those
  /// a program older than migration 0005 deleted after it (undated). Built-in
  /// types are never deleted: always empty.
  [[nodiscard]] std::map<std::string, std::int64_t> deletions(
      std::string_view type, std::optional<std::vector<std::string>> ids = std::nullopt,
      std::optional<std::chrono::milliseconds> within = std::nullopt);

  // --- what changed since a watermark (migration 0007) ----------------------
  /// Where the history of changes of `type` stands now, as opaque text: a
  /// read that starts after this call sees every change committed before
  /// it, and changes_since(type, watermark) later finds every change
  /// committed after it (on PostgreSQL, also those of transactions still
  /// running now, whichever order they commit in). std::nullopt when the
  /// database keeps no change positions (a schema older than migration 0007,
  /// opened without migrating).
  [[nodiscard]] std::optional<std::string> change_watermark(std::string_view type);
  /// The rows of `type` changed after `watermark` (change_watermark(type)'s,
  /// or an earlier changes_since(type)'s) and the resources deleted after it: as many
  /// rows as changed, however many the type holds. std::nullopt when the
  /// database can't answer from that watermark: another database's or
  /// another type's, one ahead of the database (a backup restored since),
  /// not a watermark, or a database without change positions; read the
  /// whole type then. A row
  /// changed by something other than the store without setting its position
  /// (or deleted outright) is not found: only a full read finds it.
  [[nodiscard]] std::optional<ChangesSince> changes_since(std::string_view type, std::string_view watermark);

  /// The id of an entry of `type` as its routing key says it ("17").
  [[nodiscard]] static std::string id_of(std::string_view type, const Json& body);
  /// Is `type` one of the built-in Buildbot types?
  [[nodiscard]] static bool is_builtin_type(std::string_view type) noexcept;

 protected:
  Operations(Operations&&) noexcept = default;
  ~Operations() = default;
  /// Runs `work` in a transaction (a new one for Store, itself for Transaction).
  virtual void run(bool write, const std::function<void(detail::Context&)>& work) = 0;
};

class Store;

/// A group of changes that commit together with their messages. Commits only
/// on commit(); the destructor rolls back, dropping the messages.
///
/// On SQLite with the in-process connector, the messages are produced after
/// COMMIT, in order, from the thread that commits; on PostgreSQL they travel in
/// the transaction itself once the PostgreSQL connector is paired.
///
/// Thread safety: a transaction belongs to one thread at a time. It holds one
/// of the store's connections until it ends; on SQLite it also holds the
/// database's write lock from begin() on, so keep it short. Object lifetimes: the store must
/// outlive it.
class Transaction final : public Operations {
 public:
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();

  /// Commits, then produces the transaction's messages. After a failed commit
  /// the transaction is rolled back (or in doubt, for a broken connection: the
  /// error says so) and the messages are dropped.
  void commit();
  /// Rolls back and drops the messages. Idempotent.
  void rollback() noexcept;
  [[nodiscard]] bool active() const noexcept;

  /// Queues an application message that is produced only if the transaction
  /// commits.
  void produce(const RoutingKey& key, Json body);

 private:
  friend class Store;
  explicit Transaction(std::shared_ptr<detail::StoreCore> core);
  void run(bool write, const std::function<void(detail::Context&)>& work) override;
  /// Rolls back to the operation's savepoint and drops the messages (and their
  /// bodies) it queued.
  void undo(std::size_t messages_before, std::size_t bodies_before) noexcept;

  std::shared_ptr<detail::StoreCore> m_core;
  std::unique_ptr<detail::Context> m_context;
};

/// A state store: one database, paired with the connector its changes are
/// announced on.
///
/// URLs: `sqlite:PATH` (WAL mode, busy timeout), `sqlite:file:PATH?mode=ro`
/// (SQLite's URI filenames), `sqlite::memory:` (private to this store; without WAL, so a write
/// transaction makes readers on other connections wait), `postgresql://…` or `postgres://…` (anything libpq accepts;
/// needs livestate::db_postgres linked, as livestate::livestate does).
///
/// Thread safety: every method may be called from several threads at once;
/// each call (or transaction) uses a connection of its own from a pool.
/// Object lifetimes: the connector must outlive the store.
class Store final : public Operations {
 public:
  /// Opens (and by default migrates) the database. DatabaseError when it
  /// can't be opened, SchemaError when its schema can't be used.
  static std::unique_ptr<Store> open(std::string_view url, mq::Connector& connector, StoreOptions options = {});
  ~Store();

  [[nodiscard]] Transaction begin();
  [[nodiscard]] Backend backend() const noexcept;
  /// The URL, any password replaced by ***.
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] mq::Connector& connector() const noexcept;

  /// For the migrator and the backends: the shared core.
  [[nodiscard]] const std::shared_ptr<detail::StoreCore>& core() const noexcept { return m_core; }

 private:
  explicit Store(std::shared_ptr<detail::StoreCore> core);
  void run(bool write, const std::function<void(detail::Context&)>& work) override;
  std::shared_ptr<detail::StoreCore> m_core;
};

namespace detail {
/// The reads and updates of the store `core` belongs to, through a handle of
/// its own that shares the core: usable as long as the handle lives, also
/// after the Store object that made the core is destroyed (a live view's
/// read in progress keeps the connections it needs). For reconcile's
/// sources.
[[nodiscard]] std::shared_ptr<Operations> shared_operations(std::shared_ptr<StoreCore> core);
}  // namespace detail

}  // namespace livestate::db
