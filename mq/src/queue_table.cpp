#include "queue_table.hpp"

#include <algorithm>

#include "livestate/core/detail/json_reader.hpp"
#include "livestate/core/error.hpp"
#include "livestate/core/log.hpp"
#include "pq_connection.hpp"

namespace livestate::mq::detail {

std::string filter_array(const Filter& filter) {
  std::string literal = "{";
  for (const auto& element : filter.elements()) {
    if (literal.size() > 1) literal += ',';
    literal += element ? text_array({*element}).substr(1, text_array({*element}).size() - 2) : "NULL";
  }
  return literal + "}";
}

std::uint64_t register_queue(PGconn* connection, const std::string& name, const Filter& filter,
                             std::chrono::milliseconds timeout) {
  const std::string literal = filter_array(filter);
  const auto same = run_blocking(
      connection,
      "INSERT INTO livestate_mq_queues (name, filter, any_suffix) VALUES ($1, $2::text[], $3) "
      "ON CONFLICT (name) DO UPDATE SET last_active = now() "
      "RETURNING (filter IS NOT DISTINCT FROM $2::text[] AND any_suffix = $3)::text",
      {name, literal, filter.any_suffix() ? "true" : "false"}, timeout);
  if (same != "true") {
    throw PersistentNameInUse("durable consumer '" + name + "' was created with another filter than " + filter.str() +
                              ": use that filter, or another name");
  }
  const auto expired = std::stoull(
      run_blocking(connection, "SELECT expired FROM livestate_mq_queues WHERE name = $1", {name}, timeout)
          .value_or("0"));
  if (expired > 0) {
    run_blocking(connection, "UPDATE livestate_mq_queues SET expired = expired - $2 WHERE name = $1",
                 {name, std::to_string(expired)}, timeout);
  }
  return expired;
}

std::vector<std::optional<std::string>> page_params(const std::string& queue, std::int64_t after_id) {
  return {queue, std::to_string(after_id), std::to_string(queue_page_rows)};
}

QueuePage page_of(const PGresult* result, const std::string& queue) {
  QueuePage page;
  const int count = PQntuples(result);
  page.size = static_cast<std::size_t>(count);
  page.rows.reserve(page.size);
  for (int i = 0; i < count; ++i) {
    try {
      page.last_id = std::max<std::int64_t>(page.last_id, std::stoll(PQgetvalue(result, i, 0)));
      page.rows.push_back(QueueRow{
          std::stoll(PQgetvalue(result, i, 0)), PQgetvalue(result, i, 1), std::stoull(PQgetvalue(result, i, 2)),
          RoutingKey(livestate::detail::parse_json(PQgetvalue(result, i, 3)).get<std::vector<std::string>>()),
          livestate::detail::parse_json(PQgetvalue(result, i, 4))});
    } catch (const std::exception& error) {
      log(LogLevel::warning, log_component,
          "durable consumer '" + queue + "': dropped an unreadable queued message: " + error.what());
    }
  }
  return page;
}

const char* const Acknowledgements::sql =
    "DELETE FROM livestate_mq_queued WHERE queue = $1 AND (id = ANY($2::bigint[]) OR (origin, sequence) IN "
    "(SELECT * FROM unnest($3::text[], $4::bigint[])))";

void Acknowledgements::merge(Acknowledgements&& other) {
  const auto append = [](std::vector<std::string>& to, std::vector<std::string>& from) {
    to.insert(to.end(), std::make_move_iterator(from.begin()), std::make_move_iterator(from.end()));
  };
  append(m_ids, other.m_ids);
  append(m_origins, other.m_origins);
  append(m_sequences, other.m_sequences);
}

std::vector<std::optional<std::string>> Acknowledgements::params(const std::string& queue) const {
  return {queue, text_array(m_ids), text_array(m_origins), text_array(m_sequences)};
}

}  // namespace livestate::mq::detail
