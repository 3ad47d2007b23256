#include "livestate/db/errors.hpp"

namespace livestate::db {

DatabaseError::DatabaseError(const std::string& message, std::string sqlstate)
    : Error(message), m_sqlstate(std::move(sqlstate)) {}
DatabaseError::~DatabaseError() = default;
DatabaseBusy::~DatabaseBusy() = default;
ConnectionFailed::~ConnectionFailed() = default;
CommitInDoubt::~CommitInDoubt() = default;
ReadOnlyDatabase::~ReadOnlyDatabase() = default;
NotFound::~NotFound() = default;
SchemaError::~SchemaError() = default;
SchemaOutOfDate::~SchemaOutOfDate() = default;
SchemaChecksumMismatch::~SchemaChecksumMismatch() = default;
SchemaTooNew::~SchemaTooNew() = default;
MigrationFailed::~MigrationFailed() = default;

AlreadyClaimed::AlreadyClaimed(const std::string& message, std::vector<std::int64_t> buildrequestids)
    : Error(message), m_buildrequestids(std::move(buildrequestids)) {}
AlreadyClaimed::~AlreadyClaimed() = default;

NotClaimed::NotClaimed(const std::string& message, std::vector<std::int64_t> buildrequestids)
    : Error(message), m_buildrequestids(std::move(buildrequestids)) {}
NotClaimed::~NotClaimed() = default;

}  // namespace livestate::db
