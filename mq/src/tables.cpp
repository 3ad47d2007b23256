#include "tables.hpp"

#include <string>

#include "pq_connection.hpp"

namespace livestate::mq::detail {

namespace {

// The transaction-level lock keeps two processes from racing to create them.
constexpr const char* tables_sql[] = {
    "SELECT pg_advisory_xact_lock(7308416553390571923)",
    "CREATE TABLE IF NOT EXISTS livestate_mq_bodies ("
    " id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS livestate_mq_queues ("
    " name TEXT PRIMARY KEY, filter TEXT[] NOT NULL, any_suffix BOOLEAN NOT NULL,"
    " created_at TIMESTAMPTZ NOT NULL DEFAULT now(), last_active TIMESTAMPTZ NOT NULL DEFAULT now(),"
    " expired BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS livestate_mq_queued ("
    " queue TEXT NOT NULL REFERENCES livestate_mq_queues (name) ON DELETE CASCADE,"
    " id BIGSERIAL, origin TEXT NOT NULL, sequence BIGINT NOT NULL, key TEXT[] NOT NULL, body TEXT NOT NULL,"
    " created_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (queue, id))",
    "CREATE INDEX IF NOT EXISTS livestate_mq_queued_message ON livestate_mq_queued (queue, origin, sequence)",
};

}  // namespace

void Tables::ensure(PGconn* connection, std::chrono::milliseconds timeout) {
  if (m_ready) return;
  run_blocking(connection, "BEGIN", {}, timeout);
  try {
    for (const char* sql : tables_sql) run_blocking(connection, sql, {}, timeout);
    run_blocking(connection, "COMMIT", {}, timeout);
  } catch (const StatementError& error) {
    if (!error.broken()) {
      try {
        run_blocking(connection, "ROLLBACK", {}, timeout);
      } catch (const StatementError&) {
      }
    }
    throw;
  }
  m_ready = true;
}

const char* const prune_sql =
    "WITH bodies AS (DELETE FROM livestate_mq_bodies WHERE created_at < now() - make_interval(secs => $1)),"
    " gone AS (DELETE FROM livestate_mq_queued WHERE created_at < now() - make_interval(secs => $2) RETURNING queue)"
    " UPDATE livestate_mq_queues q SET expired = q.expired + c.n"
    " FROM (SELECT queue, count(*) AS n FROM gone GROUP BY queue) c WHERE q.name = c.queue";

}  // namespace livestate::mq::detail
