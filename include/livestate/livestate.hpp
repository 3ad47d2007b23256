#pragma once

// Everything livestate offers, for programs that don't mind the compile time.

#include "livestate/core/error.hpp"
#include "livestate/core/filter.hpp"
#include "livestate/core/json.hpp"
#include "livestate/core/log.hpp"
#include "livestate/core/message.hpp"
#include "livestate/core/routing_key.hpp"
#include "livestate/core/wire.hpp"
#include "livestate/db/errors.hpp"
#include "livestate/db/migrations.hpp"
#include "livestate/db/migrator.hpp"
#include "livestate/db/store.hpp"
#include "livestate/mq/connect.hpp"
#include "livestate/mq/connector.hpp"
#include "livestate/mq/consumer.hpp"
#include "livestate/mq/control.hpp"
#include "livestate/mq/faulty.hpp"
#include "livestate/mq/postgres.hpp"
#include "livestate/mq/simple_mq.hpp"
#include "livestate/mq/transactional.hpp"
#include "livestate/reconcile/live_view.hpp"
