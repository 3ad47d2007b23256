// The streaming replication protocol's messages and pgoutput's records, as
// PostgreSQL's protocol pages lay them out, read and written without a
// server.

#include <doctest/doctest.h>

#include <string>

#include "replication_protocol.hpp"

namespace replication = livestate::mq::detail::replication;

namespace {

std::string big_endian(std::uint64_t value, std::size_t size) {
  std::string out;
  // Bytes past the eighth (a field wider than 64 bits, in a malformed
  // message) are zero: shifting by 64 or more is undefined.
  for (std::size_t i = size; i-- > 0;) out += static_cast<char>(i < 8 ? value >> (8 * i) & 0xff : 0);
  return out;
}

std::uint64_t read_big_endian(const std::string& bytes, std::size_t at, std::size_t size) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < size; ++i) value = value << 8 | static_cast<unsigned char>(bytes[at + i]);
  return value;
}

}  // namespace

TEST_CASE("positions read and print as PostgreSQL writes them") {
  CHECK(replication::lsn_text(0x16B374D848ULL) == "16/B374D848");
  CHECK(replication::lsn_text(0) == "0/0");
  CHECK(replication::parse_lsn("16/B374D848") == 0x16B374D848ULL);
  CHECK(replication::parse_lsn("0/1942D70") == 0x1942D70ULL);
  for (const char* bad : {"", "16", "/1", "1/", "1/2/3", "g/1", "1/ 2", "100000000/0"}) {
    CAPTURE(bad);
    CHECK_FALSE(replication::parse_lsn(bad).has_value());
  }
}

TEST_CASE("WAL data and keepalives are read from their CopyData messages; anything else is unreadable") {
  const std::string bytes = "w" + big_endian(0x10, 8) + big_endian(0x20, 8) + big_endian(7, 8) + "BODY";
  const auto data = replication::parse_server_message(bytes);
  REQUIRE(std::holds_alternative<replication::XLogData>(data));
  CHECK(std::get<replication::XLogData>(data).start == 0x10);
  CHECK(std::get<replication::XLogData>(data).wal_end == 0x20);
  CHECK(std::get<replication::XLogData>(data).record == "BODY");

  const auto keepalive = replication::parse_server_message("k" + big_endian(0x30, 8) + big_endian(7, 8) + "\x01");
  REQUIRE(std::holds_alternative<replication::Keepalive>(keepalive));
  CHECK(std::get<replication::Keepalive>(keepalive).wal_end == 0x30);
  CHECK(std::get<replication::Keepalive>(keepalive).reply_requested);

  for (const std::string& bad : {std::string(), std::string("w") + big_endian(1, 8),
                                 std::string("k") + big_endian(1, 15), std::string("x123")}) {
    CHECK(std::holds_alternative<replication::Unreadable>(replication::parse_server_message(bad)));
  }
}

TEST_CASE("pgoutput's begin, commit and logical message records are read; other records are passed over") {
  const auto begin = replication::parse_record("B" + big_endian(0x1945290, 8) + big_endian(1, 8) + big_endian(728, 4));
  REQUIRE(std::holds_alternative<replication::Begin>(begin));
  CHECK(std::get<replication::Begin>(begin).final_lsn == 0x1945290);
  CHECK(std::get<replication::Begin>(begin).xid == 728);

  const auto commit = replication::parse_record(std::string("C") + '\0' + big_endian(0x1945290, 8) +
                                                big_endian(0x19452C0, 8) + big_endian(1, 8));
  REQUIRE(std::holds_alternative<replication::Commit>(commit));
  CHECK(std::get<replication::Commit>(commit).commit_lsn == 0x1945290);
  CHECK(std::get<replication::Commit>(commit).end_lsn == 0x19452C0);

  const std::string content = std::string("{\"v\":1}") + '\0' + "binary";
  // The record's views point into the bytes it was read from.
  const std::string bytes = std::string("M") + '\x01' + big_endian(0x1945290, 8) + "livestate" + '\0' +
                            big_endian(content.size(), 4) + content;
  const auto message = replication::parse_record(bytes);
  REQUIRE(std::holds_alternative<replication::LogicalMessage>(message));
  const auto& logical = std::get<replication::LogicalMessage>(message);
  CHECK(logical.transactional);
  CHECK(logical.prefix == "livestate");
  CHECK(logical.content == content);  // bytes, NULs included

  CHECK(std::get<replication::OtherRecord>(replication::parse_record("R...")).kind == 'R');
  // Cut short anywhere: unreadable, never read past the end.
  const std::string whole = std::string("M") + '\x01' + big_endian(1, 8) + "p" + '\0' + big_endian(4, 4) + "abcd";
  for (std::size_t size = 1; size < whole.size(); ++size) {
    CAPTURE(size);
    CHECK(std::holds_alternative<replication::Unreadable>(replication::parse_record(whole.substr(0, size))));
  }
}

TEST_CASE("a standby status update confirms one position as written, flushed and applied") {
  const auto update = replication::status_update(0x16B374D848ULL, 12345, true);
  REQUIRE(update.size() == 34);
  CHECK(update[0] == 'r');
  for (std::size_t at : {1, 9, 17}) CHECK(read_big_endian(update, at, 8) == 0x16B374D848ULL);
  CHECK(read_big_endian(update, 25, 8) == 12345);
  CHECK(update[33] == 1);
  // PostgreSQL's clock starts on 2000-01-01.
  CHECK(replication::postgres_time(std::chrono::system_clock::time_point(std::chrono::seconds(946'684'800))) == 0);
}
