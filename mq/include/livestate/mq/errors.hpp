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

/// The server answers but can't carry the transport as it is set up: its
/// version, a setting (wal_level), a privilege (REPLICATION), or a resource
/// (a free replication slot, a WAL sender) of the logical transport. The
/// message names which, and what to change; trying again changes nothing
/// until someone does.
class UnsupportedServer : public TransportError {
 public:
  using TransportError::TransportError;
  ~UnsupportedServer() override;
};

}  // namespace livestate::mq
