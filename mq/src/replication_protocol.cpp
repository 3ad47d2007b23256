#include "replication_protocol.hpp"

#include <charconv>
#include <cstdio>

namespace livestate::mq::detail::replication {

namespace {

// Reads big-endian integers and strings from the front of a message.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : m_bytes(bytes) {}

  [[nodiscard]] bool ok() const noexcept { return m_ok; }

  std::uint64_t integer(std::size_t size) {
    if (m_bytes.size() < size) {
      m_ok = false;
      return 0;
    }
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < size; ++i) value = value << 8 | static_cast<unsigned char>(m_bytes[i]);
    m_bytes.remove_prefix(size);
    return value;
  }
  // A NUL-terminated string.
  std::string_view text() {
    const auto end = m_bytes.find('\0');
    if (end == std::string_view::npos) {
      m_ok = false;
      return {};
    }
    const auto value = m_bytes.substr(0, end);
    m_bytes.remove_prefix(end + 1);
    return value;
  }
  std::string_view bytes(std::size_t size) {
    if (m_bytes.size() < size) {
      m_ok = false;
      return {};
    }
    const auto value = m_bytes.substr(0, size);
    m_bytes.remove_prefix(size);
    return value;
  }
  std::string_view rest() const noexcept { return m_bytes; }

 private:
  std::string_view m_bytes;
  bool m_ok = true;
};

void put(std::string& out, std::uint64_t value, std::size_t size) {
  for (std::size_t i = size; i-- > 0;) out += static_cast<char>(value >> (8 * i) & 0xff);
}

Unreadable unreadable(char kind, const char* what) {
  return Unreadable{std::string(what) + " ('" + (kind >= 0x20 && kind < 0x7f ? std::string(1, kind) : "?") +
                    "') too short"};
}

}  // namespace

std::string lsn_text(Lsn lsn) {
  char text[24];
  std::snprintf(text, sizeof text, "%X/%X", static_cast<unsigned>(lsn >> 32), static_cast<unsigned>(lsn & 0xffffffff));
  return text;
}

std::optional<Lsn> parse_lsn(std::string_view text) noexcept {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == text.size()) return std::nullopt;
  std::uint32_t high = 0;
  std::uint32_t low = 0;
  const auto read = [](std::string_view half, std::uint32_t& value) {
    const auto [end, error] = std::from_chars(half.data(), half.data() + half.size(), value, 16);
    return error == std::errc() && end == half.data() + half.size();
  };
  if (!read(text.substr(0, slash), high) || !read(text.substr(slash + 1), low)) return std::nullopt;
  return static_cast<Lsn>(high) << 32 | low;
}

ServerMessage parse_server_message(std::string_view copy_data) {
  if (copy_data.empty()) return Unreadable{"an empty message"};
  const char kind = copy_data.front();
  Reader reader(copy_data.substr(1));
  if (kind == 'w') {
    XLogData data;
    data.start = reader.integer(8);
    data.wal_end = reader.integer(8);
    reader.integer(8);  // the server's clock
    if (!reader.ok()) return unreadable(kind, "WAL data");
    data.record = reader.rest();
    return data;
  }
  if (kind == 'k') {
    Keepalive keepalive;
    keepalive.wal_end = reader.integer(8);
    reader.integer(8);
    keepalive.reply_requested = reader.integer(1) != 0;
    if (!reader.ok()) return unreadable(kind, "a keepalive");
    return keepalive;
  }
  return Unreadable{"an unknown message kind " + std::to_string(static_cast<unsigned char>(kind))};
}

Record parse_record(std::string_view record) {
  if (record.empty()) return Unreadable{"an empty record"};
  const char kind = record.front();
  Reader reader(record.substr(1));
  switch (kind) {
    case 'B': {
      Begin begin;
      begin.final_lsn = reader.integer(8);
      reader.integer(8);  // commit time
      begin.xid = static_cast<std::uint32_t>(reader.integer(4));
      if (!reader.ok()) return unreadable(kind, "a begin record");
      return begin;
    }
    case 'C': {
      Commit commit;
      reader.integer(1);  // flags
      commit.commit_lsn = reader.integer(8);
      commit.end_lsn = reader.integer(8);
      reader.integer(8);  // commit time
      if (!reader.ok()) return unreadable(kind, "a commit record");
      return commit;
    }
    case 'M': {
      // Protocol version 1 never streams transactions in progress, so there
      // is no xid before the flags.
      LogicalMessage message;
      message.transactional = (reader.integer(1) & 1) != 0;
      message.lsn = reader.integer(8);
      message.prefix = reader.text();
      const auto size = reader.integer(4);
      message.content = reader.bytes(static_cast<std::size_t>(size));
      if (!reader.ok()) return unreadable(kind, "a logical message");
      return message;
    }
    default: return OtherRecord{kind};
  }
}

std::int64_t postgres_time(std::chrono::system_clock::time_point time) noexcept {
  // 2000-01-01 is 946,684,800 s after the UNIX epoch.
  constexpr std::int64_t epoch_offset_us = 946'684'800LL * 1'000'000;
  return std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count() - epoch_offset_us;
}

std::string status_update(Lsn flushed, std::int64_t now, bool reply_requested) {
  std::string out;
  out.reserve(34);
  out += 'r';
  put(out, flushed, 8);  // written
  put(out, flushed, 8);  // flushed: what a logical slot confirms
  put(out, flushed, 8);  // applied
  put(out, static_cast<std::uint64_t>(now), 8);
  put(out, reply_requested ? 1 : 0, 1);
  return out;
}

}  // namespace livestate::mq::detail::replication
