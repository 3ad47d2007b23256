#pragma once

// The harness of the view rules' tests (view_rules.cpp, view_rules_time.cpp):
// one view's rules, a clock the test moves, and what the last event asked for.

#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "livestate/core/routing_key.hpp"
#include "livestate/mq/control.hpp"
#include "livestate/reconcile/live_view_types.hpp"
#include "view_inbox.hpp"
#include "view_rules.hpp"

namespace livestate::test::rules {

namespace detail = livestate::reconcile::detail;
namespace reconcile = livestate::reconcile;
using namespace std::chrono_literals;
using detail::Clock;
using livestate::Json;
using livestate::RoutingKey;
using reconcile::Anomaly;
using reconcile::ChangeKind;

inline Json widget(const std::string& id, std::int64_t revision, int size = 1) {
  return {{"type", "widgets"}, {"id", id}, {"state", {{"size", size}}}, {"_rev", revision}};
}

inline Json request(std::int64_t id, std::int64_t revision, bool claimed, bool complete, std::int64_t builder = 1) {
  return {
      {"buildrequestid", id}, {"builderid", builder}, {"claimed", claimed}, {"complete", complete}, {"_rev", revision}};
}

inline reconcile::ViewOptions of_type(std::string type, Json where = Json::object()) {
  reconcile::ViewOptions options;
  options.type = std::move(type);
  options.where = std::move(where);
  return options;
}

// The rules of one view, the time, and what the last event asked for.
struct Rules {
  explicit Rules(const reconcile::ViewOptions& options, bool reload_may_lag = false)
      : rules(options, reload_may_lag, now) {}

  Clock::time_point now = Clock::time_point(24h);  // any moment: the rules have no clock
  detail::ViewRules rules;
  detail::Actions actions;

  void take() { rules.take_actions(actions); }
  /// Starts: the first load is due.
  void start() {
    rules.start(now);
    take();
    REQUIRE(actions.read);
  }
  /// Starts, and loads `rows` (by id) as the first snapshot.
  void load(const std::map<std::string, Json>& rows, std::map<std::string, std::int64_t> deletions = {},
            std::optional<std::string> watermark = std::nullopt) {
    start();
    snapshot(rows, std::move(deletions), std::move(watermark));
  }
  /// Runs the read that is due, a snapshot of everything, finding `rows`
  /// (and the source's `watermark`, when it keeps a history); returns it.
  detail::Read snapshot(const std::map<std::string, Json>& rows, std::map<std::string, std::int64_t> deletions = {},
                        std::optional<std::string> watermark = std::nullopt) {
    const auto read = rules.next_read(now);
    REQUIRE(read.has_value());
    REQUIRE(read->kind == detail::Read::Kind::snapshot);
    auto found = result(rows, std::move(deletions));
    found.watermark = std::move(watermark);
    rules.read_done(*read, std::move(found), now);
    take();
    return *read;
  }
  /// Runs the read that is due, a reload, finding `rows`; returns it.
  detail::Read reload(std::map<std::string, Json> rows = {}, std::map<std::string, std::int64_t> deletions = {}) {
    const auto read = rules.next_read(now);
    REQUIRE(read.has_value());
    REQUIRE(read->kind == detail::Read::Kind::reload);
    rules.read_done(*read, result(std::move(rows), std::move(deletions)), now);
    take();
    return *read;
  }
  /// Runs the read that is due, a resync by what changed since the view's
  /// watermark, finding `rows` and `deletions` changed since, and the
  /// source's next watermark `next`; returns it.
  detail::Read changes(std::map<std::string, Json> rows, std::map<std::string, std::int64_t> deletions,
                       std::string next) {
    const auto read = rules.next_read(now);
    REQUIRE(read.has_value());
    REQUIRE(read->kind == detail::Read::Kind::snapshot);
    REQUIRE(read->since.has_value());
    auto found = result(std::move(rows), std::move(deletions));
    found.full = false;
    found.watermark = std::move(next);
    rules.read_done(*read, std::move(found), now);
    take();
    return *read;
  }
  static detail::ReadResult result(std::map<std::string, Json> rows, std::map<std::string, std::int64_t> deletions) {
    detail::ReadResult found;
    found.rows = std::move(rows);
    found.deletions = std::move(deletions);
    return found;
  }
  void message(const std::string& key, Json body) {
    rules.receive(detail::Incoming{RoutingKey::parse(key), std::move(body)}, now);
    take();
  }
  void control(livestate::mq::ControlKind kind) {
    rules.receive(livestate::mq::ControlEvent{kind, "test", std::nullopt, 0}, now);
    take();
  }
  void later(Clock::duration by) { now += by; }
  [[nodiscard]] reconcile::ViewStats stats() const { return rules.stats(now); }
  [[nodiscard]] std::uint64_t anomalies() const {
    std::uint64_t total = 0;
    for (const auto n : stats().anomalies) total += n;
    return total;
  }
};

}  // namespace livestate::test::rules
