// The process-wide lease keep-alive stream against a real etcd: 50 registry objects keep their
// nodes alive past several TTLs over one stream (and open no other connection meanwhile); the
// stream closes with the last lease; a member killed under the stream moves it to the next
// endpoint without losing a lease; a lease revoked on the server makes its node re-register;
// keepalive=batch (one request per interval for the whole process) keeps leases alive too.
#include <doctest/doctest.h>

#include <map>

#include <nlohmann/json.hpp>

#include <micro/registry.hpp>

#include "registry/etcd/etcd_fixture.hpp"
#include "registry/registry_test_support.hpp"

using namespace registry_test;
using etcd_test::EtcdCluster;
using etcd_test::keepalive_statistics;
using etcd_test::make_registry;
using etcd_test::node_count;

namespace {

// Key → {mod_revision, lease} of every key under `prefix`, as etcdctl reads it. An unchanged
// mod_revision means nobody re-put the node; an unchanged lease that it was never re-granted.
std::map<std::string, std::pair<std::int64_t, std::int64_t>> key_revisions(
    EtcdCluster& etcd, const std::string& prefix) {
  const auto output = etcd.etcdctl("get --prefix " + prefix + " -w json");
  const auto json = nlohmann::json::parse(output, nullptr, false);
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> revisions;
  if (!json.is_object()) return revisions;
  for (const auto& kv : json.value("kvs", nlohmann::json::array())) {
    revisions[kv.value("key", "")] = {kv.value("mod_revision", std::int64_t{0}),
                                      kv.value("lease", std::int64_t{0})};
  }
  return revisions;
}

// The address with member `first` first (a registry's keep-alive stream starts there).
std::string address_starting_with(EtcdCluster& cluster, std::size_t first) {
  std::string address = cluster.member(first).client_endpoint();
  for (std::size_t index = 0; index < cluster.size(); ++index) {
    if (index != first) address += "," + cluster.member(index).client_endpoint();
  }
  return address;
}

// Waits (bounded) until the keep-alive stream answered `count` more leases than `since`.
bool wait_for_answers(std::uint64_t since, std::uint64_t count, std::chrono::milliseconds timeout) {
  return wait_until([&] { return keepalive_statistics().answers >= since + count; }, timeout);
}

// Revokes `lease` with etcdctl, then waits until the first key under `prefix` is back under
// another lease with `keys` keys in all (the registry noticed and re-registered).
bool revoke_and_wait_for_new_lease(EtcdCluster& etcd, const std::string& prefix, std::int64_t lease,
                                   std::size_t keys) {
  char hexadecimal[32];
  std::snprintf(hexadecimal, sizeof(hexadecimal), "%llx", static_cast<unsigned long long>(lease));
  const std::string revoked = etcd.etcdctl(std::string("lease revoke ") + hexadecimal);
  INFO(revoked);
  return wait_until(
      [&] {
        const auto now = key_revisions(etcd, prefix);
        return now.size() == keys && now.begin()->second.second != 0 &&
               now.begin()->second.second != lease;
      },
      10s);
}

}  // namespace

TEST_CASE("etcd keep-alive: 50 registries share one stream and keep 100 leases past 3 TTLs") {
  EtcdCluster etcd;
  const std::string prefix = etcd_test::unique_prefix();
  constexpr int registry_count = 50;
  constexpr int nodes_each = 2;
  constexpr int leases = registry_count * nodes_each;
  // The stream of an earlier test in this process must be gone (it closes with its last lease).
  REQUIRE(wait_until([] { return keepalive_statistics().streams_open == 0; }, 5s));

  std::vector<std::shared_ptr<micro::Registry>> registries;
  for (int index = 0; index < registry_count; ++index) {
    registries.push_back(make_registry(etcd.address(), {{"ttl", "2s"}, {"prefix", prefix}}));
    const std::string id = std::to_string(index);
    // TTL 0: each node is kept alive until deregistered, with no refresh from its owner.
    registries.back()->register_service(
        make_service("keepalive.service" + id, "1", {"node-" + id + "-a", "node-" + id + "-b"}),
        {});
  }
  const auto before = keepalive_statistics();
  const auto revisions = key_revisions(etcd, prefix);
  REQUIRE(revisions.size() == static_cast<std::size_t>(leases));
  // Registering used pooled connections; from now on only the keep-alive stream talks.
  const auto connections = etcd_test::connections_to(etcd.member(0).client_port());

  // Three keep-alives per lease per TTL: 10 answers each is more than three TTLs (6s).
  REQUIRE(wait_for_answers(before.answers, 10 * leases, 30s));
  const auto after = keepalive_statistics();
  CHECK(after.streams_open == 1);
  CHECK(after.streams_opened - before.streams_opened <= 1);  // opened with the first lease
  CHECK(after.leases_lost == before.leases_lost);
  CHECK(etcd_test::connections_to(etcd.member(0).client_port()) <= connections);
  // The registries share their call client too: the stream and one pooled connection.
  CHECK(connections <= 2);
  // Every node is still there under the lease it was first put with.
  CHECK(key_revisions(etcd, prefix) == revisions);
  auto reader = make_registry(etcd.address(), {{"prefix", prefix}});
  for (int index = 0; index < registry_count; ++index) {
    CHECK(node_count(*reader, "keepalive.service" + std::to_string(index)) == nodes_each);
  }

  // The stream closes with the last lease: registries dropped without deregistering (a crash,
  // as far as etcd knows) stop renewing.
  registries.clear();
  CHECK(wait_until([] { return keepalive_statistics().streams_open == 0; }, 5s));
  CHECK(wait_until([&] { return key_revisions(etcd, prefix).empty(); }, 10s));
}

TEST_CASE("etcd keep-alive: a member killed under the stream; it moves on and leases survive") {
  EtcdCluster cluster(3);
  const std::string prefix = etcd_test::unique_prefix();
  REQUIRE(wait_until([] { return keepalive_statistics().streams_open == 0; }, 5s));
  // The stream starts on the registry's first endpoint: the member to kill.
  const std::size_t victim = 0;
  auto registry = make_registry(address_starting_with(cluster, victim),
                                {{"ttl", "3s"}, {"prefix", prefix}, {"request_timeout", "2s"}});
  for (int index = 0; index < 5; ++index) {
    registry->register_service(make_service("survivor", "1", {"node-" + std::to_string(index)}),
                               {});
  }
  const auto first = keepalive_statistics();
  REQUIRE(wait_for_answers(first.answers, 5, 10s));  // the stream is up and answering
  const auto revisions = key_revisions(cluster, prefix);
  REQUIRE(revisions.size() == 5);

  cluster.member(victim).kill();
  const auto killed = keepalive_statistics();
  // Three more rounds of answers (more than a TTL) through another member.
  REQUIRE(wait_for_answers(killed.answers, 15, 20s));
  const auto after = keepalive_statistics();
  CHECK(after.streams_opened > killed.streams_opened);  // reconnected
  // (It may be reconnecting once more right now: a survivor that briefly lost its leader to
  // the election ends the stream, as the keeper asks it to.)
  CHECK(wait_until([] { return keepalive_statistics().streams_open == 1; }, 10s));
  CHECK(keepalive_statistics().batches_sent == first.batches_sent);  // no fallback to batches
  CHECK(after.leases_lost == first.leases_lost);
  CHECK(key_revisions(cluster, prefix) == revisions);  // no node re-put, no lease re-granted
  CHECK(node_count(*registry, "survivor") == 5);
}

TEST_CASE("etcd keep-alive: a lease revoked on the server makes its node re-register") {
  EtcdCluster etcd;
  const std::string prefix = etcd_test::unique_prefix();
  auto registry = make_registry(etcd.address(), {{"ttl", "2s"}, {"prefix", prefix}});
  registry->register_service(make_service("revoked", "1", {"node-1"}), {});
  const auto revisions = key_revisions(etcd, prefix);
  REQUIRE(revisions.size() == 1);
  const auto [key, revision_and_lease] = *revisions.begin();
  const std::int64_t lease = revision_and_lease.second;
  REQUIRE(lease != 0);
  const auto before = keepalive_statistics();

  // The next keep-alive hears TTL 0; the registry puts the node back under a new lease.
  CHECK(revoke_and_wait_for_new_lease(etcd, prefix, lease, 1));
  CHECK(keepalive_statistics().leases_lost > before.leases_lost);
  CHECK(node_count(*registry, "revoked") == 1);
}

TEST_CASE("etcd keep-alive: keepalive=batch sends one request per interval for every registry") {
  EtcdCluster etcd;
  const std::string prefix = etcd_test::unique_prefix();
  const etcd_test::Options options = {{"ttl", "2s"}, {"prefix", prefix}, {"keepalive", "batch"}};
  std::vector<std::shared_ptr<micro::Registry>> registries;
  for (int index = 0; index < 5; ++index) {
    registries.push_back(make_registry(etcd.address(), options));
    const std::string id = std::to_string(index);
    registries.back()->register_service(
        make_service("batched" + id, "1", {"node-" + id + "-a", "node-" + id + "-b"}), {});
  }
  const auto before = keepalive_statistics();
  const auto revisions = key_revisions(etcd, prefix);
  REQUIRE(revisions.size() == 10);
  REQUIRE(wait_for_answers(before.answers, 10 * 10, 30s));  // past three TTLs
  const auto after = keepalive_statistics();
  CHECK(after.streams_opened == before.streams_opened);
  // Leases granted at slightly different times fall due in different batches, but a batch
  // carries several: fewer requests than lease IDs sent.
  CHECK(after.batches_sent > before.batches_sent);
  CHECK(after.batches_sent - before.batches_sent < after.keepalives_sent - before.keepalives_sent);
  CHECK(after.leases_lost == before.leases_lost);
  CHECK(key_revisions(etcd, prefix) == revisions);

  // A lease etcd forgot is noticed by the next batch too.
  const std::int64_t lease = revisions.begin()->second.second;
  CHECK(revoke_and_wait_for_new_lease(etcd, prefix, lease, 10));
}
