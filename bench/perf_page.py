#!/usr/bin/python3
"""Writes one section of docs/PERFORMANCE.md from a benchmark run's output.

    bench/perf_page.py SECTION --binary PATH [--page FILE] [--no-write] < BODY

BODY is what the run printed (Markdown: its tables and notes about this run).
The section gets a fixed paragraph saying what is measured and the targets,
the date (UTC), the machine (CPU, cores, OS, compiler, build type, commit) and
the command that reproduces it, around BODY. It is printed, and replaces the
same section of the page (between its HTML comment markers) unless --no-write
or unless the benchmark PATH is not from a Release build (read from the
CMakeCache.txt of its build directory). The page always holds
every section in the order below; one not measured yet says how to measure
it. The bench/*.sh scripts call this; nobody edits the page by hand.
"""

import argparse
import datetime
import glob
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "PERFORMANCE.md")

HEADER = """\
# Performance

Written by the scripts in `bench/` from their own output, each section by the
script it names; never edited by hand. `bench/run_all.sh` rebuilds the
benchmarks (Release, in `build-release/`) and rewrites the whole page; each
script rewrites its own section. Earlier numbers are in the page's git history.
Ratios compare cases measured in the same run, on the same machine; absolute
numbers move with the machine and its load (the load average is given).
"""

# name: (title, what is measured and the targets, how to reproduce it: Markdown)
SECTIONS = {
    "simplemq": (
        "SimpleMQ against Buildbot's SimpleMQ",
        "Produce-to-delivery throughput of the in-process connector (`livestate_bench`) against "
        "Buildbot 3.7's own `buildbot.mq.simple.SimpleMQ` (`bench/buildbot_simplemq.py`, on Debian's "
        "Python), case for case, in the same run: medians of 7 repetitions for livestate, 5 for "
        "Buildbot, each about 0.3 s; key and body built before the timed loop and passed by reference "
        "on both sides; a callback that counts; every delivery count verified after timing. Targets, "
        "livestate's rate ÷ Buildbot's: 15x with 1 consumer on an exact filter, 300x with 100 "
        "consumers on distinct exact filters of which 1 matches, 10,000x with 10,000 such consumers, "
        "30x with 100 wildcard consumers that all match.",
        "`bench/compare.sh` (Buildbot's side needs Debian's `python3-buildbot`)",
    ),
    "store": (
        "The state store against the raw database",
        "The store's update methods (`store_bench`) beside the same operations made by hand through "
        "the raw driver (sqlite3's C API with the store's settings, libpqxx) on the store's own tables, "
        "so with the same indexes, checking what the store must check: a claim inserts the claim if "
        "the request is incomplete and updates the request; a completion updates the request if the "
        "master holds its claim (on PostgreSQL locking its buildset in the same statement, as "
        "concurrent completions need) and then the buildset if none of its requests is incomplete, "
        "with their worst result; each row's revision and change position set as the store sets "
        "them; one transaction per operation, the cases interleaved in each repetition. (On "
        "PostgreSQL, where they run on the server, the checks nearly double the raw completion's "
        "server CPU, about 30 µs more; without them the same row changes would claim complete "
        "requests and complete other masters'.) On "
        "a temporary SQLite file and on a throwaway PostgreSQL server "
        "(`tests/pg/with-test-postgres.sh`, fsync=off: round-trip and CPU costs, not a durable "
        "disk's); on both, the store's messages are delivered to a consumer through SimpleMQ after "
        "the commit, and the raw driver announces nothing. Every message and every row is checked "
        "after timing. Targets: claiming one build request, and completing one with its buildset, "
        "each cost at most 1.3x the same raw operation, messages included. (An earlier target, 2x a "
        "single-row UPDATE, compared unlike work.) The claim of 100 requests in one call is for "
        "information: the store reads back the rows it changed to announce them, the raw driver "
        "doesn't. On PostgreSQL the store claims in one statement (the claims and the requests' "
        "revisions), the raw driver in two. The store also sends BEGIN with a transaction's first "
        "statement, in one pipeline (libpq's pipeline mode), where the raw driver's libpqxx "
        "transaction sends it on its own: a claim is 2 round trips against 4, a completion 3 against "
        "4. Before that change the completion measured 1.15–1.50x over nine runs.",
        "`bench/store_compare.sh`",
    ),
    "pg": (
        "The PostgreSQL connector against raw pg_notify",
        "On one throwaway server (fsync=off), `pg_notify_bench` runs pgbench sending raw "
        "`SELECT pg_notify(…)` with a payload of the same size, a libpq producer for the raw latency, "
        "and the connector: `produce()`, one message per transaction, and a store transaction of 100 "
        "messages, from 1, 2 and 4 producer threads, each with a connector of its own. One consumer "
        "connector receives everything (one libpq listener for the raw cases); throughput is counted "
        "where messages arrive, latency from send to callback while producers send as fast as they "
        "can; every message sent must arrive. The cases are interleaved in each repetition. Targets: "
        "one message per transaction at ≥ 0.9 times raw pgbench's transactions per second; 100 per "
        "transaction at ≥ 20 times raw's messages per second; a median latency at most 0.2 ms above "
        "raw's.",
        "`bench/pg_compare.sh`",
    ),
    "logical": (
        "The store's writers on each PostgreSQL transport",
        "`logical_bench`: 1, 4, 8 and 16 writer threads, each with a store and a connector of its own, "
        "doing claim-and-complete cycles (two transactions) on build requests of their own, made "
        "before timing; with the store's messages discarded (the ceiling: the store alone), sent with "
        "NOTIFY, and written as logical messages (`transport=logical`); the cases interleaved in each "
        "repetition. Transactions per second are counted by the writers; one consumer connector "
        "follows every claim, and commit-to-callback latency runs from the moment the claim's "
        "commit returned to its callback. Then 4 writers committing store transactions of 100 "
        "messages, one consumer counting them where they arrive. Every message must arrive. On a "
        "throwaway server with durable commits (fsync, synchronous_commit and full_page_writes on), "
        "where NOTIFY's commits wait for each other; then the same on the test harness's settings "
        "(all three off) for reference. Targets, with durable commits: the logical transport at "
        "≥ 0.9 of the ceiling at 16 writers, where NOTIFY is expected near 0.3; at 1 writer, its "
        "median latency within 1 ms of NOTIFY's.",
        "`bench/logical_compare.sh`",
    ),
    "view": (
        "Live views",
        "`view_bench`: applying an in-order message to a loaded live view of 1,000 resources on its "
        "executor (200,000 messages produced through SimpleMQ before the view runs, their application "
        "timed), and the reload queries live views make per message they see when the transport "
        "misbehaves: 20,000 store operations on SQLite (build requests through their lifecycle, some "
        "unclaimed and claimed again; resource updates) followed by two views through a "
        "FaultyConnector that reorders 10% of the messages (window 8) and drops 1% (told as gaps); "
        "the views must end equal to the database. Targets: at most 2 µs to apply a message; at most "
        "5% reload queries (entry reloads and resyncs) per message.",
        "`bench/run_bench.sh view`",
    ),
    "view_scale": (
        "Live views of 10,000 to 1,000,000 entries",
        "`view_scale_bench`: a live view of every build request (every other one claimed, put in "
        "the database through the raw driver), at 10,000, 100,000 and 1,000,000 entries, on SQLite "
        "and on the throwaway PostgreSQL server: the heap the loaded view holds per entry (glibc's "
        "mallinfo2, before and after) against the JSON text of its bodies; its first load against "
        "the raw driver reading the same rows (the store's SELECT, every column of every row); a gap "
        "of 100 missed changes repaired (the time until the view is quiet again, and the rows its "
        "resync read), and the full resync it would otherwise take; an in-order message applied with "
        "a change callback set. Targets, at 1,000,000 entries: at most 2x the JSON text per entry; "
        "the gap repaired in under 50 ms on SQLite and 100 ms on PostgreSQL, reading no more than a "
        "few hundred rows.",
        "`bench/view_scale.sh`",
    ),
    "chaos": (
        "`livestate chaos` as the work grows",
        "`livestate chaos` on a temporary SQLite file (3 masters, 4 builders, the default faults: "
        "reordering, drops told as gaps, duplicates, delays, a partition every second; live views of "
        "every build set, build request, build and step) at 1,000, 4,000 and 16,000 buildsets, "
        "plainly (the backlog of waiting requests grows with the run) and with `--backlog 100`: the "
        "time the masters take to do the work, the time the views take to converge once the faults "
        "stop (until they are quiet and equal to the database), and apart from it the time to confirm "
        "that by comparing every view with the database, per buildset. Target: per buildset, work and "
        "converging at 16,000 within 1.5x of 1,000, every view converged.",
        "`bench/chaos_scale.sh`",
    ),
    "wire": (
        "Decoding a notification",
        "`wire_bench`: what reading a notification's payload costs a PostgreSQL consumer per message, "
        "for a payload of 20 Buildbot claim bodies (a batch) and of one: nlohmann's `Json::parse`; "
        "the library's own reader, `detail::read_json`, which `wire::decode` and the store's JSON "
        "columns use; simdjson building the same nlohmann values (its DOM, dispatched at run time to "
        "the CPU's best kernel, and its On-Demand front end, whose kernel is fixed when the code is "
        "compiled: the portable one under Debian's baseline flags); simdjson's DOM parse alone, "
        "building nothing, as a lower bound; and `wire::decode` whole. Before timing, each reader's "
        "values, number types included, are checked against `Json::parse`'s on the payloads and on "
        "awkward texts. Ratios are to `read_json`'s time (below 1: faster than it). The library keeps "
        "its own reader unless simdjson builds the values clearly faster: simdjson would be a new "
        "dependency, and its DOM cannot tell `-0` from `0` (nlohmann reads the first as a signed "
        "integer, the second as an unsigned one), so that text holding a bare `-0` would need "
        "another reader.",
        "`bench/run_bench.sh wire`",
    ),
}


def wrap(paragraph):
    return textwrap.fill(paragraph, width=80, break_long_words=False, break_on_hyphens=False)


def begin_marker(name):
    return f"<!-- begin {name}: generated by bench/perf_page.py, do not edit -->"


def end_marker(name):
    return f"<!-- end {name} -->"


def build_directory(binary):
    """The CMake build directory `binary` was built in."""
    directory = os.path.dirname(os.path.abspath(binary))
    while not os.path.exists(os.path.join(directory, "CMakeCache.txt")):
        if directory == os.path.dirname(directory):
            sys.exit(f"perf_page.py: {binary} is in no CMake build directory (no CMakeCache.txt above it)")
        directory = os.path.dirname(directory)
    return directory


def cmake_cache(build):
    values = {}
    path = os.path.join(build, "CMakeCache.txt")
    with open(path) as f:
        for line in f:
            match = re.match(r"^([A-Za-z_0-9]+):[A-Z]+=(.*)$", line.rstrip("\n"))
            if match:
                values[match.group(1)] = match.group(2)
    return values


def compiler(build):
    """'GNU 12.2.0', read from what CMake found."""
    for path in glob.glob(os.path.join(build, "CMakeFiles", "*", "CMakeCXXCompiler.cmake")):
        with open(path) as f:
            text = f.read()
        kind = re.search(r'set\(CMAKE_CXX_COMPILER_ID "([^"]*)"\)', text)
        version = re.search(r'set\(CMAKE_CXX_COMPILER_VERSION "([^"]*)"\)', text)
        if kind and version:
            return f"{kind.group(1)} {version.group(1)}"
    return "unknown compiler"


def os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def commit():
    def git(*args):
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short=10", "HEAD")
    if not head:
        return "no git commit"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/PERFORMANCE.md")
    return f"commit {head}" + (" with uncommitted changes" if changed else "")


def machine(build, cache):
    build_type = cache.get("CMAKE_BUILD_TYPE", "") or "no build type"
    flags = " ".join(
        part for part in (cache.get("CMAKE_CXX_FLAGS", ""), cache.get(f"CMAKE_CXX_FLAGS_{build_type.upper()}", ""))
        if part.strip())
    cores = len(os.sched_getaffinity(0))
    return (f"{cpu_model()}, {cores} core{'s' if cores != 1 else ''}; {os_name()}, Linux "
            f"{platform.release()}; {compiler(build)}, {build_type}" + (f" (`{flags}`)" if flags else "") +
            f"; {commit()}")


def render(name, body, build, cache):
    title, what, reproduce = SECTIONS[name]
    now = datetime.datetime.now(datetime.timezone.utc)
    load = os.getloadavg()
    return "\n".join([
        begin_marker(name),
        f"## {title}",
        "",
        wrap(what),
        "",
        wrap(f"Measured {now:%Y-%m-%d %H:%M} UTC on {machine(build, cache)}. Load average when the run ended: "
             f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (1, 5, 15 minutes)."),
        "",
        body.strip(),
        "",
        f"To reproduce: {reproduce}.",
        end_marker(name),
    ])


def placeholder(name):
    title, what, reproduce = SECTIONS[name]
    return "\n".join([begin_marker(name), f"## {title}", "", wrap(what), "", f"Not measured yet: run {reproduce}.",
                      end_marker(name)])


def sections_of(text):
    found = {}
    for name in SECTIONS:
        match = re.search(re.escape(begin_marker(name)) + r".*?" + re.escape(end_marker(name)), text, re.S)
        if match:
            found[name] = match.group(0)
    return found


def write_page(page, name, section):
    text = ""
    if os.path.exists(page):
        with open(page) as f:
            text = f.read()
    sections = sections_of(text)
    sections[name] = section
    parts = [HEADER] + [sections.get(other) or placeholder(other) for other in SECTIONS]
    directory = os.path.dirname(page) or "."
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, prefix=".PERFORMANCE.") as f:
        f.write("\n\n".join(part.strip() for part in parts) + "\n")
    os.replace(f.name, page)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("section", choices=list(SECTIONS))
    parser.add_argument("--binary", required=True, help="the benchmark program that ran")
    parser.add_argument("--page", default=PAGE, help="the page to write (docs/PERFORMANCE.md)")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args()

    body = sys.stdin.read()
    if not body.strip():
        sys.exit("perf_page.py: the run printed nothing")
    build = build_directory(args.binary)
    cache = cmake_cache(build)
    section = render(args.section, body, build, cache)
    print(section)
    if args.no_write:
        return
    if cache.get("CMAKE_BUILD_TYPE") != "Release":
        print(f"perf_page.py: not writing {args.page}: {build} is a "
              f"{cache.get('CMAKE_BUILD_TYPE') or 'default'} build, the page wants Release", file=sys.stderr)
        return
    write_page(args.page, args.section, section)
    print(f"perf_page.py: wrote the {args.section} section of {args.page}", file=sys.stderr)


if __name__ == "__main__":
    main()
