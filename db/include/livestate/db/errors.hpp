#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "livestate/core/error.hpp"

namespace livestate::db {

/// A failure of the database itself: unreachable, refused, broken connection,
/// a statement it rejected. The message names the database (its URL, with any
/// password replaced by ***) and says what went wrong. Whatever transaction was
/// open is rolled back: nothing half-written stays (but see CommitInDoubt).
class DatabaseError : public Error {
 public:
  explicit DatabaseError(const std::string& message, std::string sqlstate = {});
  ~DatabaseError() override;
  /// PostgreSQL's five-character SQLSTATE for the failure ("40001", "08006"…),
  /// or empty when no server answered with one (SQLite, a connection that
  /// could not be made, a failure on livestate's side).
  [[nodiscard]] const std::string& sqlstate() const noexcept { return m_sqlstate; }

 private:
  std::string m_sqlstate;
};

/// SQLite: the database stayed locked by another connection for longer than
/// the busy timeout (StoreOptions::busy_timeout).
class DatabaseBusy : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
  ~DatabaseBusy() override;
};

/// The connection could not be made, or broke. Store-level methods have
/// already retried where that was safe (never an in-doubt commit).
class ConnectionFailed : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
  ~ConnectionFailed() override;
};

/// COMMIT was sent and the connection broke before the answer came: the
/// transaction may or may not have committed, and its messages may or may not
/// have been sent with it. Nothing was retried; check the database before
/// doing the work again (a live view converges either way).
class CommitInDoubt : public ConnectionFailed {
 public:
  using ConnectionFailed::ConnectionFailed;
  ~CommitInDoubt() override;
};

/// The database refuses writes: a read-only file or directory, a hot standby.
class ReadOnlyDatabase : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
  ~ReadOnlyDatabase() override;
};

/// claim_buildrequests: another master holds (or has completed) at least one of
/// the requests. Nothing was claimed.
class AlreadyClaimed : public Error {
 public:
  AlreadyClaimed(const std::string& message, std::vector<std::int64_t> buildrequestids);
  ~AlreadyClaimed() override;
  /// The requests that could not be claimed.
  [[nodiscard]] const std::vector<std::int64_t>& buildrequestids() const noexcept { return m_buildrequestids; }

 private:
  std::vector<std::int64_t> m_buildrequestids;
};

/// complete_buildrequests: the caller's master does not hold the claim of at
/// least one of the requests. Nothing was completed.
class NotClaimed : public Error {
 public:
  NotClaimed(const std::string& message, std::vector<std::int64_t> buildrequestids);
  ~NotClaimed() override;
  [[nodiscard]] const std::vector<std::int64_t>& buildrequestids() const noexcept { return m_buildrequestids; }

 private:
  std::vector<std::int64_t> m_buildrequestids;
};

/// An update named a row that does not exist (a build request, build, step…).
class NotFound : public Error {
 public:
  using Error::Error;
  ~NotFound() override;
};

/// The database's schema and this program disagree; the message says what to
/// do. Subclasses tell the cases apart.
class SchemaError : public Error {
 public:
  using Error::Error;
  ~SchemaError() override;
};

/// The database lacks migrations this program needs, and the store was opened
/// with StoreOptions::migrate off: run `livestate migrate`.
class SchemaOutOfDate : public SchemaError {
 public:
  using SchemaError::SchemaError;
  ~SchemaOutOfDate() override;
};

/// A migration applied to the database differs from the one this program
/// ships (its checksum): the schema was edited after it was applied.
class SchemaChecksumMismatch : public SchemaError {
 public:
  using SchemaError::SchemaError;
  ~SchemaChecksumMismatch() override;
};

/// The database has migrations newer than this program knows: a newer version
/// of livestate migrated it.
class SchemaTooNew : public SchemaError {
 public:
  using SchemaError::SchemaError;
  ~SchemaTooNew() override;
};

/// A migration failed; it was rolled back, and the ones before it stay.
class MigrationFailed : public SchemaError {
 public:
  using SchemaError::SchemaError;
  ~MigrationFailed() override;
};

}  // namespace livestate::db
