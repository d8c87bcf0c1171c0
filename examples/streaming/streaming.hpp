// The streaming example's messages, shared by its server and client: plain structs with JSON
// mappings, and the checksum both sides compute over an upload.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace streaming {

// Ticker.Watch (server stream): one Watch in, `count` Ticks out.
struct Watch {
  std::string symbol;
  int count = 10;
  int interval_ms = 100;
};
struct Tick {
  std::string symbol;
  int sequence = 0;
  double price = 0;
};

// Upload.Send (client stream): Chunks in until the client closes, one Summary out.
struct Chunk {
  std::string data;  // base64 (JSON strings are UTF-8 text; a file is any bytes)
};
struct Summary {
  std::int64_t chunks = 0;
  std::int64_t bytes = 0;
  std::string checksum;  // FNV-1a 64 of every decoded byte, hex
};

// Chat.Talk (bidirectional): every message a participant sends goes to every participant.
struct ChatMessage {
  std::string from;
  std::string text;
};

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Watch, symbol, count, interval_ms)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Tick, symbol, sequence, price)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Chunk, data)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Summary, chunks, bytes, checksum)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ChatMessage, from, text)

// FNV-1a 64, continued over successive pieces: a checksum without a dependency.
class Checksum {
 public:
  void add(std::string_view bytes) {
    for (unsigned char c : bytes) {
      state_ ^= c;
      state_ *= 0x100000001b3ULL;
    }
  }
  std::string hex() const {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(state_));
    return text;
  }

 private:
  std::uint64_t state_ = 0xcbf29ce484222325ULL;
};

}  // namespace streaming
