#pragma once

// The message body the benchmarks send: a realistic Buildbot build request
// claim (buildrequests.42.claimed), as Buildbot's data API announces it.

#include "livestate/core/json.hpp"

namespace livestate::bench {

inline Json claim_body() {
  return Json{{"buildrequestid", 42},
              {"buildsetid", 7},
              {"builderid", 3},
              {"priority", 0},
              {"claimed", true},
              {"claimed_at", 1795838741.2},
              {"claimed_by_masterid", 1},
              {"complete", false},
              {"results", -1},
              {"submitted_at", 1795838740.0},
              {"complete_at", nullptr},
              {"waited_for", false},
              {"properties", nullptr}};
}

}  // namespace livestate::bench
