#pragma once

// Type-exact equality of JSON values, for tests and fuzzers of JSON readers:
// Json's == holds 1 == 1.0 (unsigned, signed and double alike) and 0.0 == -0.0.

#include <cmath>
#include <cstddef>

#include "livestate/core/json.hpp"

namespace livestate::test {

/// Equal values of equal types all the way down, keys in the same order.
inline bool identical(const Json& a, const Json& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Json::value_t::object: {
      if (a.size() != b.size()) return false;
      for (auto ai = a.begin(), bi = b.begin(); ai != a.end(); ++ai, ++bi) {
        if (ai.key() != bi.key() || !identical(*ai, *bi)) return false;
      }
      return true;
    }
    case Json::value_t::array: {
      if (a.size() != b.size()) return false;
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (!identical(a[i], b[i])) return false;
      }
      return true;
    }
    case Json::value_t::number_float:
      return a.get<double>() == b.get<double>() && std::signbit(a.get<double>()) == std::signbit(b.get<double>());
    default: return a == b;
  }
}

}  // namespace livestate::test
