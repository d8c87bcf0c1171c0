// core/src/gzip.cpp — gzip compress and bounded decompress on zlib (<micro/gzip.hpp>).
#include <micro/gzip.hpp>

#include <zlib.h>

#include <micro/error.hpp>

namespace micro::gzip {

namespace {
// windowBits 15 + 16 asks zlib for the gzip wrapper instead of zlib's own.
constexpr int gzip_window_bits = MAX_WBITS + 16;
}  // namespace

std::string compress(std::string_view data) {
  z_stream stream{};
  if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, gzip_window_bits, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK)
    throw Exception(Error("micro.gzip", 500, "gzip: zlib could not start deflate"));
  std::string out;
  out.resize(deflateBound(&stream, data.size()) + 32);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  int result = deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  if (result != Z_STREAM_END)
    throw Exception(Error("micro.gzip", 500, "gzip: deflate did not finish"));
  return out;
}

std::optional<std::string> decompress(std::string_view data, std::size_t limit,
                                      std::string& problem) {
  z_stream stream{};
  if (inflateInit2(&stream, gzip_window_bits) != Z_OK) {
    problem = "cannot start gzip";
    return std::nullopt;
  }
  std::string out;
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  char chunk[16384];
  int result = Z_OK;
  while (result != Z_STREAM_END) {
    stream.next_out = reinterpret_cast<Bytef*>(chunk);
    stream.avail_out = sizeof chunk;
    result = inflate(&stream, Z_NO_FLUSH);
    if (result != Z_OK && result != Z_STREAM_END) {
      problem = std::string("message is not valid gzip (") +
                (stream.msg ? stream.msg : "truncated") + ")";
      inflateEnd(&stream);
      return std::nullopt;
    }
    std::size_t produced = sizeof chunk - stream.avail_out;
    if (out.size() + produced > limit) {
      problem = "gzip message inflates past the limit of " + std::to_string(limit) + " bytes";
      inflateEnd(&stream);
      return std::nullopt;
    }
    out.append(chunk, produced);
    if (result == Z_OK && produced == 0 && stream.avail_in == 0) {
      problem = "message is not valid gzip (truncated)";
      inflateEnd(&stream);
      return std::nullopt;
    }
  }
  inflateEnd(&stream);
  return out;
}

}  // namespace micro::gzip
