// The HTTP client (<micro/http_client.hpp>) against real Beast servers on 127.0.0.1:0: keep-alive
// reuse, dead connections replaced, deadlines, cancellation, streamed and duplex bodies, the async
// core on a caller's io_context, TLS with a throwaway CA made by the openssl CLI (host names,
// client certificates, unusable files), and URL errors pinned word for word.
#include <doctest/doctest.h>

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <boost/asio/use_future.hpp>

#include <micro/error.hpp>
#include <micro/http_client.hpp>

#include "http/http_test_server.hpp"
#include "support/test_certificates.hpp"

namespace mh = micro::http;
using http_test::Peer;
using http_test::Server;
using http_test::Signal;
using namespace std::chrono_literals;

namespace {

mh::Request get(const std::string& url) {
  return {.method = "GET", .url = mh::parse_url(url), .headers = {}, .body = {}};
}

mh::RequestOptions within(std::chrono::milliseconds timeout) {
  mh::RequestOptions options;
  options.deadline = mh::Clock::now() + timeout;
  return options;
}

mh::RequestOptions cancelled_by(std::shared_ptr<mh::Cancellation> cancellation) {
  auto options = within(10s);
  options.cancellation = std::move(cancellation);
  return options;
}

mh::TlsOptions tls_files(const std::string& ca, const std::string& cert = {},
                         const std::string& key = {}) {
  mh::TlsOptions options;
  options.ca_file = ca;
  options.cert_file = cert;
  options.key_file = key;
  return options;
}

// The error a call fails with (code 0 when it does not fail).
template <class Call>
micro::Error error_of(Call&& call) {
  try {
    call();
  } catch (const micro::Exception& exception) {
    return exception.error();
  }
  return {};
}

bool contains(const std::string& text, const std::string& part) {
  INFO(text);
  return text.find(part) != std::string::npos;
}

std::string url_error(const std::string& url) {
  return error_of([&] { mh::parse_url(url); }).detail;
}

}  // namespace

TEST_CASE("URLs: parts, defaults, and errors that name the bad part") {
  auto url = mh::parse_url("https://collector.example:4318/v1/traces?x=1");
  CHECK(url.https);
  CHECK(url.host == "collector.example");
  CHECK(url.port == "4318");
  CHECK(url.target == "/v1/traces?x=1");
  CHECK(url.origin() == "https://collector.example:4318");
  CHECK(mh::parse_url("http://h").port == "80");
  CHECK(mh::parse_url("https://h").port == "443");
  CHECK(mh::parse_url("http://h").target == "/");
  CHECK(mh::parse_url("http://h?q").target == "/?q");
  auto v6 = mh::parse_url("http://[::1]:8080/x");
  CHECK(v6.host == "::1");
  CHECK(v6.authority() == "[::1]:8080");

  CHECK(error_of([] { mh::parse_url("x"); }).code == 400);
  CHECK(url_error("localhost:80") ==
        "URL \"localhost:80\": expected http:// or https:// before the host");
  CHECK(url_error("ftp://h/") == "URL \"ftp://h/\": scheme \"ftp\" is not http or https");
  CHECK(url_error("http:///path") == "URL \"http:///path\": no host after the scheme");
  CHECK(url_error("http://:80/") == "URL \"http://:80/\": empty host");
  CHECK(url_error("http://h:/") == "URL \"http://h:/\": empty port after ':'");
  CHECK(url_error("http://h:http/") ==
        "URL \"http://h:http/\": port \"http\" is not a number from 1 to 65535");
  CHECK(url_error("http://h:70000") ==
        "URL \"http://h:70000\": port \"70000\" is not a number from 1 to 65535");
  CHECK(url_error("http://[::1/") == "URL \"http://[::1/\": the IPv6 address has no closing ']'");
  CHECK(url_error("http://[::1]x/") ==
        "URL \"http://[::1]x/\": expected ':' and a port after the IPv6 address, not \"x\"");
  CHECK(url_error("http://user:pw@h/") ==
        "URL \"http://user:pw@h/\": user information (\"…@\") is not supported; put "
        "credentials in headers");
  CHECK(url_error("http://h/a b") ==
        "URL \"http://h/a b\": space, control character or '#' at offset 10 in the path "
        "(percent-encode it)");
  CHECK(url_error("http://h#top") ==
        "URL \"http://h#top\": a fragment (\"#…\") is not sent to servers; leave it out");
  std::string problem;
  CHECK_FALSE(mh::try_parse_url("http://h:0", &problem));
  CHECK(problem == "port \"0\" is not a number from 1 to 65535");
}

TEST_CASE("keep-alive: one connection serves a run of requests, and the reuse is counted") {
  Server server(http_test::keep_alive([](const auto& request) {
    return std::string(request.method_string()) + " " + std::string(request.target());
  }));
  mh::BlockingClient client;
  for (int index = 0; index < 3; ++index) {
    auto request = get(server.url("/n" + std::to_string(index)));
    const auto response = client.request(request, within(5s));
    CHECK(response.status == 200);
    CHECK(response.body == "GET /n" + std::to_string(index));
  }
  CHECK(server.accepted() == 1);
  CHECK(client.statistics().connections_opened == 1);
  CHECK(client.statistics().connections_reused == 2);
  CHECK(client.statistics().stale_replaced == 0);
}

TEST_CASE("a kept-alive connection the server closed is replaced once, transparently") {
  // Each connection answers one request (announcing keep-alive) and closes: every later request
  // finds its pooled connection dead, either at the idle check or when nothing is answered.
  Server server([](Peer& peer) {
    if (peer.read_request()) peer.answer("once");
  });
  mh::BlockingClient client;
  for (int index = 0; index < 3; ++index) {
    CHECK(client.request(get(server.url()), within(5s)).body == "once");
  }
  CHECK(server.accepted() == 3);
  CHECK(client.statistics().connections_opened == 3);
  CHECK(client.statistics().stale_replaced == 2);
}

TEST_CASE("a request read but never answered is not sent twice") {
  // The server takes the request and closes: that is a failure of a new connection, not a dead
  // kept-alive one, so it is reported rather than repeated.
  std::atomic<int> requests{0};
  Server server([&](Peer& peer) {
    if (peer.read_request()) ++requests;
  });
  mh::BlockingClient client;
  const auto error = error_of([&] { client.request(get(server.url("/x")), within(5s)); });
  CHECK(error.code == 503);
  CHECK(contains(error.detail, "GET " + server.url("/x") + ": no answer from 127.0.0.1:"));
  CHECK(requests == 1);
}

TEST_CASE("a deadline that passes while waiting for the answer is a 408") {
  Signal asked, done;
  Server server([&](Peer& peer) {
    if (peer.read_request()) asked.raise();
    done.wait(10s);
  });
  mh::BlockingClient client;
  const auto started = mh::Clock::now();
  const auto error = error_of([&] { client.request(get(server.url()), within(300ms)); });
  CHECK(error.code == 408);
  CHECK(contains(error.detail, "deadline passed while waiting for the answer from 127.0.0.1:"));
  CHECK(mh::Clock::now() - started < 3s);
  CHECK(asked.wait());
  done.raise();
}

TEST_CASE("nobody listening: a 503 naming host:port and what failed") {
  std::string url;
  {
    Server probe([](Peer&) {});
    url = probe.url("/v1");
  }
  mh::BlockingClient client;
  const auto error = error_of([&] { client.request(get(url), within(5s)); });
  CHECK(error.code == 503);
  CHECK(contains(error.detail, "GET " + url + ": cannot connect to 127.0.0.1:"));
  CHECK(contains(error.detail, "Connection refused"));
}

TEST_CASE("cancel from another thread ends a request that waits for its answer") {
  Signal asked, done;
  Server server([&](Peer& peer) {
    if (peer.read_request()) asked.raise();
    done.wait(10s);
  });
  mh::BlockingClient client;
  auto cancellation = std::make_shared<mh::Cancellation>();
  std::thread canceller([&] {
    if (asked.wait()) cancellation->cancel();
  });
  const auto error =
      error_of([&] { client.request(get(server.url()), cancelled_by(cancellation)); });
  canceller.join();
  CHECK(error.code == 503);
  CHECK(contains(error.detail, "cancelled while"));
  done.raise();

  // Cancelled before it starts: it ends at once, connecting nowhere.
  const auto early =
      error_of([&] { client.request(get(server.url()), cancelled_by(cancellation)); });
  CHECK(early.code == 503);
  CHECK(contains(early.detail, "cancelled while"));
}

TEST_CASE("a chunked response is delivered piece by piece, before it ends") {
  Signal first_seen;
  Server server([&](Peer& peer) {
    if (!peer.read_request()) return;
    peer.begin_chunks();
    peer.write_chunk("one");
    // The second piece only after the client has the first: it cannot have waited for the end.
    if (!first_seen.wait()) return;
    peer.write_chunk("two");
    peer.end_chunks();
    while (peer.read_request()) peer.answer("again");
  });
  mh::BlockingClient client;
  auto stream = client.open(get(server.url("/stream")), within(5s));
  const auto head = stream->async_read_head(mh::Clock::now() + 5s, boost::asio::use_future).get();
  CHECK(head.status == 200);
  CHECK(head.header("transfer-encoding") == "chunked");
  auto next = [&] {
    return stream->async_read_some(mh::Clock::now() + 5s, boost::asio::use_future).get();
  };
  CHECK(next() == "one");
  first_seen.raise();
  CHECK(next() == "two");
  CHECK(next() == "");  // the end
  CHECK(next() == "");  // told again
  // Read to its end, the connection went back to the pool.
  CHECK(client.request(get(server.url()), within(5s)).body == "again");
  CHECK(server.accepted() == 1);
}

TEST_CASE("duplex: request chunks go out while the response comes back") {
  // An echo that answers each chunk of the request body as it arrives, upper-cased.
  Server server([](Peer& peer) {
    if (!peer.read_request_head()) return;
    peer.begin_chunks();
    for (std::string piece; !(piece = peer.read_body_piece()).empty();) {
      for (auto& character : piece) character = char(std::toupper(character));
      peer.write_chunk(piece);
    }
    peer.end_chunks();
  });
  mh::BlockingClient client;
  auto request = get(server.url("/echo"));
  request.method = "POST";
  request.body = "ping";  // the first chunk
  auto stream = client.open_duplex(request, within(5s));
  const auto deadline = mh::Clock::now() + 5s;
  CHECK(stream->async_read_head(deadline, boost::asio::use_future).get().status == 200);
  CHECK(stream->async_read_some(deadline, boost::asio::use_future).get() == "PING");
  stream->async_write("pong", deadline, boost::asio::use_future).get();
  CHECK(stream->async_read_some(deadline, boost::asio::use_future).get() == "PONG");
  stream->async_finish(deadline, boost::asio::use_future).get();
  CHECK(stream->async_read_some(deadline, boost::asio::use_future).get() == "");
  // After its end, the body takes no more chunks.
  const auto late =
      error_of([&] { stream->async_write("more", deadline, boost::asio::use_future).get(); });
  CHECK(late.code == 400);
  CHECK(contains(late.detail, "the request body has ended already"));
}

TEST_CASE("dropping a stream that waits for data ends it") {
  Signal asked, done;
  Server server([&](Peer& peer) {
    if (!peer.read_request()) return;
    peer.begin_chunks();
    asked.raise();
    done.wait(10s);
  });
  mh::BlockingClient client;
  auto stream = client.open(get(server.url()), within(5s));
  CHECK(asked.wait());
  CHECK(stream->async_read_head(mh::Clock::now() + 5s, boost::asio::use_future).get().status ==
        200);
  auto pending = stream->async_read_some(mh::no_deadline, boost::asio::use_future);
  stream->cancel();
  const auto error = error_of([&] { pending.get(); });
  CHECK(error.code == 503);
  CHECK(contains(error.detail, "cancelled while"));
  done.raise();
}

TEST_CASE("the async core completes on the caller's io_context, token last") {
  Server server(http_test::keep_alive([](const auto&) { return std::string("async"); }));
  boost::asio::io_context io;
  mh::Client client(io.get_executor());
  std::thread::id completed_on;
  std::string body;
  std::exception_ptr failure;
  client.async_request(get(server.url()), within(5s),
                       [&](std::exception_ptr error, mh::Response response) {
                         completed_on = std::this_thread::get_id();
                         failure = error;
                         body = response.body;
                       });
  io.run();
  CHECK_FALSE(failure);
  CHECK(body == "async");
  CHECK(completed_on == std::this_thread::get_id());
}

// ---- TLS ---------------------------------------------------------------------------------------

namespace {

// The CA, server and client certificates of test/support, with this test's server settings.
struct Certificates : micro_test::TestCertificates {
  Certificates() : TestCertificates("micro-http") {}
  http_test::ServerTls server(bool demand_client_certificate = false) const {
    return {path("server.pem"), path("server.key"),
            demand_client_certificate ? path("ca.pem") : std::string()};
  }
};

Certificates& certificates() {
  static Certificates made;
  return made;
}

mh::ClientOptions trusting(const std::string& ca, const std::string& cert = {},
                           const std::string& key = {}) {
  mh::ClientOptions options;
  options.tls = mh::make_tls_context(tls_files(ca, cert, key));
  return options;
}

}  // namespace

TEST_CASE("TLS: a server whose certificate chains to the CA and names the host is reached") {
  Server server(http_test::keep_alive([](const auto&) { return std::string("secret"); }),
                certificates().server());
  mh::BlockingClient client(trusting(certificates().path("ca.pem")));
  CHECK(client.request(get(server.url()), within(5s)).body == "secret");
  CHECK(client.request(get(server.url()), within(5s)).body == "secret");
  CHECK(client.statistics().connections_reused == 1);
}

TEST_CASE("TLS: a certificate for another name is refused") {
  Server server(http_test::keep_alive([](const auto&) { return std::string("x"); }),
                certificates().server());
  mh::BlockingClient client(trusting(certificates().path("ca.pem")));
  // The certificate names IP 127.0.0.1; "localhost" reaches the same server by another name.
  const auto url = server.url("/", "localhost");
  const auto error = error_of([&] { client.request(get(url), within(5s)); });
  CHECK(error.code == 503);
  CHECK(contains(error.detail, "TLS handshake with localhost:"));
  CHECK(contains(error.detail, "server certificate rejected: hostname mismatch"));
}

TEST_CASE("TLS: a server certificate from a CA not trusted is refused") {
  Server server(http_test::keep_alive([](const auto&) { return std::string("x"); }),
                certificates().server());
  mh::BlockingClient client(trusting(certificates().path("other-ca.pem")));
  const auto error = error_of([&] { client.request(get(server.url()), within(5s)); });
  CHECK(error.code == 503);
  CHECK(contains(error.detail,
                 "server certificate rejected: unable to get local issuer certificate"));
}

TEST_CASE("TLS: a client certificate is presented when the server demands one") {
  Server server(http_test::keep_alive([](const auto&) { return std::string("known"); }),
                certificates().server(true));
  mh::BlockingClient with(trusting(certificates().path("ca.pem"), certificates().path("client.pem"),
                                   certificates().path("client.key")));
  CHECK(with.request(get(server.url()), within(5s)).body == "known");
  mh::BlockingClient without(trusting(certificates().path("ca.pem")));
  const auto error = error_of([&] { without.request(get(server.url()), within(5s)); });
  CHECK(error.code == 503);
  CHECK(contains(error.detail, "127.0.0.1:"));
}

TEST_CASE("TLS: files that cannot be used are named") {
  auto detail = [](const mh::TlsOptions& options) {
    return error_of([&] { mh::make_tls_context(options); }).detail;
  };
  CHECK(detail(tls_files("/nonexistent/ca.pem")) ==
        "cannot use tls_ca \"/nonexistent/ca.pem\": cannot open the file");
  auto named = tls_files("/nonexistent/ca.pem");
  named.ca_name = "OTEL_EXPORTER_OTLP_CERTIFICATE";
  CHECK(detail(named) ==
        "cannot use OTEL_EXPORTER_OTLP_CERTIFICATE \"/nonexistent/ca.pem\": cannot open the file");
  CHECK(detail(tls_files("", certificates().path("client.pem"))) ==
        "tls_cert and tls_key go together: give both or neither");
  CHECK(
      detail(tls_files("", certificates().path("client.pem"), certificates().path("server.key"))) ==
      "cannot use tls_key \"" + certificates().path("server.key") + "\": key values mismatch");
  CHECK(detail(tls_files(certificates().path("client.ext")))
            .starts_with("cannot use tls_ca \"" + certificates().path("client.ext") + "\": "));
  CHECK(error_of([] { mh::make_tls_context(tls_files("/nonexistent")); }).code == 400);
}
