#pragma once

// What `livestate chaos` and `livestate replay` share: their fault flags,
// live views of several types each through a FaultyConnector of its own, the
// wait for convergence once the faults stop, and the summary with its verdict.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <thread>

#include "livestate/core/json.hpp"
#include "livestate/mq/faulty.hpp"
#include "livestate/reconcile/live_view.hpp"

namespace livestate::cli {

struct FaultFlags {
  std::uint64_t seed = 1;
  double reorder = 0.1;
  double drop = 0.01;
  double duplicate = 0.02;
  int delay_ms = 20;
  int partition_every_ms = 1000;
};

/// The fault flags' lines of a command's --help.
extern const char* const fault_flags_help;

/// Reads a fault flag at args[index] (advancing past its value); false when
/// args[index] is not one. UsageError for a bad value.
bool take_fault_flag(const std::vector<std::string>& args, std::size_t& index, FaultFlags& flags,
                     std::string_view command);

/// chaos and replay write to the database they are given: an empty one
/// (migrated first) or one that livestate migrated, never another
/// application's (UsageError naming its tables).
void migrate_if_empty_or_ours(const std::string& url, std::string_view command);

/// Whole numbers and probabilities, for the commands' other flags: a whole
/// number from `minimum` to `maximum`, or UsageError naming the flag.
long long whole_number(const std::string& flag, const std::string& value, long long minimum,
                       long long maximum = std::numeric_limits<long long>::max());

/// Live views, each through a FaultyConnector of its own over one bus.
class ViewSet {
 public:
  ViewSet(mq::Connector& bus, boost::asio::any_io_executor executor, FaultFlags flags);
  ViewSet(const ViewSet&) = delete;
  ViewSet& operator=(const ViewSet&) = delete;
  ~ViewSet();

  /// A view of `options.type`, reading from `source`, started now.
  void add(reconcile::Source& source, reconcile::ViewOptions options);

  /// Waits until every view has loaded its first snapshot; false after `limit`.
  bool wait_ready(std::chrono::seconds limit) const;

  struct Totals {
    mq::FaultStats faults;
    reconcile::ViewStats views;
    std::uint64_t anomalies = 0;
    std::uint64_t entries = 0;  ///< the views' entries now
  };
  [[nodiscard]] Totals totals() const;
  /// One progress line: messages seen, anomalies, reloads, resyncs, entries,
  /// ids remembered, messages queued for the views, messages held by the faults.
  [[nodiscard]] std::string progress() const;

  struct Outcome {
    bool converged = false;
    /// From the end of the faults to the moment every view was quiet and
    /// equal to the database (as verify() then confirmed); when not
    /// converged, to the end of the wait.
    std::chrono::steady_clock::duration convergence{};
    /// The time verify() took, every pass of it (and how many passes): each
    /// reads every type in full.
    std::chrono::steady_clock::duration verifying{};
    std::uint64_t verify_passes = 0;
    /// Converged quiet (the time to converge ends at the quiet moment), or
    /// by a comparison of views that never fell quiet (it ends with it).
    bool quiet = false;
    /// From the end of the faults to the end of the wait (the confirmation
    /// included).
    std::chrono::steady_clock::duration settling{};
    std::vector<std::pair<std::string, reconcile::Difference>> differences;
  };
  /// Stops the faults, delivers what they hold, and waits up to `limit` for
  /// every view to equal its source: until every view is quiet (nothing
  /// queued, no read due, running or retried), then compares each with the
  /// database; the views must stay quiet and unchanged meanwhile, else the
  /// comparison counts for nothing and the wait goes on. Views still busy
  /// after a second are compared whenever nothing waits for them.
  Outcome settle(std::chrono::seconds limit);

  /// The summary: `title`, the command's own `work` rows, the faults, the
  /// anomalies, the repairs, the views and the verdict; as text, or as one
  /// JSON object holding `extra`, "converged" and "views" (type -> entries).
  void report(std::ostream& out, bool json, const std::string& title,
              const std::vector<std::pair<std::string, Json>>& work, const Outcome& outcome, Json extra) const;

 private:
  mq::Connector& m_bus;
  boost::asio::any_io_executor m_executor;
  FaultFlags m_flags;
  std::vector<std::string> m_types;
  std::vector<std::unique_ptr<mq::FaultyConnector>> m_faulty;
  std::vector<std::unique_ptr<reconcile::LiveView>> m_views;

  /// What the views have done so far (messages, reads, repairs…), when every
  /// view is loaded and quiet and the faults hold nothing; none otherwise.
  [[nodiscard]] std::optional<std::vector<std::uint64_t>> quiet() const;
  /// Compares every view with the database, into `outcome`.
  void verify(Outcome& outcome);
};

/// A new temporary directory, removed with everything in it at the end.
class TemporaryDirectory {
 public:
  explicit TemporaryDirectory(const std::string& prefix);
  ~TemporaryDirectory();
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return m_path; }

 private:
  std::filesystem::path m_path;
};

/// An io_context run by a thread of its own until destroyed.
class ExecutorThread {
 public:
  ExecutorThread();
  ~ExecutorThread();
  ExecutorThread(const ExecutorThread&) = delete;
  ExecutorThread& operator=(const ExecutorThread&) = delete;
  [[nodiscard]] boost::asio::any_io_executor get() { return m_io.get_executor(); }

 private:
  boost::asio::io_context m_io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> m_work;
  std::thread m_thread;
};

/// "1.23 s"
std::string seconds_text(std::chrono::steady_clock::duration elapsed);

}  // namespace livestate::cli
