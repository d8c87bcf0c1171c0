// test/support/shell.hpp — runs a shell command for a test (openssl, etcdctl) and returns what
// it printed. Free of doctest, so benchmarks with their own main() may use it.
#pragma once

#include <cstdio>
#include <string>

namespace micro_test {

// Runs a shell command, returning its standard output.
inline std::string run_command(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return output;
  char buffer[4096];
  std::size_t read;
  while ((read = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, read);
  ::pclose(pipe);
  return output;
}

}  // namespace micro_test
