// micro/gzip.hpp — gzip (RFC 1952) for plugins: what grpc-encoding: gzip and OTLP's
// Content-Encoding: gzip carry. Inflating is bounded: a body that would grow past the caller's
// limit is refused while it inflates, never allocated whole (a gzip bomb costs one chunk).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace micro::gzip {

// Compresses `data` with zlib's default level into one gzip member.
std::string compress(std::string_view data);

// Inflates one gzip member. nullopt, with `problem` saying why, when `data` is not gzip, is
// truncated, or inflates past `limit` bytes ("inflates past the limit of N bytes").
std::optional<std::string> decompress(std::string_view data, std::size_t limit,
                                      std::string& problem);

}  // namespace micro::gzip
