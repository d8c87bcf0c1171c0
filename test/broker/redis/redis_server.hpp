// test/broker/redis/redis_server.hpp — a real redis-server for tests on a free loopback port:
// no snapshots, no append-only file (unless asked for), its files in a temporary directory.
#pragma once

#include <string>
#include <vector>

#include "broker/redis/server_process.hpp"

namespace micro_test {

class RedisServer : public ServerProcess {
 public:
  // `extra`: more redis-server arguments, e.g. {"--requirepass", "secret"}.
  explicit RedisServer(std::vector<std::string> extra = {}, int port = 0)
      : ServerProcess("redis", port ? port : free_loopback_ports(1)[0],
                      [this, extra](const std::string& directory) {
                        std::vector<std::string> arguments = {"redis-server",
                                                              "--port",
                                                              std::to_string(this->port()),
                                                              "--bind",
                                                              "127.0.0.1",
                                                              "--save",
                                                              "",
                                                              "--appendonly",
                                                              "no",
                                                              "--dir",
                                                              directory,
                                                              "--protected-mode",
                                                              "no"};
                        arguments.insert(arguments.end(), extra.begin(), extra.end());
                        return arguments;
                      }) {
    start();
  }
};

}  // namespace micro_test
