// micro/connection_table.hpp — the process's open connections, one row each, for the admin
// endpoint's /connections (peer, local address, transport, side, age, calls in flight, requests,
// bytes in and out), in the way of brpc's /connections.
//
// A transport opens a record when a connection exists and drops it when it goes: those two take
// the table's lock. Everything a call touches is a relaxed atomic on the record the connection
// already holds, so the hot path pays an uncontended add per frame and no lock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

namespace micro {

enum class ConnectionSide { server, client };

// One connection's live numbers. Counters are written by the connection's own thread or strand
// and read by the admin thread; relaxed order is enough for figures an operator reads.
class ConnectionRecord {
 public:
  std::atomic<std::int64_t> in_flight{0};   // calls started and not yet answered
  std::atomic<std::uint64_t> requests{0};   // calls served (server) or sent (client)
  std::atomic<std::uint64_t> bytes_in{0};   // read from the socket
  std::atomic<std::uint64_t> bytes_out{0};  // written to the socket

  void add_in(std::uint64_t bytes) noexcept {
    bytes_in.fetch_add(bytes, std::memory_order_relaxed);
  }
  void add_out(std::uint64_t bytes) noexcept {
    bytes_out.fetch_add(bytes, std::memory_order_relaxed);
  }
  void call_started() noexcept {
    requests.fetch_add(1, std::memory_order_relaxed);
    in_flight.fetch_add(1, std::memory_order_relaxed);
  }
  void call_ended() noexcept { in_flight.fetch_sub(1, std::memory_order_relaxed); }
  // A client learns its addresses once connected; takes the table's lock (not per call).
  void set_addresses(std::string peer, std::string local);

 private:
  friend class ConnectionTable;
  std::string transport_, peer_, local_;
  ConnectionSide side_ = ConnectionSide::server;
  std::chrono::steady_clock::time_point opened_ = std::chrono::steady_clock::now();
};

// What /connections shows of one record at the time it was asked.
struct ConnectionRow {
  std::string transport;  // "tcp", "http", "grpc"
  ConnectionSide side = ConnectionSide::server;
  std::string peer, local;  // "host:port"; "" while a client is still connecting
  double age_seconds = 0;
  std::int64_t in_flight = 0;
  std::uint64_t requests = 0, bytes_in = 0, bytes_out = 0;
};

class ConnectionTable {
 public:
  // A record listed until the last shared_ptr to it goes (the connection's destructor).
  std::shared_ptr<ConnectionRecord> open(std::string transport, ConnectionSide side,
                                         std::string peer = {}, std::string local = {});
  std::vector<ConnectionRow> rows() const;  // oldest first
  std::size_t size() const;

 private:
  friend class ConnectionRecord;
  struct State;
  std::shared_ptr<State> state_ = make_state();
  static std::shared_ptr<State> make_state();
};

// "host:port", "[v6]:port": how rows (and transports' messages) name an address.
std::string endpoint_text(const boost::asio::ip::tcp::endpoint& endpoint);

// The process's table; transports report into it, the admin endpoint reads it.
ConnectionTable& connection_table();

const char* to_string(ConnectionSide side) noexcept;

}  // namespace micro
