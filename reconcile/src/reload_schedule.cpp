#include "reload_schedule.hpp"

#include <algorithm>

#include "livestate/core/log.hpp"

namespace livestate::reconcile::detail {

void ReloadSchedule::due(const std::string& id, std::int64_t announced) {
  auto& known = m_announced[id];
  known = std::max(known, announced);
  m_due.insert(id);
}

std::vector<std::string> ReloadSchedule::take_batch() {
  std::vector<std::string> ids;
  while (!m_due.empty() && ids.size() < m_options.batch) {
    ids.push_back(std::move(m_due.extract(m_due.begin()).value()));
  }
  return ids;
}

std::int64_t ReloadSchedule::required(const std::string& id, std::int64_t held) const {
  std::int64_t needed = m_options.may_lag ? held : 0;
  const auto announced = m_announced.find(id);
  if (announced != m_announced.end()) needed = std::max(needed, announced->second);
  return needed;
}

std::optional<ReloadSchedule::Clock::time_point> ReloadSchedule::lagging(const std::string& id, Clock::time_point now) {
  auto& lag = m_lag.try_emplace(id, Lag{now, m_options.retry_initial, 0}).first->second;
  if (now - lag.since > m_options.deadline) flag_stale(id, now);
  if (lag.retry != 0) return std::nullopt;
  lag.retry = ++m_retries;
  const auto at = now + lag.backoff;
  lag.backoff = std::min(lag.backoff * 2, std::chrono::milliseconds(1000));
  m_retry_at.emplace(at, std::make_pair(id, lag.retry));
  return arm(at);
}

void ReloadSchedule::flag_stale(const std::string& id, Clock::time_point now) {
  if (!m_stale.insert(id).second) return;
  // One line for the first, then at most one every 10 s with the count
  // since: a lagging replica makes hundreds stale at once.
  ++m_unlogged_stale;
  if (m_stale_logged_at && now - *m_stale_logged_at < std::chrono::seconds(10)) return;
  log(LogLevel::warning, "reconcile",
      "view of " + m_options.type + ": entry " + id +
          (m_unlogged_stale > 1 ? " and " + std::to_string(m_unlogged_stale - 1) + " other(s) are" : " is") +
          " stale: reloads keep returning an older revision (" + std::to_string(m_stale.size()) + " stale now)");
  m_stale_logged_at = now;
  m_unlogged_stale = 0;
}

// One timer for every pending retry, at the earliest.
std::optional<ReloadSchedule::Clock::time_point> ReloadSchedule::arm(Clock::time_point at) {
  if (at >= m_armed_at) return std::nullopt;  // an earlier tick re-arms for this one
  m_armed_at = at;
  return at;
}

std::optional<ReloadSchedule::Clock::time_point> ReloadSchedule::retry_timer_fired(Clock::time_point armed,
                                                                                   Clock::time_point now) {
  if (armed != m_armed_at) return std::nullopt;  // superseded by an earlier tick
  m_armed_at = Clock::time_point::max();
  const auto horizon = now + std::chrono::milliseconds(10);
  while (!m_retry_at.empty() && m_retry_at.begin()->first <= horizon) {
    auto [id, retry] = std::move(m_retry_at.begin()->second);
    m_retry_at.erase(m_retry_at.begin());
    const auto found = m_lag.find(id);
    if (found == m_lag.end() || found->second.retry != retry) continue;  // caught up meanwhile
    found->second.retry = 0;
    m_due.insert(std::move(id));
  }
  if (m_retry_at.empty()) return std::nullopt;
  return arm(m_retry_at.begin()->first);
}

void ReloadSchedule::caught_up(const std::string& id) {
  m_lag.erase(id);
  m_announced.erase(id);
  m_stale.erase(id);
}

void ReloadSchedule::confirmed(const std::string& id, std::int64_t revision) {
  const auto announced = m_announced.find(id);
  if (announced == m_announced.end() ? m_lag.count(id) != 0 : announced->second <= revision) caught_up(id);
}

void ReloadSchedule::waiting(std::set<std::string>& ids) const {
  for (const auto& [id, announced] : m_announced) ids.insert(id);
  for (const auto& [id, lag] : m_lag) ids.insert(id);
  ids.insert(m_stale.begin(), m_stale.end());
}

}  // namespace livestate::reconcile::detail
