// core/src/connection_table.cpp — the open-connection table: a set of records under a mutex
// taken only when a connection opens, closes, or an operator reads the table.
#include <micro/connection_table.hpp>

#include <algorithm>
#include <mutex>
#include <unordered_set>

namespace micro {

struct ConnectionTable::State {
  mutable std::mutex mutex;
  std::unordered_set<ConnectionRecord*> records;
};

std::shared_ptr<ConnectionTable::State> ConnectionTable::make_state() {
  return std::make_shared<State>();
}

namespace {
// The record's table, for set_addresses; records outlive no table (the process's is never
// destroyed before the transports that hold records, and a local table's deleter keeps it).
std::mutex& address_mutex() {
  static std::mutex mutex;
  return mutex;
}
}  // namespace

std::string endpoint_text(const boost::asio::ip::tcp::endpoint& endpoint) {
  auto address = endpoint.address();
  std::string host = address.to_string();
  if (address.is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(endpoint.port());
}

void ConnectionRecord::set_addresses(std::string peer, std::string local) {
  std::lock_guard lock(address_mutex());
  peer_ = std::move(peer);
  local_ = std::move(local);
}

std::shared_ptr<ConnectionRecord> ConnectionTable::open(std::string transport, ConnectionSide side,
                                                        std::string peer, std::string local) {
  auto* record = new ConnectionRecord;
  record->transport_ = std::move(transport);
  record->side_ = side;
  record->peer_ = std::move(peer);
  record->local_ = std::move(local);
  {
    std::lock_guard lock(state_->mutex);
    state_->records.insert(record);
  }
  // The deleter keeps the state alive, so a record may outlive the table object.
  return std::shared_ptr<ConnectionRecord>(record, [state = state_](ConnectionRecord* gone) {
    {
      std::lock_guard lock(state->mutex);
      state->records.erase(gone);
    }
    delete gone;
  });
}

std::vector<ConnectionRow> ConnectionTable::rows() const {
  auto now = std::chrono::steady_clock::now();
  std::vector<ConnectionRow> rows;
  {
    std::lock_guard lock(state_->mutex);
    std::lock_guard addresses(address_mutex());
    rows.reserve(state_->records.size());
    for (const auto* record : state_->records) {
      ConnectionRow row;
      row.transport = record->transport_;
      row.side = record->side_;
      row.peer = record->peer_;
      row.local = record->local_;
      row.age_seconds = std::chrono::duration<double>(now - record->opened_).count();
      row.in_flight = std::max<std::int64_t>(0, record->in_flight.load(std::memory_order_relaxed));
      row.requests = record->requests.load(std::memory_order_relaxed);
      row.bytes_in = record->bytes_in.load(std::memory_order_relaxed);
      row.bytes_out = record->bytes_out.load(std::memory_order_relaxed);
      rows.push_back(std::move(row));
    }
  }
  std::stable_sort(rows.begin(), rows.end(), [](const ConnectionRow& a, const ConnectionRow& b) {
    return a.age_seconds > b.age_seconds;
  });
  return rows;
}

std::size_t ConnectionTable::size() const {
  std::lock_guard lock(state_->mutex);
  return state_->records.size();
}

ConnectionTable& connection_table() {
  static auto* table = new ConnectionTable;  // never destroyed: records may close at exit
  return *table;
}

const char* to_string(ConnectionSide side) noexcept {
  return side == ConnectionSide::server ? "server" : "client";
}

}  // namespace micro
