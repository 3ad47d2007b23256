#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "livestate/core/error.hpp"
#include "livestate/mq/simple_mq.hpp"

using namespace livestate;
using Keys = std::vector<std::string>;

namespace {
mq::Callback record_into(Keys& keys) {
  return [&keys](const RoutingKey& key, const Json&) { keys.push_back(key.str()); };
}
}  // namespace

TEST_CASE("a persistent consumer gets what it missed, in order, when it resumes") {
  auto mq = mq::make_simple_mq();
  Keys first, second;
  auto consumer = mq->start_consuming(record_into(first), Filter::parse("builds.*.*"), "web");
  mq->produce(RoutingKey{"builds", "1", "new"}, Json::object());
  consumer->stop_consuming();
  mq->produce(RoutingKey{"builds", "1", "finished"}, Json::object());
  mq->produce(RoutingKey{"steps", "1", "new"}, Json::object());  // not for it
  mq->produce(RoutingKey{"builds", "2", "new"}, {{"buildid", 2}});
  CHECK(mq->stats().kept_for_persistent == 2);

  consumer = mq->start_consuming(record_into(second), Filter::parse("builds.*.*"), "web");
  // Delivered before start_consuming returned.
  CHECK(second == Keys{"builds.1.finished", "builds.2.new"});
  mq->produce(RoutingKey{"builds", "2", "finished"}, Json::object());
  CHECK(first == Keys{"builds.1.new"});
  CHECK(second == Keys{"builds.1.finished", "builds.2.new", "builds.2.finished"});
  CHECK(mq->stats().kept_for_persistent == 0);
}

TEST_CASE("a non-persistent consumer started again gets nothing from while it was stopped") {
  auto mq = mq::make_simple_mq();
  Keys got;
  auto consumer = mq->start_consuming(record_into(got), Filter::parse("x"));
  consumer->stop_consuming();
  mq->produce(RoutingKey{"x"}, Json::object());
  consumer = mq->start_consuming(record_into(got), Filter::parse("x"));
  CHECK(got.empty());
}

TEST_CASE("a missed message keeps its body") {
  auto mq = mq::make_simple_mq();
  std::vector<Json> bodies;
  auto callback = [&](const RoutingKey&, const Json& body) { bodies.push_back(body); };
  auto consumer = mq->start_consuming(callback, Filter::parse("x"), "q");
  consumer.reset();
  {
    Json body = {{"claimed", true}, {"_rev", 4}};
    mq->produce(RoutingKey{"x"}, body);
  }
  consumer = mq->start_consuming(callback, Filter::parse("x"), "q");
  REQUIRE(bodies.size() == 1);
  CHECK(bodies[0] == Json{{"claimed", true}, {"_rev", 4}});
}

TEST_CASE("reassigning the handle of a persistent name does not stop the new consumer") {
  auto mq = mq::make_simple_mq();
  Keys got;
  auto consumer = mq->start_consuming(record_into(got), Filter::parse("x.*"), "name");
  consumer->stop_consuming();
  // The old handle is destroyed after the new consumer started: it must not stop it.
  consumer = mq->start_consuming(record_into(got), Filter::parse("x.*"), "name");
  mq->produce(RoutingKey{"x", "1"}, Json::object());
  CHECK(got == Keys{"x.1"});
}

TEST_CASE("a persistent name that is already active is refused") {
  auto mq = mq::make_simple_mq();
  Keys got;
  auto consumer = mq->start_consuming(record_into(got), Filter::parse("x"), "name");
  CHECK_THROWS_WITH_AS(mq->start_consuming(record_into(got), Filter::parse("x"), "name"),
                       "persistent consumer \"name\" is already active; stop it first, or use another name",
                       PersistentNameInUse);
  // The refused attempt left the active one alone.
  mq->produce(RoutingKey{"x"}, Json::object());
  CHECK(got == Keys{"x"});
}

TEST_CASE("a persistent name resumed with another filter is refused, and keeps its messages") {
  auto mq = mq::make_simple_mq();
  Keys got;
  auto consumer = mq->start_consuming(record_into(got), Filter::parse("x.*"), "name");
  consumer.reset();
  mq->produce(RoutingKey{"x", "1"}, Json::object());
  CHECK_THROWS_WITH_AS(mq->start_consuming(record_into(got), Filter::parse("y.*"), "name"),
                       "persistent consumer \"name\" was created with filter x.*, not y.*; resume it with "
                       "the same filter, or use another name",
                       PersistentNameInUse);
  consumer = mq->start_consuming(record_into(got), Filter::parse("x.*"), "name");
  CHECK(got == Keys{"x.1"});
}

TEST_CASE("a persistent consumer stopped from a callback in mid-message keeps that message") {
  auto mq = mq::make_simple_mq();
  Keys got;
  std::unique_ptr<mq::Consumer> persistent;
  auto stopper = mq->start_consuming([&](const RoutingKey&, const Json&) { persistent.reset(); }, Filter::parse("x.1"));
  persistent = mq->start_consuming(record_into(got), Filter::parse("x.*"), "p");
  mq->produce(RoutingKey{"x", "1"}, Json::object());  // stops it before its own turn
  mq->produce(RoutingKey{"x", "2"}, Json::object());
  CHECK(got.empty());
  persistent = mq->start_consuming(record_into(got), Filter::parse("x.*"), "p");
  CHECK(got == Keys{"x.1", "x.2"});
}

TEST_CASE("a persistent consumer resumed inside a callback gets its backlog before newer messages") {
  auto mq = mq::make_simple_mq();
  Keys got;
  auto persistent = mq->start_consuming(record_into(got), Filter::parse("data.*"), "p");
  persistent.reset();
  mq->produce(RoutingKey{"data", "1"}, Json::object());
  mq->produce(RoutingKey{"data", "2"}, Json::object());
  auto resumer = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        mq->produce(RoutingKey{"data", "3"}, Json::object());  // before the resume: kept
        persistent = mq->start_consuming(record_into(got), Filter::parse("data.*"), "p");
        mq->produce(RoutingKey{"data", "4"}, Json::object());  // after: delivered directly
      },
      Filter::parse("resume"));
  mq->produce(RoutingKey{"resume"}, Json::object());
  CHECK(got == Keys{"data.1", "data.2", "data.3", "data.4"});
}

TEST_CASE("a persistent consumer that stops itself while catching up keeps the rest for next time") {
  auto mq = mq::make_simple_mq();
  Keys got;
  std::unique_ptr<mq::Consumer> persistent = mq->start_consuming(record_into(got), Filter::parse("n.*"), "p");
  persistent.reset();
  for (int i = 1; i <= 4; ++i) mq->produce(RoutingKey{"n", std::to_string(i)}, Json::object());
  // Resumed from a callback, so that the handle is assigned before the
  // backlog is delivered and the callback can stop itself through it.
  auto resumer = mq->start_consuming(
      [&](const RoutingKey&, const Json&) {
        persistent = mq->start_consuming(
            [&](const RoutingKey& key, const Json&) {
              got.push_back(key.str());
              if (key[1] == "2") persistent->stop_consuming();
            },
            Filter::parse("n.*"), "p");
      },
      Filter::parse("resume"));
  mq->produce(RoutingKey{"resume"}, Json::object());
  CHECK(got == Keys{"n.1", "n.2"});
  CHECK(mq->stats().kept_for_persistent == 2);
  mq->produce(RoutingKey{"n", "5"}, Json::object());
  persistent = mq->start_consuming(record_into(got), Filter::parse("n.*"), "p");
  CHECK(got == Keys{"n.1", "n.2", "n.3", "n.4", "n.5"});
}

TEST_CASE("two persistent names each keep their own backlog") {
  auto mq = mq::make_simple_mq();
  Keys a, b;
  auto ca = mq->start_consuming(record_into(a), Filter::parse("#"), "a");
  auto cb = mq->start_consuming(record_into(b), Filter::parse("#"), "b");
  ca.reset();
  mq->produce(RoutingKey{"one"}, Json::object());
  cb.reset();
  mq->produce(RoutingKey{"two"}, Json::object());
  ca = mq->start_consuming(record_into(a), Filter::parse("#"), "a");
  cb = mq->start_consuming(record_into(b), Filter::parse("#"), "b");
  CHECK(a == Keys{"one", "two"});
  CHECK(b == Keys{"one", "two"});
}
