#pragma once

// A live view: a consumer-side copy of one resource type's rows that follows
// the messages announcing their changes, detects when those messages can't be
// trusted (stale, duplicated, out of lifecycle order, about an entry it never
// saw, after a gap or a reconnect) and reloads from the database, so that it
// converges to the database.
//
//   boost::asio::io_context io;
//   auto mq = livestate::mq::make_simple_mq();
//   auto store = livestate::db::Store::open("sqlite:state.db", *mq);
//   livestate::reconcile::LiveView view(*mq, *store, io.get_executor(),
//                                       {.type = "buildrequests", .where = {{"builderid", 3}}});
//   view.on_change([](const livestate::reconcile::Change& change) { … });
//   view.start();
//   io.run();

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "livestate/core/json.hpp"
#include "livestate/reconcile/live_view_types.hpp"

namespace livestate::mq {
class Connector;
}
namespace livestate::db {
class Store;
}

namespace livestate::reconcile {

class Source;

/// A live view of one resource type.
///
/// Thread safety: the view's work (messages, reloads, change callbacks) runs
/// on a strand of the executor, one step at a time; reloads query the store
/// there, blocking that thread for the query. get(), entries(), stats(),
/// verify(), resync() and stop() may be called from any thread.
///
/// Object lifetimes: the executor's execution context must outlive the view.
/// stop() and the destructor return at once, never waiting for a query: a
/// read in progress then (a reload or resync, on an executor thread) runs to
/// its end and its result is discarded; the view's own state lives as long
/// as that read needs it, and its timers are cancelled. So:
/// - the connector may be destroyed as soon as stop() or the destructor has
///   returned;
/// - a db::Store (the view's, or reload_from) must outlive the view, and may
///   be destroyed as soon as the view is: a read still running then keeps
///   the store's connections it uses (it reads through a handle that shares
///   them) and ends on its own;
/// - a Source of your own (the constructor's, or reload_source) must outlive
///   that read too: destroy it only once the executor no longer runs the
///   view's work (its io_context's run() has returned, or the threads running
///   it were joined), not merely once the view is gone.
/// Once stop() or the destructor has returned, no change callback runs, except
/// the one that called it: a view may be stopped or destroyed from one of its
/// own change callbacks (that callback finishes; no other is called). Called
/// from another thread, they wait for a callback in progress to return.
class LiveView {
 public:
  using ChangeCallback = std::function<void(const Change&)>;

  LiveView(mq::Connector& connector, db::Store& store, boost::asio::any_io_executor executor, ViewOptions options);
  /// A view over any source of rows (source.hpp), borrowed: it must outlive
  /// the view's reads (see Object lifetimes).
  LiveView(mq::Connector& connector, Source& source, boost::asio::any_io_executor executor, ViewOptions options);
  LiveView(const LiveView&) = delete;
  LiveView& operator=(const LiveView&) = delete;
  ~LiveView();

  /// Sets the change callback (before start(); run on the view's strand).
  /// Throws std::logic_error after start().
  void on_change(ChangeCallback callback);

  /// Subscribes, then loads the snapshot, then applies what arrived meanwhile
  /// that is newer than the snapshot: nothing produced around start-up is lost
  /// or applied twice. The subscription happens in this call; the load runs
  /// on the executor. Throws std::logic_error when called twice.
  void start();

  /// Stops consuming and abandons pending work; no change callback runs once
  /// it has returned (see Object lifetimes). Returns at once, also while a
  /// read is in progress. Idempotent; the view can't be started again.
  void stop() noexcept;

  /// Has the first snapshot been loaded?
  [[nodiscard]] bool ready() const;
  [[nodiscard]] std::optional<Json> get(const std::string& id) const;
  /// Every entry, by id.
  [[nodiscard]] std::map<std::string, Json> entries() const;
  /// How many entries the view holds (without copying them).
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] ViewStats stats() const;
  /// Reads the type from the database (the view's store or source, not
  /// reload_from) and compares it with the view. Meaningful once the view is
  /// quiet (no message or reload in flight). An empty result also resets
  /// since_verified.
  [[nodiscard]] std::vector<Difference> verify();
  /// Asks for a resync, as a transport reset would.
  void resync();

 private:
  class Impl;
  std::shared_ptr<Impl> m_impl;
};

}  // namespace livestate::reconcile
