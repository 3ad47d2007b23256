#pragma once

// The logical transport's replication slots: their names, the table that
// remembers which durable consumer (name, channel, filter) each slot is, the
// checks a durable consumer's start makes on a plain connection, and the
// slots this process has just given back.
//
// A slot's name may hold only [a-z0-9_] and 63 bytes, and slots belong to
// the whole server: a durable consumer's is "livestate_", up to 20
// characters of its name made safe, "_" and 16 hex digits of a hash of
// (database, channel, name), so that every (database, channel, name) has a
// slot of its own and an operator still sees whose it is.

#include <libpq-fe.h>

#include <chrono>
#include <string>
#include <string_view>

#include "livestate/core/filter.hpp"

namespace livestate::mq::detail {

/// The prefix of every slot of livestate's.
inline constexpr std::string_view slot_prefix = "livestate_";

/// The temporary slot of a connector's live consumers (a connection's number
/// is added to it).
[[nodiscard]] std::string live_slot_name(std::string_view origin);

/// The permanent slot of the durable consumer `name` on `channel`.
[[nodiscard]] std::string durable_slot_name(std::string_view database, std::string_view channel, std::string_view name);

/// A stream of this process closed its connection on `slot`, served by the
/// server process `pid`: until the server sees it go, the slot looks taken.
void note_released_slot(const std::string& slot, int pid);
/// Is `pid` on `slot` a session this process closed?
[[nodiscard]] bool released_by_this_process(const std::string& slot, int pid);

/// What a durable consumer's start learns on a plain connection: the server
/// can stream (else UnsupportedServer, naming the setting or the privilege),
/// the slot's name, and whether it was made before (registered with the
/// same filter; else PersistentNameInUse).
struct SlotRegistration {
  std::string slot;
  bool known = false;
};
[[nodiscard]] SlotRegistration register_durable_slot(PGconn* connection, const std::string& server,
                                                     std::string_view channel, const std::string& name,
                                                     const Filter& filter, std::chrono::milliseconds timeout);

}  // namespace livestate::mq::detail
