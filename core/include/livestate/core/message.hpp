#pragma once

#include "livestate/core/json.hpp"
#include "livestate/core/routing_key.hpp"

namespace livestate {

/// One message: where it goes and what it says.
struct Message {
  RoutingKey key;
  Json body;

  friend bool operator==(const Message&, const Message&) = default;
};

}  // namespace livestate
