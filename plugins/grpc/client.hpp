// plugins/grpc/client.hpp — the grpc transport's client side: h2c connections pooled per
// node address, each carrying many calls and streams at once.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <micro/transport.hpp>

#include "wire.hpp"

namespace micro::grpc {

class ClientPools {
 public:
  ClientPools(IoExecutor executor, Settings settings);
  ~ClientPools();
  // Both complete on the executor, never inside the call. The request is checked (cancelled,
  // deadline, size) by the transport before.
  void call(std::string_view address, std::shared_ptr<const Request> request, ResponseHandler done);
  void open(std::string_view address, std::shared_ptr<const Request> head, OpenStreamHandler done);
  // Closes every connection: their calls and streams end with 503.
  void close_all();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace micro::grpc
