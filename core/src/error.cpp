#include "livestate/core/error.hpp"

// Out-of-line destructors anchor each class's vtable and type information in
// this library, so catching them works the same across shared-library borders.
namespace livestate {
Error::~Error() = default;
InvalidRoutingKey::~InvalidRoutingKey() = default;
InvalidFilter::~InvalidFilter() = default;
InvalidBody::~InvalidBody() = default;
UnsupportedUrl::~UnsupportedUrl() = default;
PersistentNameInUse::~PersistentNameInUse() = default;
}  // namespace livestate
