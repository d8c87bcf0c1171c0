// The streaming example's client: one command per stream shape of the "streaming" service.
//
//   streaming-client [--registry=file?dir=/tmp/reg] ticker SYMBOL [count] [interval_ms]
//       prints each tick as it arrives
//   streaming-client … upload PATH
//       sends the file in 4 KiB chunks, prints the server's summary and whether its checksum
//       matches the one computed here
//   streaming-client … chat NAME
//       joins the chat room: each stdin line is said, everything said in the room is printed
//       as "from: text"; end of stdin leaves (after the room's answers to it arrived)
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include <micro/base64.hpp>
#include <micro/service.hpp>

#include "streaming.hpp"

namespace {

constexpr std::size_t chunk_bytes = 4096;

int ticker(micro::Microservice& service, const std::string& symbol, int count, int interval_ms) {
  auto stream =
      service.client().open_stream<streaming::Watch, streaming::Tick>("streaming", "Ticker.Watch");
  stream.send(streaming::Watch{symbol, count, interval_ms});
  stream.close_send();
  int received = 0;
  while (auto tick = stream.receive()) {
    std::cout << "tick " << tick->sequence << " " << tick->symbol << " " << tick->price
              << std::endl;
    ++received;
  }
  if (auto error = stream.error()) throw micro::Exception(*error);
  std::cout << "ticker done: " << received << " ticks" << std::endl;
  return 0;
}

int upload(micro::Microservice& service, const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::invalid_argument("cannot open " + path);
  auto stream = service.client().open_stream<streaming::Chunk, streaming::Summary>("streaming",
                                                                                   "Upload.Send");
  streaming::Checksum checksum;
  std::string buffer(chunk_bytes, '\0');
  std::int64_t chunks = 0;
  while (file.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) ||
         file.gcount() > 0) {
    std::string data(buffer.data(), static_cast<std::size_t>(file.gcount()));
    checksum.add(data);
    stream.send(streaming::Chunk{micro::base64::encode(data)});
    ++chunks;
  }
  stream.close_send();
  auto summary = stream.receive();
  if (!summary) {
    auto error = stream.error();
    throw micro::Exception(error ? *error
                                 : micro::internal_error("streaming-client", "no summary"));
  }
  std::cout << "uploaded " << summary->chunks << " chunks, " << summary->bytes
            << " bytes, checksum " << summary->checksum
            << (summary->checksum == checksum.hex() && summary->chunks == chunks ? " (matches)"
                                                                                 : " (MISMATCH)")
            << std::endl;
  return summary->checksum == checksum.hex() ? 0 : 1;
}

int chat(micro::Microservice& service, const std::string& name) {
  auto stream = service.client().open_stream<streaming::ChatMessage, streaming::ChatMessage>(
      "streaming", "Chat.Talk");
  // What the room says is printed while this thread reads stdin.
  std::thread printer([&stream] {
    while (auto message = stream.receive())
      std::cout << message->from << ": " << message->text << std::endl;
  });
  std::string line;
  try {
    while (std::getline(std::cin, line))
      if (!line.empty()) stream.send(streaming::ChatMessage{name, line});
    stream.close_send();
  } catch (const micro::Exception&) {
    // The stream ended while sending; its error is reported below.
  }
  printer.join();
  if (auto error = stream.error()) throw micro::Exception(*error);
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  auto config = micro::Config::load(argc, argv, "registry=file selector=roundrobin");
  std::string command = argc > 1 ? argv[1] : "";
  micro::Microservice service("", config);  // a client only
  if (command == "ticker" && argc > 2)
    return ticker(service, argv[2], argc > 3 ? std::stoi(argv[3]) : 5,
                  argc > 4 ? std::stoi(argv[4]) : 100);
  if (command == "upload" && argc > 2) return upload(service, argv[2]);
  if (command == "chat" && argc > 2) return chat(service, argv[2]);
  std::cerr << "usage: streaming-client [flags] ticker SYMBOL [count] [interval_ms]\n"
               "                        upload PATH\n"
               "                        chat NAME   (lines from stdin)\n";
  return 2;
} catch (const micro::Exception& e) {
  std::cerr << "streaming-client: " << e.error().message() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "streaming-client: " << e.what() << "\n";
  return 1;
}
