// Everything an embedder needs: #include <epollcr/epollcr.h>.
#pragma once

#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"
#include "epollcr/events.h"
#include "epollcr/fd_table.h"
#include "epollcr/file.h"
#include "epollcr/host_file.h"
#include "epollcr/memory.h"
#include "epollcr/mutex.h"
#include "epollcr/pipe.h"
#include "epollcr/result.h"
#include "epollcr/socket_pair.h"
#include "epollcr/state.h"
#include "epollcr/syscalls.h"
#include "epollcr/unique_fd.h"
#include "epollcr/version.h"
#include "epollcr/waiter_queue.h"
