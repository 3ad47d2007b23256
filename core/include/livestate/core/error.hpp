#pragma once

#include <stdexcept>
#include <string>

namespace livestate {

/// Root of every runtime failure livestate reports. Catch this to handle any of
/// them; catch a subclass to handle one kind.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  ~Error() override;
};

/// A routing key that is empty or has an element that is not 7-bit ASCII. The
/// message names the element and the offending byte.
class InvalidRoutingKey : public Error {
 public:
  using Error::Error;
  ~InvalidRoutingKey() override;
};

/// A filter that is empty, has an element that is not 7-bit ASCII, or has a `#`
/// anywhere but last in its dotted form.
class InvalidFilter : public Error {
 public:
  using Error::Error;
  ~InvalidFilter() override;
};

/// A message body (or a value stored and announced as one) that no consumer
/// between processes would accept: nested deeper than wire::max_body_depth.
/// Refused before anything is sent or committed; the message says how deep
/// the limit is.
class InvalidBody : public Error {
 public:
  using Error::Error;
  ~InvalidBody() override;
};

/// A connector URL that names no connector this build knows.
class UnsupportedUrl : public Error {
 public:
  using Error::Error;
  ~UnsupportedUrl() override;
};

/// A persistent consumer name that is already consumed by an active consumer,
/// or resumed with a filter other than the one it was created with.
class PersistentNameInUse : public Error {
 public:
  using Error::Error;
  ~PersistentNameInUse() override;
};

}  // namespace livestate
