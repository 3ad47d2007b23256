// livestate_bench: throughput of the in-process connector (make_simple_mq()),
// case for case the same as bench/buildbot_simplemq.py measures for Buildbot's
// own buildbot.mq.simple.SimpleMQ, so that bench/compare.sh can print ratios.
//
// Cases (the produced key is always ("buildrequests", "42", "claimed")):
//   exact_1       1 consumer, filter ("buildrequests", "42", "claimed")      messages/s
//   exact_100     100 consumers, ("buildrequests", str(i), "claimed")      messages/s
//   exact_10000   10,000 consumers, the same                               messages/s
//   wildcard_100  100 consumers, ("buildrequests", *, "claimed")           deliveries/s
//
// The key and the body are built before the timed loop and passed by const
// reference. Each consumer's callback increments its own captured counter;
// after every timed run the counters are checked against what the case must
// deliver, and the program fails (exit 1) when they differ.
//
// Each case: a warm-up that also calibrates the number of iterations so one
// repetition lasts about --seconds (0.3 s), then --reps repetitions (7); it
// prints one JSON line with the median rate and every repetition's rate.
//
// Usage: livestate_bench [--quick] [--case NAME] [--reps N] [--seconds S]
//   --quick  tiny iteration counts and one repetition: a smoke test that it
//            runs and delivers what it must (the rates mean nothing).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "claim_body.hpp"
#include "livestate/core/filter.hpp"
#include "livestate/core/json.hpp"
#include "livestate/core/routing_key.hpp"
#include "livestate/mq/simple_mq.hpp"

namespace {

using livestate::Filter;
using livestate::Json;
using livestate::RoutingKey;
using Clock = std::chrono::steady_clock;

struct CaseSpec {
  std::string_view name;
  std::string_view unit;
  std::size_t consumers;
  bool wildcard;  // every consumer ("buildrequests", *, "claimed"), else ("buildrequests", str(i), "claimed")
};

constexpr CaseSpec cases[] = {
    {"exact_1", "messages/s", 1, false},
    {"exact_100", "messages/s", 100, false},
    {"exact_10000", "messages/s", 10000, false},
    {"wildcard_100", "deliveries/s", 100, true},
};

constexpr std::size_t produced_id = 42;  // the "42" in the produced key

struct Options {
  bool quick = false;
  std::optional<std::string> only_case;
  int reps = 7;
  double seconds = 0.3;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "livestate_bench: " << message
            << "\nusage: livestate_bench [--quick] [--case NAME] [--reps N] [--seconds S]\n";
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options options;
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) usage_error(std::string(arg) + " needs a value");
      return std::string(args[++i]);
    };
    if (arg == "--quick") {
      options.quick = true;
    } else if (arg == "--case") {
      options.only_case = value();
      const bool known = std::any_of(std::begin(cases), std::end(cases),
                                     [&](const CaseSpec& c) { return c.name == *options.only_case; });
      if (!known) usage_error("unknown case \"" + *options.only_case + "\"");
    } else if (arg == "--reps") {
      const std::string text = value();
      try {
        options.reps = std::stoi(text);
      } catch (const std::exception&) {
        usage_error("--reps wants a positive integer, not \"" + text + "\"");
      }
      if (options.reps < 1) usage_error("--reps wants a positive integer");
    } else if (arg == "--seconds") {
      const std::string text = value();
      try {
        options.seconds = std::stod(text);
      } catch (const std::exception&) {
        usage_error("--seconds wants a positive number, not \"" + text + "\"");
      }
      if (!(options.seconds > 0)) usage_error("--seconds wants a positive number");
    } else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: livestate_bench [--quick] [--case NAME] [--reps N] [--seconds S]\n"
                   "cases: exact_1 exact_100 exact_10000 wildcard_100\n";
      std::exit(0);
    } else {
      usage_error("unknown argument \"" + std::string(arg) + "\"");
    }
  }
  if (options.quick) options.reps = 1;
  return options;
}

class Bench {
 public:
  explicit Bench(const CaseSpec& spec)
      : m_spec(spec),
        m_mq(livestate::mq::make_simple_mq()),
        m_key{"buildrequests", "42", "claimed"},
        m_body(livestate::bench::claim_body()),
        m_counts(spec.consumers, 0),
        m_expected(spec.consumers, 0) {
    m_consumers.reserve(spec.consumers);
    for (std::size_t i = 0; i < spec.consumers; ++i) {
      std::uint64_t* count = &m_counts[i];
      Filter filter = spec.wildcard ? Filter{"buildrequests", std::nullopt, "claimed"}
                                    : Filter{"buildrequests", std::to_string(filter_id(i)), "claimed"};
      m_consumers.push_back(
          m_mq->start_consuming([count](const RoutingKey&, const Json&) { ++*count; }, std::move(filter)));
    }
  }

  // The element of consumer i's exact filter: i, except that the single
  // consumer of exact_1 uses the produced key itself.
  [[nodiscard]] std::size_t filter_id(std::size_t i) const { return m_spec.consumers == 1 ? produced_id : i; }
  [[nodiscard]] bool matches(std::size_t i) const { return m_spec.wildcard || filter_id(i) == produced_id; }

  [[nodiscard]] std::uint64_t deliveries_per_message() const {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < m_spec.consumers; ++i) n += matches(i) ? 1 : 0;
    return n;
  }

  // Produces `iterations` messages; returns the elapsed seconds. Then checks
  // every consumer's counter and throws when one is wrong.
  double run(std::uint64_t iterations) {
    const RoutingKey& key = m_key;
    const Json& body = m_body;
    livestate::mq::Connector& mq = *m_mq;
    const auto start = Clock::now();
    for (std::uint64_t i = 0; i < iterations; ++i) mq.produce(key, body);
    const auto stop = Clock::now();
    account(iterations);
    verify();
    return std::chrono::duration<double>(stop - start).count();
  }

 private:
  void account(std::uint64_t iterations) {
    for (std::size_t i = 0; i < m_spec.consumers; ++i) {
      if (matches(i)) m_expected[i] += iterations;
    }
  }

  void verify() const {
    for (std::size_t i = 0; i < m_spec.consumers; ++i) {
      if (m_counts[i] != m_expected[i]) {
        throw std::runtime_error(std::string(m_spec.name) + ": consumer " + std::to_string(i) + " got " +
                                 std::to_string(m_counts[i]) + " messages, expected " + std::to_string(m_expected[i]));
      }
    }
    const auto stats = m_mq->stats();
    std::uint64_t total = 0;
    for (auto expected : m_expected) total += expected;
    if (stats.delivered != total || stats.callback_errors != 0) {
      throw std::runtime_error(std::string(m_spec.name) + ": connector reports " + std::to_string(stats.delivered) +
                               " deliveries and " + std::to_string(stats.callback_errors) +
                               " callback errors, expected " + std::to_string(total) + " and 0");
    }
  }

  const CaseSpec& m_spec;
  std::unique_ptr<livestate::mq::Connector> m_mq;
  const RoutingKey m_key;
  const Json m_body;
  std::vector<std::uint64_t> m_counts;    // one per consumer, written by its callback
  std::vector<std::uint64_t> m_expected;  // what each consumer must have got
  std::vector<std::unique_ptr<livestate::mq::Consumer>> m_consumers;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

void run_case(const CaseSpec& spec, const Options& options) {
  Bench bench(spec);
  const std::uint64_t expected_per_message = spec.wildcard ? spec.consumers : 1;
  if (bench.deliveries_per_message() != expected_per_message) {
    throw std::logic_error(std::string(spec.name) + ": the produced key matches " +
                           std::to_string(bench.deliveries_per_message()) + " consumers, not " +
                           std::to_string(expected_per_message));
  }
  const double per_message = static_cast<double>(expected_per_message);

  std::uint64_t iterations = 0;
  if (options.quick) {
    bench.run(10);  // warm-up
    iterations = spec.consumers >= 1000 ? 100 : 1000;
  } else {
    // Warm-up and calibration: double the batch until one lasts 0.1 s (or a
    // third of a repetition), then size repetitions from that batch's rate.
    const double warmup_target = std::min(0.1, options.seconds / 3);
    std::uint64_t batch = 1;
    double elapsed = bench.run(batch);
    while (elapsed < warmup_target) {
      batch *= 2;
      elapsed = bench.run(batch);
    }
    const double rate = static_cast<double>(batch) / elapsed;
    iterations = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::llround(rate * options.seconds)));
  }

  std::vector<double> reps;
  for (int r = 0; r < options.reps; ++r) {
    const double elapsed = bench.run(iterations);
    reps.push_back(static_cast<double>(iterations) * per_message / elapsed);
  }
  // In the order compare.sh and a reader expect: impl, case, unit, median, reps, iterations.
  const nlohmann::ordered_json line{{"impl", "livestate"},    {"case", spec.name}, {"unit", spec.unit},
                                    {"median", median(reps)}, {"reps", reps},      {"iterations", iterations}};
  std::cout << line.dump() << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  try {
    for (const CaseSpec& spec : cases) {
      if (options.only_case && *options.only_case != spec.name) continue;
      run_case(spec, options);
    }
  } catch (const std::exception& error) {
    std::cerr << "livestate_bench: FAILED: " << error.what() << '\n';
    return 1;
  }
  return 0;
}
