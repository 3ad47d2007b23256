// The logical transport's replication connection, as logic alone: events in,
// actions out, no server, no executor, a clock and a random source of the
// test's own.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "logical_machine.hpp"
#include "machine_actions.hpp"

namespace {

using namespace std::chrono_literals;
using livestate::mq::ControlEvent;
using livestate::mq::ControlKind;
using livestate::test::all_of;
using livestate::test::has;
namespace detail = livestate::mq::detail;
namespace action = detail::stream_action;
using detail::Clock;
using detail::CommandResult;
using detail::LogicalMachine;
using detail::StreamActions;
using detail::StreamTimer;
using Polled = LogicalMachine::Polled;
using Rows = std::vector<std::vector<std::optional<std::string>>>;

std::vector<std::string> delivered(const StreamActions& actions) {
  return livestate::test::delivered<action::Deliver>(actions);
}
std::vector<ControlEvent> events(const StreamActions& actions) {
  return livestate::test::events<action::Deliver>(actions);
}

std::string big_endian(std::uint64_t value, std::size_t size) {
  std::string out;
  for (std::size_t i = size; i-- > 0;) out += static_cast<char>(value >> (8 * i) & 0xff);
  return out;
}

// CopyData messages as the server sends them.
std::string wal(const std::string& record) {
  return "w" + big_endian(0, 8) + big_endian(0, 8) + big_endian(0, 8) + record;
}
std::string begin(std::uint64_t final_lsn) {
  return wal("B" + big_endian(final_lsn, 8) + big_endian(0, 8) + big_endian(9, 4));
}
std::string commit(std::uint64_t lsn, std::uint64_t end) {
  return wal(std::string("C") + '\0' + big_endian(lsn, 8) + big_endian(end, 8) + big_endian(0, 8));
}
std::string message(const std::string& prefix, const std::string& payload, std::uint64_t lsn = 1) {
  return wal(std::string("M") + '\x01' + big_endian(lsn, 8) + prefix + '\0' + big_endian(payload.size(), 4) + payload);
}
std::string keepalive(std::uint64_t wal_end, bool reply) {
  return "k" + big_endian(wal_end, 8) + big_endian(0, 8) + (reply ? "\x01" : std::string(1, '\0'));
}
std::string payload(const std::string& key, int sequence = 0) {
  return R"({"v":1,"o":"p1","m":[{"s":)" + std::to_string(sequence) + R"(,"k":[")" + key + R"("],"b":{}}]})";
}

// The position a status update confirms.
std::uint64_t confirmed(const action::SendCopyData& update) {
  std::uint64_t value = 0;
  for (std::size_t i = 9; i < 17; ++i) value = value << 8 | static_cast<unsigned char>(update.bytes[i]);
  return value;
}

CommandResult ok(Rows rows = {}) { return {CommandResult::Status::ok, {}, {}, std::move(rows)}; }
CommandResult failure(std::string sqlstate, std::string error = "refused") {
  return {CommandResult::Status::failed, std::move(sqlstate), std::move(error), {}};
}
CommandResult copy_both() { return {CommandResult::Status::copy_both, {}, {}, {}}; }
const Rows ready_server = {{"150004", "logical", "t"}};

struct Harness {
  explicit Harness(detail::StreamSettings settings = defaults(true))
      : machine(std::move(settings), [this] { return random_value; }) {}

  static detail::StreamSettings defaults(bool temporary = true) {
    detail::StreamSettings settings;
    settings.name = "postgresql://u:***@db/test";
    settings.channel = "livestate";
    settings.slot = temporary ? "livestate_live_0123" : "livestate_audit_0123";
    settings.temporary = temporary;
    settings.reconnect_initial = 100ms;
    settings.reconnect_max = 1000ms;
    return settings;
  }

  StreamActions note(StreamActions actions) {
    timers.note(actions);
    return actions;
  }
  StreamActions fire(StreamTimer timer) {
    const auto token = timers.expire(timer);
    return note(machine.timer_fired(timer, token, now));
  }

  // Started and connected: the check command sent.
  std::string connect() {
    note(machine.start(now));
    note(machine.connect_polled(Polled::writing, {}, now));
    note(machine.socket_writable(now));
    const auto sent = all_of<action::SendCommand>(note(machine.connect_polled(Polled::ok, {}, now)));
    REQUIRE(sent.size() == 1);
    return sent[0].sql;
  }
  // The command in flight answered; the next one sent, if any.
  StreamActions answer(CommandResult result) {
    auto actions = note(machine.socket_readable(now));
    REQUIRE(has<action::ReadInput>(actions));
    actions = note(machine.command_result(std::move(result), now));
    for (auto& each : note(machine.input_read(true, now))) actions.push_back(std::move(each));
    return actions;
  }
  static std::string next_command(const StreamActions& actions) {
    const auto sent = all_of<action::SendCommand>(actions);
    REQUIRE(sent.size() == 1);
    return sent[0].sql;
  }
  // Connected, checked (the server answering `server`), slotted and streaming.
  StreamActions stream(const Rows& server = ready_server) {
    connect();
    auto actions = answer(ok(server));
    if (!machine.slot().empty() && has<action::SendCommand>(actions) &&
        next_command(actions).starts_with("SELECT wal_status")) {
      actions = answer(ok({{"reserved", std::nullopt}}));
    }
    if (next_command(actions).starts_with("CREATE_REPLICATION_SLOT")) actions = answer(ok());
    REQUIRE(next_command(actions).starts_with("START_REPLICATION"));
    actions = answer(copy_both());
    REQUIRE(machine.streaming());
    return actions;
  }
  // CopyData messages arriving in one read.
  StreamActions receive(const std::vector<std::string>& messages) {
    auto actions = note(machine.socket_readable(now));
    REQUIRE(has<action::ReadInput>(actions));
    actions.clear();
    for (const auto& each : messages) {
      for (auto& step : note(machine.copy_data(each, now))) actions.push_back(std::move(step));
    }
    for (auto& step : note(machine.input_read(true, now))) actions.push_back(std::move(step));
    return actions;
  }

  std::uint64_t random_value = 0;
  livestate::test::TimerBook<action::ArmTimer, action::CancelTimer, StreamTimer, detail::stream_timer_count> timers;
  Clock::time_point& now = timers.now;
  LogicalMachine machine;
};

}  // namespace

TEST_CASE("a live stream checks the server, makes a temporary slot and starts pgoutput with its messages") {
  Harness harness;
  const auto check = harness.connect();
  CHECK(check.find("server_version_num") != std::string::npos);
  CHECK(check.find("wal_level") != std::string::npos);
  auto actions = harness.answer(ok(ready_server));
  CHECK(Harness::next_command(actions) ==
        "CREATE_REPLICATION_SLOT \"livestate_live_0123_1\" TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT");
  CHECK(harness.timers.delay(StreamTimer::command_deadline) == 60s);  // it waits for older transactions
  actions = harness.answer(ok());
  CHECK(Harness::next_command(actions) ==
        "START_REPLICATION SLOT \"livestate_live_0123_1\" LOGICAL 0/0 (proto_version '1', publication_names "
        "'\"livestate_messages\"', messages 'true')");
  actions = harness.answer(copy_both());
  CHECK(harness.machine.streaming());
  const auto statuses = all_of<action::PublishStatus>(actions);
  REQUIRE_FALSE(statuses.empty());
  CHECK(statuses.back().streaming);
  CHECK(events(actions).empty());  // the first time is no reconnection
  CHECK(harness.timers.armed(StreamTimer::probe));
}

TEST_CASE("a missing publication is made first; one made meanwhile by another process is as good") {
  Harness harness;
  harness.connect();
  auto actions = harness.answer(ok({{"150004", "logical", "f"}}));
  CHECK(Harness::next_command(actions) == "CREATE PUBLICATION \"livestate_messages\"");
  actions = harness.answer(failure("42710", "publication already exists"));
  CHECK(Harness::next_command(actions).starts_with("CREATE_REPLICATION_SLOT"));
}

TEST_CASE("a server that can't stream is refused in words that name the setting, and tried again slowly") {
  struct Case {
    Rows check;
    std::string named;
  };
  for (const auto& [rows, named] : {Case{{{"130011", "logical", "t"}}, "PostgreSQL 14"},
                                    Case{{{"150004", "replica", "t"}}, "wal_level = logical"}}) {
    Harness harness;
    harness.connect();
    const auto actions = harness.answer(ok(rows));
    const auto refused = all_of<action::Refused>(actions);
    REQUIRE(refused.size() == 1);
    CHECK(refused[0].why == detail::Refusal::unsupported);
    CHECK(refused[0].text.find(named) != std::string::npos);
    CHECK(has<action::Close>(actions));
    CHECK(harness.timers.delay(StreamTimer::retry) >= 500ms);  // half of reconnect_max at least
  }
  Harness no_slots;
  no_slots.connect();
  no_slots.answer(ok(ready_server));
  const auto refused = all_of<action::Refused>(no_slots.answer(failure("53400", "all replication slots are in use")));
  REQUIRE(refused.size() == 1);
  CHECK(refused[0].text.find("max_replication_slots") != std::string::npos);

  Harness no_privilege;
  no_privilege.connect();
  const auto denied = all_of<action::Refused>(no_privilege.answer(ok({{"150004", "logical", "f"}})));
  CHECK(denied.empty());  // the publication is tried first
  const auto publication = all_of<action::Refused>(no_privilege.answer(failure("42501", "permission denied")));
  REQUIRE(publication.size() == 1);
  CHECK(publication[0].text.find("CREATE privilege") != std::string::npos);
}

TEST_CASE(
    "a transaction's messages on the channel are delivered in order with its commit position; other "
    "prefixes are not") {
  Harness harness;
  harness.stream();
  const auto actions = harness.receive({begin(0x500), message("livestate", payload("a", 1)),
                                        message("other", payload("x")), message("livestate", payload("b", 2)),
                                        commit(0x500, 0x530)});
  CHECK(delivered(actions) == std::vector<std::string>{"a", "b"});
  for (const auto& deliver : all_of<action::Deliver>(actions)) {
    for (const auto& item : deliver.items) CHECK(std::get<detail::Delivery>(item).position == 0x500);
  }
  CHECK(harness.machine.counters().received == 2);
  CHECK(harness.machine.counters().notifications == 2);
}

TEST_CASE("a live stream acknowledges what it received, in batches") {
  Harness harness;
  harness.stream();
  harness.receive({begin(0x500), message("livestate", payload("a")), commit(0x500, 0x530)});
  harness.receive({begin(0x600), message("livestate", payload("b")), commit(0x600, 0x640)});
  REQUIRE(harness.timers.armed(StreamTimer::ack));
  const auto updates = all_of<action::SendCopyData>(harness.fire(StreamTimer::ack));
  REQUIRE(updates.size() == 1);  // both in one
  CHECK(confirmed(updates[0]) == 0x640);
  CHECK(harness.machine.acknowledged() == 0x640);
}

TEST_CASE(
    "a keepalive asking for an answer is answered at once, with where decoding has reached once nothing "
    "waits") {
  Harness harness;
  harness.stream();
  const auto updates = all_of<action::SendCopyData>(harness.receive({keepalive(0x900, true)}));
  REQUIRE(updates.size() == 1);
  CHECK(confirmed(updates[0]) == 0x900);
  // Inside a transaction the keepalive's position is not acknowledged.
  const auto inside = all_of<action::SendCopyData>(harness.receive({begin(0xA00), keepalive(0xA50, true)}));
  REQUIRE(inside.size() == 1);
  CHECK(confirmed(inside[0]) == 0x900);
}

TEST_CASE("a durable stream acknowledges a transaction once its consumer has delivered it, not before") {
  Harness harness(Harness::defaults(false));
  harness.stream();
  auto actions = harness.receive(
      {begin(0x500), message("livestate", payload("a")), commit(0x500, 0x530), keepalive(0x700, true)});
  const auto deliveries = all_of<action::Deliver>(actions);
  REQUIRE(deliveries.size() == 1);  // the transaction whole, with its end
  CHECK(deliveries[0].items.size() == 1);
  CHECK(deliveries[0].end == 0x530);
  // The keepalive's answer confirms nothing yet: "a" waits for its consumer.
  const auto answer = all_of<action::SendCopyData>(actions);
  REQUIRE(answer.size() == 1);
  CHECK(confirmed(answer[0]) == 0);
  CHECK_FALSE(harness.timers.armed(StreamTimer::ack));
  harness.note(harness.machine.delivered(0x530, harness.now));
  const auto updates = all_of<action::SendCopyData>(harness.fire(StreamTimer::ack));
  REQUIRE(updates.size() == 1);
  // "a" delivered, the keepalive's position is acknowledged too: the server
  // sent everything before it.
  CHECK(confirmed(updates[0]) == 0x700);
}

TEST_CASE(
    "a keepalive that comes while a durable consumer is still delivering is acknowledged once what came "
    "before it is delivered, not before, and not past what came after it") {
  Harness harness(Harness::defaults(false));
  harness.stream();
  harness.receive({begin(0x500), message("livestate", payload("a")), commit(0x500, 0x530), keepalive(0x700, false)});
  harness.receive({begin(0x800), message("livestate", payload("b")), commit(0x800, 0x840)});
  CHECK_FALSE(harness.timers.armed(StreamTimer::ack));
  harness.note(harness.machine.delivered(0x530, harness.now));
  auto updates = all_of<action::SendCopyData>(harness.fire(StreamTimer::ack));
  REQUIRE(updates.size() == 1);
  CHECK(confirmed(updates[0]) == 0x700);  // not 0x840: "b" waits for its consumer
  harness.note(harness.machine.delivered(0x840, harness.now));
  updates = all_of<action::SendCopyData>(harness.fire(StreamTimer::ack));
  REQUIRE(updates.size() == 1);
  CHECK(confirmed(updates[0]) == 0x840);
}

TEST_CASE("a durable stream stops reading when paused, and reads what libpq holds first when resumed") {
  Harness harness(Harness::defaults(false));
  harness.stream();
  harness.note(harness.machine.pause());
  CHECK_FALSE(has<action::ReadInput>(harness.note(harness.machine.socket_readable(harness.now))));
  CHECK_FALSE(has<action::WaitReadable>(harness.note(harness.machine.input_read(true, harness.now))));
  CHECK(has<action::ReadInput>(harness.note(harness.machine.resume(harness.now))));
}

TEST_CASE("a silent server is probed; no answer within probe_timeout is a lost connection, an answer keeps it") {
  Harness harness;
  harness.stream();
  auto actions = harness.fire(StreamTimer::probe);
  const auto probe = all_of<action::SendCopyData>(actions);
  REQUIRE(probe.size() == 1);
  CHECK(probe[0].bytes.back() == 1);  // reply requested
  harness.receive({keepalive(0x10, false)});
  CHECK_FALSE(harness.timers.armed(StreamTimer::probe_deadline));
  harness.fire(StreamTimer::probe);
  actions = harness.fire(StreamTimer::probe_deadline);
  CHECK(has<action::Close>(actions));
  CHECK(harness.timers.armed(StreamTimer::retry));
  CHECK_FALSE(harness.machine.streaming());
}

TEST_CASE(
    "a probe waits for an answer as long as the server may take to read it while it replays a transaction: "
    "probe_timeout plus wal_sender_timeout / 2") {
  for (const auto& [setting, deadline] : {std::pair<std::optional<std::string>, std::chrono::milliseconds>{"60000", 33s},
                                          {"0", 3s},
                                          {std::nullopt, 3s}}) {
    CAPTURE(setting.value_or("(none)"));
    Harness harness;
    harness.stream({{"150004", "logical", "t", setting}});
    const auto armed = all_of<action::ArmTimer>(harness.fire(StreamTimer::probe));
    const auto probe_deadline = std::find_if(armed.begin(), armed.end(), [](const action::ArmTimer& timer) {
      return timer.timer == StreamTimer::probe_deadline;
    });
    REQUIRE(probe_deadline != armed.end());
    CHECK(probe_deadline->after == deadline);
    const auto lost = harness.fire(StreamTimer::probe_deadline);
    CHECK(has<action::Close>(lost));
  }
}

TEST_CASE(
    "after a lost connection, live consumers get a reconnected event; a durable one resumes from its slot "
    "without one") {
  for (const bool temporary : {true, false}) {
    CAPTURE(temporary);
    Harness harness(Harness::defaults(temporary));
    harness.stream();
    harness.note(harness.machine.failed("connection reset", harness.now));
    harness.fire(StreamTimer::retry);
    const auto actions = harness.stream();
    const auto told = events(actions);
    if (temporary) {
      REQUIRE(told.size() == 1);
      CHECK(told[0].kind == ControlKind::reconnected);
      CHECK(told[0].reason.find("connection reset") != std::string::npos);
      CHECK(harness.machine.slot() == "livestate_live_0123_2");  // a new temporary slot
    } else {
      CHECK(told.empty());
      CHECK(harness.machine.slot() == "livestate_audit_0123");
    }
    CHECK(harness.machine.counters().reconnects == 1);
  }
}

TEST_CASE("a durable slot streamed by another session is refused, naming that session's process") {
  Harness harness(Harness::defaults(false));
  harness.connect();
  auto actions = harness.answer(ok(ready_server));
  CHECK(Harness::next_command(actions) ==
        "SELECT wal_status, active_pid FROM pg_replication_slots WHERE slot_name = 'livestate_audit_0123'");
  actions = harness.answer(ok({{"reserved", "4242"}}));
  const auto refused = all_of<action::Refused>(actions);
  REQUIRE(refused.size() == 1);
  CHECK(refused[0].why == detail::Refusal::in_use);
  CHECK(refused[0].active_pid == 4242);
  CHECK(harness.timers.armed(StreamTimer::retry));
}

TEST_CASE("an invalidated slot is dropped and made again, and the consumer is told its messages expired") {
  auto settings = Harness::defaults(false);
  settings.slot_known = true;
  Harness harness(settings);
  harness.connect();
  harness.answer(ok(ready_server));
  auto actions = harness.answer(ok({{"lost", std::nullopt}}));
  CHECK(Harness::next_command(actions) == "DROP_REPLICATION_SLOT \"livestate_audit_0123\"");
  actions = harness.answer(ok());
  CHECK(Harness::next_command(actions) ==
        "CREATE_REPLICATION_SLOT \"livestate_audit_0123\" LOGICAL pgoutput NOEXPORT_SNAPSHOT");
  harness.answer(ok());
  actions = harness.answer(copy_both());
  const auto told = events(actions);
  REQUIRE(told.size() == 1);
  CHECK(told[0].kind == ControlKind::expired);
}

TEST_CASE("a known slot found gone is made again with an expired event; a new name's slot is just made") {
  for (const bool known : {true, false}) {
    auto settings = Harness::defaults(false);
    settings.slot_known = known;
    Harness harness(settings);
    harness.connect();
    harness.answer(ok(ready_server));
    auto actions = harness.answer(ok({}));
    CHECK(Harness::next_command(actions).starts_with("CREATE_REPLICATION_SLOT"));
    harness.answer(ok());
    actions = harness.answer(copy_both());
    CHECK(events(actions).size() == (known ? 1U : 0U));
  }
}

TEST_CASE("malformed payloads are counted and dropped; refused entries of a numbered producer are told as a gap") {
  Harness harness;
  harness.stream();
  const auto actions = harness.receive(
      {begin(0x500), message("livestate", "not json"),
       message("livestate", R"({"v":1,"o":"p1","m":[{"s":1,"k":["a"],"b":{}},{"s":2,"k":[],"b":{}}]})"),
       message("livestate", R"({"v":1,"o":"p1","m":[{"s":3,"k":["c"],"r":12}]})"), commit(0x500, 0x530)});
  CHECK(delivered(actions) == std::vector<std::string>{"a", "control:gap", "control:gap"});
  CHECK(harness.machine.counters().malformed == 2);
  CHECK(harness.machine.counters().missing_references == 1);
  CHECK(harness.machine.streaming());  // never fatal
}

TEST_CASE("unreadable replication data loses the connection; stop sends the last acknowledgement and closes") {
  Harness harness;
  harness.stream();
  CHECK(has<action::Close>(harness.receive({"zzz"})));
  harness.fire(StreamTimer::retry);
  harness.stream();
  harness.receive({begin(0x500), message("livestate", payload("a")), commit(0x500, 0x530)});
  const auto actions = harness.machine.stop(harness.now);
  const auto updates = all_of<action::SendCopyData>(actions);
  REQUIRE(updates.size() == 1);
  CHECK(confirmed(updates[0]) == 0x530);
  CHECK(has<action::Close>(actions));
  CHECK(harness.machine.stop(harness.now).empty());
  CHECK(harness.machine.copy_data(keepalive(1, true), harness.now).empty());
}

TEST_CASE("a transaction cut short by a lost connection is never half delivered") {
  Harness harness;
  harness.stream();
  auto actions = harness.receive({begin(0x500), message("livestate", payload("a"))});
  CHECK(delivered(actions).empty());  // held until its commit
  actions = harness.note(harness.machine.failed("connection reset", harness.now));
  CHECK(delivered(actions).empty());
  harness.fire(StreamTimer::retry);
  actions = harness.stream();
  CHECK(delivered(actions) == std::vector<std::string>{"control:reconnected"});
}
