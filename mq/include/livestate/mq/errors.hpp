#pragma once

#include "livestate/core/error.hpp"

namespace livestate::mq {

/// A connector between processes could not do what it was asked: the database
/// that carries its messages refused, broke or did not answer in time. The
/// message names the database (with any password replaced by ***) and says
/// what went wrong. Catch a subclass to know what became of a message.
class TransportError : public Error {
 public:
  using Error::Error;
  ~TransportError() override;
};

/// produce() failed before the message could have reached anyone: it was
/// certainly not sent, and sending it again cannot deliver it twice.
class NotSent : public TransportError {
 public:
  using TransportError::TransportError;
  ~NotSent() override;
};

/// produce() lost its connection (or its deadline passed) while the message
/// was on its way: it may or may not have been sent. Sending it again may
/// deliver it twice; a consumer that keeps state should de-duplicate (a live
/// view does, by revision).
class MaybeSent : public TransportError {
 public:
  using TransportError::TransportError;
  ~MaybeSent() override;
};

}  // namespace livestate::mq
