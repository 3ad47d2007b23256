#pragma once

// The template part of Connector::async_wait_until_event; included by
// connector.hpp, not meant to be included on its own.

#include <memory>
#include <optional>
#include <utility>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>

namespace livestate::mq {
namespace detail {

// Holds a (possibly move-only) completion handler and keeps its executor busy
// until the wait completes, so an io_context does not run out of work while a
// coroutine is waiting for a message.
template <class Handler>
class WaitHandler final {
 public:
  explicit WaitHandler(Handler handler)
      : m_work(boost::asio::get_associated_executor(handler)), m_handler(std::move(handler)) {}

  void complete(boost::system::error_code error, std::optional<Message> message) {
    auto executor = m_work.get_executor();
    boost::asio::dispatch(executor, [handler = std::move(m_handler), error, message = std::move(message)]() mutable {
      std::move(handler)(error, std::move(message));
    });
    m_work.reset();
  }

 private:
  using Executor = boost::asio::associated_executor_t<Handler>;
  boost::asio::executor_work_guard<Executor> m_work;
  Handler m_handler;
};

}  // namespace detail

template <class CompletionToken>
auto Connector::async_wait_until_event(Filter filter, std::function<bool()> check, CompletionToken&& token) {
  using Signature = void(boost::system::error_code, std::optional<Message>);
  return boost::asio::async_initiate<CompletionToken, Signature>(
      [this](auto handler, Filter wait_filter, std::function<bool()> wait_check) {
        using Handler = decltype(handler);
        auto held = std::make_shared<detail::WaitHandler<Handler>>(std::move(handler));
        start_wait(std::move(wait_filter), std::move(wait_check),
                   [held](boost::system::error_code error, std::optional<Message> message) {
                     held->complete(error, std::move(message));
                   });
      },
      token, std::move(filter), std::move(check));
}

}  // namespace livestate::mq
