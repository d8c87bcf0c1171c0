// test/broker/mqtt/mosquitto_server.hpp — a real mosquitto for tests on a free loopback port,
// from a config file written to its temporary directory: `listener <port> 127.0.0.1`,
// anonymous clients allowed, plus whatever lines a test adds (TLS, persistence, …).
#pragma once

#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "broker/redis/server_process.hpp"

namespace micro_test {

class MosquittoServer : public ServerProcess {
 public:
  // `extra`: more mosquitto.conf lines; "%DIR%" in them is the server's directory.
  explicit MosquittoServer(std::vector<std::string> extra = {}, int port = 0)
      : ServerProcess("mosquitto", port ? port : free_loopback_ports(1)[0],
                      [this, extra](const std::string& directory) {
                        std::string config = directory + "/mosquitto.conf";
                        std::ofstream file(config);
                        file << "listener " << this->port() << " 127.0.0.1\n"
                             << "allow_anonymous true\n";
                        // As root, mosquitto would switch to user mosquitto, which cannot
                        // read the test's private temporary files.
                        if (::geteuid() == 0) file << "user root\n";
                        for (std::string line : extra) {
                          for (auto at = line.find("%DIR%"); at != std::string::npos;
                               at = line.find("%DIR%"))
                            line.replace(at, 5, directory);
                          file << line << "\n";
                        }
                        return std::vector<std::string>{"mosquitto", "-c", config};
                      }) {
    start();
  }
};

}  // namespace micro_test
