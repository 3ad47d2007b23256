#!/usr/bin/python3
"""Throughput of Buildbot's own in-process MQ, buildbot.mq.simple.SimpleMQ.

The counterpart of livestate_bench (bench/simple_mq_bench.cpp): the same four
cases, the same key and body, the same per-consumer counting callbacks and the
same verification, printed as the same JSON lines, so that bench/compare.sh
can print the ratios. Run it with Debian's /usr/bin/python3, which has the
python3-buildbot package:

    /usr/bin/python3 bench/buildbot_simplemq.py [--quick] [--case NAME] [--reps N] [--seconds S]

Cases (the produced key is always ("buildrequests", "42", "claimed")):
  exact_1       1 consumer, filter ("buildrequests", "42", "claimed")      messages/s
  exact_100     100 consumers, ("buildrequests", str(i), "claimed")      messages/s
  exact_10000   10,000 consumers, the same                               messages/s
  wildcard_100  100 consumers, ("buildrequests", None, "claimed")        deliveries/s

When Buildbot is not installed it says so in one line and exits 0.
"""

import argparse
import json
import statistics
import sys
import time

try:
    import buildbot
    from buildbot.mq.simple import SimpleMQ
except ImportError:
    print("Buildbot is not installed for /usr/bin/python3 (apt-get install python3-buildbot); "
          "the Buildbot comparison is skipped.")
    sys.exit(0)

PRODUCED_ID = 42  # the "42" in the produced key

CASES = [
    # name, unit, consumers, wildcard
    ("exact_1", "messages/s", 1, False),
    ("exact_100", "messages/s", 100, False),
    ("exact_10000", "messages/s", 10000, False),
    ("wildcard_100", "deliveries/s", 100, True),
]


def make_body():
    """A realistic Buildbot build request body (buildrequests.42.claimed)."""
    return {
        "buildrequestid": 42,
        "buildsetid": 7,
        "builderid": 3,
        "priority": 0,
        "claimed": True,
        "claimed_at": 1795838741.2,
        "claimed_by_masterid": 1,
        "complete": False,
        "results": -1,
        "submitted_at": 1795838740.0,
        "complete_at": None,
        "waited_for": False,
        "properties": None,
    }


def make_callback(count):
    """The minimum real work: increment this consumer's counter."""
    def callback(routing_key, data):
        count[0] += 1
    return callback


class Bench:
    def __init__(self, name, consumers, wildcard):
        self.name = name
        self.consumers = consumers
        self.wildcard = wildcard
        self.mq = SimpleMQ()  # needs no master to produce and consume
        self.key = ("buildrequests", "42", "claimed")
        self.body = make_body()
        self.counts = [[0] for _ in range(consumers)]
        self.expected = [0] * consumers
        self.qrefs = []
        for i in range(consumers):
            if wildcard:
                filter_ = ("buildrequests", None, "claimed")
            else:
                filter_ = ("buildrequests", str(self.filter_id(i)), "claimed")
            d = self.mq.startConsuming(make_callback(self.counts[i]), filter_)
            # startConsuming returns a Deferred that has already fired.
            got = []
            d.addCallback(got.append)
            if not got:
                raise RuntimeError(f"{name}: startConsuming's Deferred has not fired")
            self.qrefs.append(got[0])

    def filter_id(self, i):
        # The single consumer of exact_1 uses the produced key itself.
        return PRODUCED_ID if self.consumers == 1 else i

    def matches(self, i):
        return self.wildcard or self.filter_id(i) == PRODUCED_ID

    def deliveries_per_message(self):
        return sum(1 for i in range(self.consumers) if self.matches(i))

    def run(self, iterations):
        """Produces `iterations` messages; returns the elapsed seconds, after
        checking every consumer's counter (raises when one is wrong)."""
        produce = self.mq.produce
        key = self.key
        body = self.body
        loop = range(iterations)
        start = time.perf_counter()
        for _ in loop:
            produce(key, body)
        elapsed = time.perf_counter() - start
        for i in range(self.consumers):
            if self.matches(i):
                self.expected[i] += iterations
        for i in range(self.consumers):
            if self.counts[i][0] != self.expected[i]:
                raise RuntimeError(f"{self.name}: consumer {i} got {self.counts[i][0]} messages, "
                                   f"expected {self.expected[i]}")
        return elapsed


def run_case(name, unit, consumers, wildcard, args):
    bench = Bench(name, consumers, wildcard)
    per_message = consumers if wildcard else 1
    if bench.deliveries_per_message() != per_message:
        raise RuntimeError(f"{name}: the produced key matches {bench.deliveries_per_message()} "
                           f"consumers, not {per_message}")
    if args.quick:
        bench.run(10)  # warm-up
        iterations = 100 if consumers >= 1000 else 1000
    else:
        # Warm-up and calibration: double the batch until one lasts 0.1 s (or a
        # third of a repetition), then size repetitions from that batch's rate.
        target = min(0.1, args.seconds / 3)
        batch = 1
        elapsed = bench.run(batch)
        while elapsed < target:
            batch *= 2
            elapsed = bench.run(batch)
        iterations = max(1, round(batch / elapsed * args.seconds))
    reps = []
    for _ in range(args.reps):
        elapsed = bench.run(iterations)
        reps.append(iterations * per_message / elapsed)
    line = {
        "impl": f"buildbot-{buildbot.version}",
        "case": name,
        "unit": unit,
        "median": statistics.median(reps),
        "reps": reps,
        "iterations": iterations,
    }
    print(json.dumps(line), flush=True)


def positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"wants a positive number, not {text!r}")
        return value
    return parse


def main():
    parser = argparse.ArgumentParser(description="Buildbot SimpleMQ throughput, as livestate_bench")
    parser.add_argument("--quick", action="store_true",
                        help="tiny iteration counts and one repetition (a smoke test)")
    parser.add_argument("--case", choices=[c[0] for c in CASES], help="run only this case")
    parser.add_argument("--reps", type=positive(int), default=5, help="repetitions (default 5)")
    parser.add_argument("--seconds", type=positive(float), default=0.3,
                        help="seconds per repetition (default 0.3)")
    args = parser.parse_args()
    if args.quick:
        args.reps = 1
    try:
        for name, unit, consumers, wildcard in CASES:
            if args.case and args.case != name:
                continue
            run_case(name, unit, consumers, wildcard, args)
    except RuntimeError as error:
        print(f"buildbot_simplemq.py: FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
