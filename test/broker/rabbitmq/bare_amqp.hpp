// test/broker/rabbitmq/bare_amqp.hpp — a bare librabbitmq connection for tests and the
// benchmark, to see (and produce) exactly what is on the server: queue depths, the raw
// headers and body of a message, what a Go-Micro peer would publish. Throws std::runtime_error
// on any failure (it is test scaffolding, not the plugin).
#pragma once

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace micro_test {

class BareAmqp {
 public:
  explicit BareAmqp(int port) {
    state_ = amqp_new_connection();
    amqp_socket_t* socket = amqp_tcp_socket_new(state_);
    if (!socket || amqp_socket_open(socket, "127.0.0.1", port) != AMQP_STATUS_OK)
      throw std::runtime_error("bare AMQP: cannot connect to port " + std::to_string(port));
    check(amqp_login(state_, "/", 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN, "guest",
                     "guest"),
          "login");
    amqp_channel_open(state_, 1);
    check(amqp_get_rpc_reply(state_), "channel.open");
  }
  ~BareAmqp() {
    amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(state_);
  }
  BareAmqp(const BareAmqp&) = delete;
  BareAmqp& operator=(const BareAmqp&) = delete;

  amqp_connection_state_t state() const { return state_; }

  static amqp_bytes_t bytes(const std::string& text) {
    return amqp_bytes_t{text.size(), const_cast<char*>(text.data())};
  }
  static std::string text(amqp_bytes_t bytes) {
    return std::string(static_cast<const char*>(bytes.bytes), bytes.len);
  }

  // Ready messages in `queue` (not those delivered and unacknowledged); nullopt if it does not
  // exist (the channel is opened again then).
  std::optional<std::uint32_t> queue_depth(const std::string& queue) {
    auto* declared = amqp_queue_declare(state_, 1, bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t reply = amqp_get_rpc_reply(state_);
    if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      amqp_channel_close_ok_t ok{};
      amqp_send_method(state_, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      amqp_channel_open(state_, 1);
      check(amqp_get_rpc_reply(state_), "channel.open");
      return std::nullopt;
    }
    check(reply, "queue.declare passive");
    return declared->message_count;
  }

  void declare_exchange(const std::string& exchange, bool durable) {
    amqp_exchange_declare(state_, 1, bytes(exchange), amqp_cstring_bytes("topic"), 0, durable, 0, 0,
                          amqp_empty_table);
    check(amqp_get_rpc_reply(state_), "exchange.declare");
  }

  // An exclusive queue bound to `exchange` with `key`; returns its name.
  std::string bind_queue(const std::string& exchange, const std::string& key) {
    auto* declared = amqp_queue_declare(state_, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    check(amqp_get_rpc_reply(state_), "queue.declare");
    std::string queue = text(declared->queue);
    amqp_queue_bind(state_, 1, bytes(queue), bytes(exchange), bytes(key), amqp_empty_table);
    check(amqp_get_rpc_reply(state_), "queue.bind");
    return queue;
  }

  struct Received {
    std::string routing_key;
    std::map<std::string, std::pair<char, std::string>> headers;  // key → (AMQP kind, text)
    std::string body;
  };

  // One message from `queue` (basic.get), or nullopt if it is empty.
  std::optional<Received> get(const std::string& queue) {
    amqp_rpc_reply_t reply = amqp_basic_get(state_, 1, bytes(queue), 1);
    check(reply, "basic.get");
    if (reply.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) return std::nullopt;
    amqp_message_t message;
    check(amqp_read_message(state_, 1, &message, 0), "read message");
    Received received;
    auto* ok = static_cast<amqp_basic_get_ok_t*>(reply.reply.decoded);
    received.routing_key = text(ok->routing_key);
    received.body = text(message.body);
    if (message.properties._flags & AMQP_BASIC_HEADERS_FLAG) {
      for (int i = 0; i < message.properties.headers.num_entries; ++i) {
        const auto& entry = message.properties.headers.entries[i];
        std::string value =
            entry.value.kind == AMQP_FIELD_KIND_UTF8 || entry.value.kind == AMQP_FIELD_KIND_BYTES
                ? text(entry.value.value.bytes)
                : "";
        received.headers[text(entry.key)] = {static_cast<char>(entry.value.kind), value};
      }
    }
    amqp_destroy_message(&message);
    return received;
  }

  // Publishes as a Go-Micro service does: string headers, the raw body.
  void publish(const std::string& exchange, const std::string& key,
               const std::vector<std::pair<std::string, std::string>>& headers,
               const std::string& body) {
    std::vector<amqp_table_entry_t> entries;
    for (const auto& [name, value] : headers) {
      amqp_table_entry_t entry{};
      entry.key = bytes(name);
      entry.value.kind = AMQP_FIELD_KIND_UTF8;
      entry.value.value.bytes = bytes(value);
      entries.push_back(entry);
    }
    amqp_basic_properties_t properties{};
    properties._flags = AMQP_BASIC_HEADERS_FLAG;
    properties.headers = amqp_table_t{static_cast<int>(entries.size()), entries.data()};
    if (amqp_basic_publish(state_, 1, bytes(exchange), bytes(key), 0, 0, &properties,
                           bytes(body)) != AMQP_STATUS_OK)
      throw std::runtime_error("bare AMQP: publish failed");
  }

  void delete_queue(const std::string& queue) {
    amqp_queue_delete(state_, 1, bytes(queue), 0, 0);
    check(amqp_get_rpc_reply(state_), "queue.delete");
  }

 private:
  void check(const amqp_rpc_reply_t& reply, const char* what) {
    if (reply.reply_type != AMQP_RESPONSE_NORMAL)
      throw std::runtime_error(std::string("bare AMQP: ") + what + " failed (reply type " +
                               std::to_string(reply.reply_type) + ")");
  }

  amqp_connection_state_t state_ = nullptr;
};

}  // namespace micro_test
