// The metrics registry (<micro/metrics.hpp>) and its expositions, and the admin helpers
// (<micro/admin.hpp>): names refused, label values escaped, histograms cumulative, OpenMetrics
// exemplars, negotiation, quantiles, redaction, constant-time compare.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <micro/admin.hpp>
#include <micro/metrics.hpp>

using namespace micro;

namespace {
bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}
}  // namespace

TEST_CASE("names: metric and label names follow the Prometheus grammar") {
  CHECK(metrics::valid_metric_name("micro_requests_total"));
  CHECK(metrics::valid_metric_name("a:b_c"));
  CHECK_FALSE(metrics::valid_metric_name("1abc"));
  CHECK_FALSE(metrics::valid_metric_name("micro-requests"));
  CHECK_FALSE(metrics::valid_metric_name(""));
  CHECK(metrics::valid_label_name("endpoint"));
  CHECK_FALSE(metrics::valid_label_name("__name"));
  CHECK_FALSE(metrics::valid_label_name("a:b"));

  metrics::Registry registry;
  CHECK_THROWS_WITH_AS(registry.counter("requests", "h"), "counter 'requests' must end in _total",
                       std::invalid_argument);
  CHECK_THROWS_AS(registry.gauge("bad name", "h"), std::invalid_argument);
  CHECK_THROWS_AS(registry.histogram("h_seconds", "h", {"le"}), std::invalid_argument);
  CHECK_THROWS_AS(registry.gauge("g", "h", {"a", "a"}), std::invalid_argument);
  CHECK_THROWS_AS(registry.histogram("h_seconds", "h", {}, {1, 0.5}), std::invalid_argument);
  CHECK_THROWS_AS(registry.histogram("h_seconds", "h", {}, {1, INFINITY}), std::invalid_argument);
  auto& first = registry.counter("x_total", "h", {"a"});
  CHECK(&registry.counter("x_total", "h", {"a"}) == &first);  // the same family again
  CHECK_THROWS_AS(registry.counter("x_total", "h", {"b"}), std::invalid_argument);
  CHECK_THROWS_AS(registry.gauge("x_total", "h", {"a"}), std::invalid_argument);
  CHECK_THROWS_WITH_AS(first.with({"1", "2"}), "metric 'x_total' has 1 label(s), given 2 value(s)",
                       std::invalid_argument);
}

TEST_CASE("label values: backslash, quote and newline escaped; bad UTF-8 replaced") {
  CHECK(metrics::escape_label_value("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
  CHECK(metrics::escape_label_value("grüße") == "grüße");
  CHECK(metrics::escape_label_value(std::string("x\xff") + "y") == "x\xEF\xBF\xBDy");
  CHECK(metrics::escape_label_value("\xC3") == "\xEF\xBF\xBD");  // cut short
  CHECK(metrics::escape_label_value("\xED\xA0\x80") ==           // a surrogate
        "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(metrics::escape_label_value("") == "");

  metrics::Registry registry;
  registry.counter("odd_total", "help with \\ and\nnewline", {"path"})
      .with({"/a\"b\\c\nd{}=,"})
      .add(2);
  std::string text = registry.expose();
  CHECK(contains(text, "# HELP odd_total help with \\\\ and\\nnewline\n"));
  CHECK(contains(text, "# TYPE odd_total counter\n"));
  CHECK(contains(text, "odd_total{path=\"/a\\\"b\\\\c\\nd{}=,\"} 2\n"));
}

TEST_CASE("values: shortest decimal, infinities and NaN spelled as Prometheus does") {
  CHECK(metrics::format_value(0.1) == "0.1");
  CHECK(metrics::format_value(3) == "3");
  CHECK(metrics::format_value(INFINITY) == "+Inf");
  CHECK(metrics::format_value(-INFINITY) == "-Inf");
  CHECK(metrics::format_value(NAN) == "NaN");
}

TEST_CASE("counters and gauges: counted from many threads, exposed sorted") {
  metrics::Registry registry;
  auto& counter = registry.counter("b_total", "b", {"k"});
  auto& gauge = registry.gauge("a_gauge", "a");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) counter.with({"x"}).add();
      gauge.with({}).add(0.5);
    });
  for (auto& thread : threads) thread.join();
  CHECK(counter.with({"x"}).value() == 40000);
  std::string text = registry.expose();
  CHECK(text.find("a_gauge 2\n") != std::string::npos);
  CHECK(text.find("# TYPE a_gauge") < text.find("# TYPE b_total"));
  CHECK(contains(text, "b_total{k=\"x\"} 40000\n"));
}

TEST_CASE("histograms: cumulative buckets with le, +Inf, _sum and _count") {
  metrics::Registry registry;
  auto& histogram = registry.histogram("d_seconds", "d", {"e"}, {0.1, 0.5, 1});
  auto& cell = histogram.with({"E"});
  for (double value : {0.05, 0.1, 0.3, 0.7, 2.0}) cell.observe(value);
  cell.observe(NAN);  // ignored
  std::string text = registry.expose();
  CHECK(contains(text, "# TYPE d_seconds histogram\n"));
  CHECK(contains(text, "d_seconds_bucket{e=\"E\",le=\"0.1\"} 2\n"));  // 0.1 counts in le=0.1
  CHECK(contains(text, "d_seconds_bucket{e=\"E\",le=\"0.5\"} 3\n"));
  CHECK(contains(text, "d_seconds_bucket{e=\"E\",le=\"1\"} 4\n"));
  CHECK(contains(text, "d_seconds_bucket{e=\"E\",le=\"+Inf\"} 5\n"));
  CHECK(contains(text, "d_seconds_sum{e=\"E\"} 3.15\n"));
  CHECK(contains(text, "d_seconds_count{e=\"E\"} 5\n"));
  auto snapshot = cell.snapshot();
  CHECK(snapshot.counts == std::vector<std::uint64_t>{2, 1, 1, 1});
}

TEST_CASE("OpenMetrics: counter family without _total, exemplars with trace ids, # EOF") {
  metrics::Registry registry;
  registry.counter("r_total", "r").with({}).add(3);
  auto& cell = registry.histogram("l_seconds", "l", {}, {0.1, 1}).with({});
  cell.observe(0.05, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
  cell.observe(0.5);
  cell.observe(0.6, "00000000000000000000000000000000", "b7ad6b7169203331");  // invalid: none
  std::string text = registry.expose(metrics::Format::openmetrics);
  CHECK(contains(text, "# TYPE r counter\n"));
  CHECK(contains(text, "r_total 3\n"));
  CHECK(contains(text,
                 "l_seconds_bucket{le=\"0.1\"} 1 # {trace_id=\"0af7651916cd43dd8448eb211c80319c\""
                 ",span_id=\"b7ad6b7169203331\"} 0.05 "));
  CHECK(contains(text, "l_seconds_bucket{le=\"1.0\"} 3\n"));
  CHECK(text.ends_with("# EOF\n"));
  // The text format has no exemplars and no EOF.
  std::string plain = registry.expose();
  CHECK_FALSE(contains(plain, "trace_id"));
  CHECK_FALSE(contains(plain, "# EOF"));
}

TEST_CASE("negotiation: OpenMetrics only when asked for and not refused") {
  CHECK(metrics::negotiate("") == metrics::Format::prometheus_text);
  CHECK(metrics::negotiate("text/plain;version=0.0.4") == metrics::Format::prometheus_text);
  CHECK(metrics::negotiate("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4") ==
        metrics::Format::openmetrics);
  CHECK(metrics::negotiate("text/plain, application/openmetrics-text;q=0") ==
        metrics::Format::prometheus_text);
  CHECK(metrics::content_type(metrics::Format::openmetrics)
            .starts_with("application/openmetrics-text; version=1.0.0"));
}

TEST_CASE("collectors: sampled at scrape time, removed with their registration") {
  metrics::Registry registry;
  double open = 3;
  {
    auto registration = registry.add_collector([&](metrics::Collector& collector) {
      collector.gauge("conn_open", "open", {{"transport", "tcp"}}, open);
      collector.counter("not_a_counter", "refused: no _total", {}, 1);
      collector.gauge("bad name", "refused", {}, 1);
    });
    std::string text = registry.expose();
    CHECK(contains(text, "# TYPE conn_open gauge\nconn_open{transport=\"tcp\"} 3\n"));
    CHECK_FALSE(contains(text, "not_a_counter"));
    CHECK_FALSE(contains(text, "bad name"));
  }
  CHECK_FALSE(contains(registry.expose(), "conn_open"));
}

TEST_CASE("the admin helpers: quantiles, redaction, constant-time compare") {
  std::vector<double> bounds{0.1, 0.2, 0.4};
  CHECK(std::isnan(admin::bucket_quantile(0.5, bounds, {0, 0, 0, 0})));
  CHECK(admin::bucket_quantile(0.5, bounds, {0, 10, 0, 0}) == doctest::Approx(0.15));
  CHECK(admin::bucket_quantile(0.99, bounds, {0, 0, 0, 5}) == doctest::Approx(0.4));
  CHECK(admin::bucket_quantile(0.25, bounds, {4, 4, 0, 0}) == doctest::Approx(0.05));

  CHECK(admin::redact_secrets("admin_token=abc registry=etcd") == "admin_token=*** registry=etcd");
  CHECK(admin::redact_secrets("broker=nats://u:pw@h:4222?token=t&x=1") ==
        "broker=nats://u:***@h:4222?token=***&x=1");
  CHECK(admin::redact_secrets("wrappers=auth?key=s3cret,log") == "wrappers=auth?key=***,log");
  CHECK(admin::redact_secrets("transport=tcp?tls_key_file=/k.pem") ==
        "transport=tcp?tls_key_file=/k.pem");
  CHECK(admin::redact_secrets("registry=etcd://h:2379") == "registry=etcd://h:2379");

  CHECK(admin::constant_time_equal("secret", "secret"));
  CHECK_FALSE(admin::constant_time_equal("secret", "secreT"));
  CHECK_FALSE(admin::constant_time_equal("secret", "secret1"));
  CHECK_FALSE(admin::constant_time_equal("", "x"));
}
