#include "livestate/db/migrations.hpp"

namespace livestate::db {

std::string_view to_string(Backend backend) noexcept {
  switch (backend) {
    case Backend::sqlite: return "sqlite";
    case Backend::postgresql: return "postgresql";
  }
  return "unknown";
}

}  // namespace livestate::db
