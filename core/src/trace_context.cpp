// W3C Trace Context (traceparent, tracestate; level 2's random flag) and W3C Baggage:
// parsing with errors that name the character offset, formatting, and inject/extract into
// Metadata. Specs: https://www.w3.org/TR/trace-context/ and https://www.w3.org/TR/baggage/.
#include <micro/trace.hpp>

#include <algorithm>
#include <cstdio>

namespace micro::trace {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

constexpr std::size_t traceparent_length = 55;  // "vv-" + 32 + "-" + 16 + "-" + "ff"
constexpr std::size_t trace_id_offset = 3;
constexpr std::size_t span_id_offset = 36;
constexpr std::size_t flags_offset = 53;
constexpr std::size_t tracestate_max_members = 32;
constexpr std::size_t tracestate_large_member = 128;  // dropped first when a list is too long
constexpr std::size_t baggage_max_members = 64;
constexpr std::size_t baggage_max_bytes = 8192;

void set_error(std::string* error, std::string message) {
  if (error) *error = std::move(message);
}

// A character as an error message shows it: printable ones quoted, others as \xNN.
std::string describe(char c) {
  auto byte = static_cast<unsigned char>(c);
  if (byte >= 0x20 && byte < 0x7f) return std::string("'") + c + "'";
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "'\\x%02x'", byte);
  return buffer;
}

bool is_lower_hex(char c) noexcept {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int any_case_hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_ows(char c) noexcept {
  return c == ' ' || c == '\t';
}

bool is_lcalpha(char c) noexcept {
  return c >= 'a' && c <= 'z';
}

bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

// Trims optional white space (space, tab) and moves `offset` past what was cut at the front.
std::string_view trim_ows(std::string_view text, std::size_t& offset) {
  while (!text.empty() && is_ows(text.front())) {
    text.remove_prefix(1);
    ++offset;
  }
  while (!text.empty() && is_ows(text.back())) text.remove_suffix(1);
  return text;
}

// Checks value[begin, begin + length) is lowercase hex; names `what` in the error. `base` is
// where `value` starts in the header as received (after leading OWS), for the offsets shown.
bool check_hex(std::string_view value, std::size_t base, std::size_t begin, std::size_t length,
               const char* what, std::string* error) {
  for (std::size_t i = begin; i < begin + length; ++i) {
    if (!is_lower_hex(value[i])) {
      set_error(error, "traceparent: invalid character " + describe(value[i]) + " at offset " +
                           std::to_string(base + i) + " in the " + what +
                           " (lowercase hex expected)");
      return false;
    }
  }
  return true;
}

bool check_dash(std::string_view value, std::size_t base, std::size_t offset, std::string* error) {
  if (value[offset] == '-') return true;
  set_error(error, "traceparent: expected '-' at offset " + std::to_string(base + offset) +
                       ", found " + describe(value[offset]));
  return false;
}

// ---- tracestate grammar (trace-context §3.3.1) ----

// key chars after the first: lcalpha / DIGIT / "_" / "-" / "*" / "/"
bool is_key_char(char c) noexcept {
  return is_lcalpha(c) || is_digit(c) || c == '_' || c == '-' || c == '*' || c == '/';
}

// simple-key = lcalpha 0*255(key char)
// multi-tenant-key = tenant-id "@" system-id
//   tenant-id = (lcalpha / DIGIT) 0*240(key char); system-id = lcalpha 0*13(key char)
bool check_tracestate_key(std::string_view key, std::size_t offset, std::string* error) {
  auto fail = [&](std::string what) {
    set_error(error, "tracestate: " + what + " in key '" + std::string(key) + "'");
    return false;
  };
  auto bad_char = [&](std::size_t i, const char* expected) {
    return fail("invalid character " + describe(key[i]) + " at offset " +
                std::to_string(offset + i) + " (" + expected + ")");
  };
  if (key.empty()) {
    set_error(error, "tracestate: empty key at offset " + std::to_string(offset));
    return false;
  }
  std::size_t at = key.find('@');
  if (at == std::string_view::npos) {
    if (!is_lcalpha(key[0])) return bad_char(0, "a key starts with a lowercase letter");
    for (std::size_t i = 1; i < key.size(); ++i)
      if (!is_key_char(key[i])) return bad_char(i, "expected a-z 0-9 _ - * /");
    if (key.size() > 256)
      return fail("too long at offset " + std::to_string(offset) + " (" +
                  std::to_string(key.size()) + " characters, at most 256)");
    return true;
  }
  std::string_view tenant = key.substr(0, at);
  std::string_view system = key.substr(at + 1);
  if (tenant.empty())
    return fail("empty tenant id before '@' at offset " + std::to_string(offset + at));
  if (!is_lcalpha(tenant[0]) && !is_digit(tenant[0]))
    return bad_char(0, "a tenant id starts with a lowercase letter or digit");
  for (std::size_t i = 1; i < tenant.size(); ++i)
    if (!is_key_char(tenant[i])) return bad_char(i, "expected a-z 0-9 _ - * /");
  if (tenant.size() > 241)
    return fail("tenant id too long at offset " + std::to_string(offset) + " (" +
                std::to_string(tenant.size()) + " characters, at most 241)");
  if (system.empty())
    return fail("empty system id after '@' at offset " + std::to_string(offset + at + 1));
  if (!is_lcalpha(system[0])) return bad_char(at + 1, "a system id starts with a lowercase letter");
  for (std::size_t i = 1; i < system.size(); ++i)
    if (!is_key_char(system[i])) return bad_char(at + 1 + i, "expected a-z 0-9 _ - * /");
  if (system.size() > 14)
    return fail("system id too long at offset " + std::to_string(offset + at + 1) + " (" +
                std::to_string(system.size()) + " characters, at most 14)");
  return true;
}

// value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
bool check_tracestate_value(std::string_view key, std::string_view value, std::size_t offset,
                            std::string* error) {
  std::string prefix = "tracestate: value of key '" + std::string(key) + "'";
  if (value.empty()) {
    set_error(error, prefix + " is empty at offset " + std::to_string(offset));
    return false;
  }
  for (std::size_t i = 0; i < value.size(); ++i) {
    auto c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 || c > 0x7e || c == ',' || c == '=') {
      set_error(error, prefix + " has an invalid character " + describe(value[i]) + " at offset " +
                           std::to_string(offset + i));
      return false;
    }
  }
  if (value.size() > 256) {
    set_error(error, prefix + " is too long at offset " + std::to_string(offset) + " (" +
                         std::to_string(value.size()) + " characters, at most 256)");
    return false;
  }
  // Trailing spaces were trimmed as OWS around the member, so the last char is non-blank.
  return true;
}

// ---- baggage grammar (baggage §3.3) ----

// token (RFC 7230): ALPHA / DIGIT / ! # $ % & ' * + - . ^ _ ` | ~
bool is_token_char(char c) noexcept {
  if (is_lcalpha(c) || (c >= 'A' && c <= 'Z') || is_digit(c)) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

// baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
// (printable ASCII except space, '"', ',', ';' and '\')
bool is_baggage_octet(char c) noexcept {
  auto byte = static_cast<unsigned char>(c);
  return byte >= 0x21 && byte <= 0x7e && c != '"' && c != ',' && c != ';' && c != '\\';
}

// One "key = value" (properties already cut off): validates and percent-decodes.
bool parse_baggage_member(std::string_view member, std::size_t offset,
                          std::pair<std::string, std::string>& out, std::string* error) {
  std::size_t equals = member.find('=');
  if (equals == std::string_view::npos) {
    set_error(error, "baggage: list-member without '=' at offset " + std::to_string(offset));
    return false;
  }
  std::size_t key_offset = offset;
  std::string_view key = trim_ows(member.substr(0, equals), key_offset);
  std::size_t value_offset = offset + equals + 1;
  std::string_view value = trim_ows(member.substr(equals + 1), value_offset);
  if (key.empty()) {
    set_error(error, "baggage: empty key at offset " + std::to_string(key_offset));
    return false;
  }
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (!is_token_char(key[i])) {
      set_error(error, "baggage: invalid character " + describe(key[i]) + " at offset " +
                           std::to_string(key_offset + i) + " in key '" + std::string(key) +
                           "' (a key is an HTTP token)");
      return false;
    }
  }
  std::string decoded;
  decoded.reserve(value.size());
  for (std::size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    if (!is_baggage_octet(c)) {
      set_error(error, "baggage: invalid character " + describe(c) + " at offset " +
                           std::to_string(value_offset + i) + " in the value of key '" +
                           std::string(key) + "'");
      return false;
    }
    if (c == '%') {
      bool complete = i + 2 < value.size();
      int high = complete ? any_case_hex_value(value[i + 1]) : -1;
      int low = complete ? any_case_hex_value(value[i + 2]) : -1;
      if (high < 0 || low < 0) {
        set_error(error, "baggage: invalid percent-encoding at offset " +
                             std::to_string(value_offset + i) + " in the value of key '" +
                             std::string(key) + "' (expected %XX)");
        return false;
      }
      decoded.push_back(static_cast<char>((high << 4) | low));
      i += 2;
      continue;
    }
    decoded.push_back(c);
  }
  out = {std::string(key), std::move(decoded)};
  return true;
}

}  // namespace

std::optional<SpanContext> parse_traceparent(std::string_view received, std::string* error) {
  // A field value may carry optional white space around it (RFC 9110 §5.5); offsets in the
  // messages count from the start of what was received.
  std::size_t base = 0;
  std::string_view value = trim_ows(received, base);
  if (value.size() < 2) {
    set_error(error, "traceparent: too short: " + std::to_string(value.size()) +
                         " characters, at least 55 expected");
    return std::nullopt;
  }
  if (!check_hex(value, base, 0, 2, "version", error)) return std::nullopt;
  std::string_view version = value.substr(0, 2);
  if (version == "ff") {
    set_error(error, "traceparent: version ff at offset " + std::to_string(base) + " is invalid");
    return std::nullopt;
  }
  if (value.size() < traceparent_length) {
    set_error(error, "traceparent: too short: " + std::to_string(value.size()) +
                         " characters, at least 55 expected");
    return std::nullopt;
  }
  if (version == "00" && value.size() != traceparent_length) {
    set_error(error, "traceparent: version 00 must be exactly 55 characters, got " +
                         std::to_string(value.size()) + " (unexpected data at offset " +
                         std::to_string(base + traceparent_length) + ")");
    return std::nullopt;
  }
  // A later version may append fields, but only after another '-'.
  if (value.size() > traceparent_length && value[traceparent_length] != '-') {
    set_error(error, "traceparent: expected '-' or the end at offset " +
                         std::to_string(base + traceparent_length) + " after a version " +
                         std::string(version) + " value, found " +
                         describe(value[traceparent_length]));
    return std::nullopt;
  }
  SpanContext context;
  // Fast path: the ids decode (lowercase hex) and the separators are in place. Only when
  // something is wrong do the checks below run, in order, to say what and where.
  auto trace_id = TraceId::from_hex(value.substr(trace_id_offset, 32));
  auto span_id = SpanId::from_hex(value.substr(span_id_offset, 16));
  bool well_formed = trace_id && span_id && value[2] == '-' && value[35] == '-' &&
                     value[52] == '-' && is_lower_hex(value[flags_offset]) &&
                     is_lower_hex(value[flags_offset + 1]);
  if (!well_formed) {
    if (!check_dash(value, base, 2, error)) return std::nullopt;
    if (!check_hex(value, base, trace_id_offset, 32, "trace id", error)) return std::nullopt;
    if (!check_dash(value, base, 35, error)) return std::nullopt;
    if (!check_hex(value, base, span_id_offset, 16, "parent id", error)) return std::nullopt;
    if (!check_dash(value, base, 52, error)) return std::nullopt;
    if (!check_hex(value, base, flags_offset, 2, "flags", error)) return std::nullopt;
  }
  context.trace_id = *trace_id;
  context.span_id = *span_id;
  if (!context.trace_id.valid()) {
    set_error(error, "traceparent: the trace id at offset " +
                         std::to_string(base + trace_id_offset) + " is all zeros");
    return std::nullopt;
  }
  if (!context.span_id.valid()) {
    set_error(error, "traceparent: the parent id at offset " +
                         std::to_string(base + span_id_offset) + " is all zeros");
    return std::nullopt;
  }
  // Every flag is kept as received (sampled 0x01, level 2's random 0x02, and any a newer
  // version defines); format_traceparent writes only the ones version 00 knows.
  int high = any_case_hex_value(value[flags_offset]);
  int low = any_case_hex_value(value[flags_offset + 1]);
  context.flags = static_cast<std::uint8_t>((high << 4) | low);
  return context;
}

std::string format_traceparent(const SpanContext& context) {
  // Flags we do not know must be sent as zero (trace-context §3.2.2.5).
  auto flags = static_cast<std::uint8_t>(context.flags & (flag_sampled | flag_random));
  // Written in place: one allocation for the 55 characters, none for the ids' hex forms.
  std::string value(traceparent_length, '-');
  auto write_hex = [&value](std::size_t offset, const auto& bytes) {
    for (std::uint8_t byte : bytes) {
      value[offset++] = hex_digits[byte >> 4];
      value[offset++] = hex_digits[byte & 0x0f];
    }
  };
  value[0] = '0';
  value[1] = '0';
  write_hex(trace_id_offset, context.trace_id.bytes);
  write_hex(span_id_offset, context.span_id.bytes);
  value[flags_offset] = hex_digits[flags >> 4];
  value[flags_offset + 1] = hex_digits[flags & 0x0f];
  return value;
}

std::string normalize_tracestate(std::string_view value, std::string* error) {
  std::vector<std::string_view> members;  // validated, OWS trimmed, in order
  std::size_t position = 0;
  while (position <= value.size()) {
    std::size_t comma = value.find(',', position);
    if (comma == std::string_view::npos) comma = value.size();
    std::size_t member_offset = position;
    std::string_view member = trim_ows(value.substr(position, comma - position), member_offset);
    position = comma + 1;
    if (member.empty()) continue;  // ",," and OWS-only members are allowed and skipped

    std::size_t equals = member.find('=');
    if (equals == std::string_view::npos) {
      set_error(error,
                "tracestate: list-member without '=' at offset " + std::to_string(member_offset));
      return {};
    }
    std::string_view key = member.substr(0, equals);
    std::string_view member_value = member.substr(equals + 1);
    if (!check_tracestate_key(key, member_offset, error)) return {};
    if (!check_tracestate_value(key, member_value, member_offset + equals + 1, error)) return {};
    for (std::string_view seen : members) {
      if (seen.substr(0, seen.find('=')) == key) {
        set_error(error, "tracestate: duplicate key '" + std::string(key) + "' at offset " +
                             std::to_string(member_offset));
        return {};
      }
    }
    if (members.size() == tracestate_max_members) {
      set_error(error, "tracestate: more than 32 list-members (member 33 at offset " +
                           std::to_string(member_offset) + ")");
      return {};
    }
    members.push_back(member);
  }

  std::size_t length = members.empty() ? 0 : members.size() - 1;  // the commas
  for (std::string_view member : members) length += member.size();
  std::string normalized;
  normalized.reserve(std::min(length, tracestate_max_length));
  auto append = [&normalized](std::string_view member) {
    if (!normalized.empty()) normalized += ',';
    normalized += member;
  };
  if (length <= tracestate_max_length) {
    for (std::string_view member : members) append(member);
    return normalized;
  }

  // Longer than we propagate (trace-context, "tracestate Limits"): whole members go, first those
  // longer than 128 characters, right to left, then the right-most ones, until the rest fits.
  const std::size_t received_length = length;
  std::vector<bool> dropped(members.size(), false);
  auto drop = [&](std::size_t index) {
    dropped[index] = true;
    // Its characters, and a comma unless it was the last member left.
    length -= members[index].size() + (length > members[index].size() ? 1 : 0);
  };
  for (std::size_t index = members.size(); index-- > 0 && length > tracestate_max_length;)
    if (members[index].size() > tracestate_large_member) drop(index);
  for (std::size_t index = members.size(); index-- > 0 && length > tracestate_max_length;)
    if (!dropped[index]) drop(index);
  std::string keys;
  for (std::size_t index = 0; index < members.size(); ++index) {
    if (!dropped[index]) {
      append(members[index]);
      continue;
    }
    if (!keys.empty()) keys += ", ";
    keys += "'" + std::string(members[index].substr(0, members[index].find('='))) + "'";
  }
  set_error(error, "tracestate: " + std::to_string(received_length) +
                       " characters, more than the " + std::to_string(tracestate_max_length) +
                       " propagated; dropped the list-members " + keys);
  return normalized;
}

Baggage parse_baggage(std::string_view value, std::string* error) {
  Baggage baggage;
  std::string dropped;  // why members were left out, for the error
  std::size_t position = 0;
  while (position <= value.size()) {
    std::size_t comma = value.find(',', position);
    if (comma == std::string_view::npos) comma = value.size();
    std::size_t member_offset = position;
    std::string_view member = trim_ows(value.substr(position, comma - position), member_offset);
    position = comma + 1;
    if (member.empty()) continue;  // tolerated like tracestate's empty members

    // Properties (";prop" or ";prop=value") are metadata this API does not carry: dropped.
    std::string_view key_value = member.substr(0, member.find(';'));
    std::pair<std::string, std::string> entry;
    if (!parse_baggage_member(key_value, member_offset, entry, error)) return {};

    // Limits (baggage §3.3.1.1): whole members only, never a partial one.
    if (member_offset + member.size() > baggage_max_bytes) {
      if (dropped.empty())
        dropped = "baggage: longer than 8192 bytes; dropped members from offset " +
                  std::to_string(member_offset);
      continue;
    }
    auto same_key = std::find_if(baggage.begin(), baggage.end(), [&](const auto& existing) {
      return existing.first == entry.first;
    });
    if (same_key != baggage.end()) {
      same_key->second = std::move(entry.second);  // the last value of a repeated key wins
      continue;
    }
    if (baggage.size() == baggage_max_members) {
      if (dropped.empty())
        dropped = "baggage: more than 64 list-members; dropped members from offset " +
                  std::to_string(member_offset);
      continue;
    }
    baggage.push_back(std::move(entry));
  }
  if (!dropped.empty()) set_error(error, std::move(dropped));
  return baggage;
}

std::string format_baggage(const Baggage& baggage) {
  std::string header;
  std::size_t members = 0;
  for (const auto& [key, value] : baggage) {
    if (key.empty() || !std::all_of(key.begin(), key.end(), is_token_char)) continue;
    std::string member = key + "=";
    for (char c : value) {
      if (is_baggage_octet(c) && c != '%') {
        member += c;
      } else {
        auto byte = static_cast<unsigned char>(c);
        member += '%';
        member += "0123456789ABCDEF"[byte >> 4];
        member += "0123456789ABCDEF"[byte & 0x0f];
      }
    }
    std::size_t added = member.size() + (header.empty() ? 0 : 1);
    if (members == baggage_max_members || header.size() + added > baggage_max_bytes) continue;
    if (!header.empty()) header += ',';
    header += member;
    ++members;
  }
  return header;
}

void inject(const SpanContext& context, Metadata& metadata) {
  if (!context.valid()) return;  // nothing worth sending; leave what is there
  metadata.set("traceparent", format_traceparent(context));
  if (context.trace_state.empty())
    metadata.erase("tracestate");
  else
    metadata.set("tracestate", context.trace_state);
}

std::optional<SpanContext> extract(std::string_view traceparent, std::string_view tracestate) {
  // No traceparent, or one sent twice (joined, it is no longer one value), or invalid: no
  // parent, and the tracestate is not even looked at.
  auto context = parse_traceparent(traceparent);
  if (!context) return std::nullopt;
  context->trace_state = normalize_tracestate(tracestate);
  context->remote = true;
  return context;
}

std::optional<SpanContext> extract(const Metadata& metadata) {
  const std::string* traceparent = metadata.find("traceparent");
  if (!traceparent) return std::nullopt;
  const std::string* tracestate = metadata.find("tracestate");
  return extract(*traceparent, tracestate ? std::string_view(*tracestate) : std::string_view());
}

}  // namespace micro::trace
