#pragma once

// hiredis async contexts on the libuv loop: our own adapter (the five
// event hooks of redisAsyncContext::ev on one uv_poll_t per context),
// shared by the Redis connections (redis_client.cpp) and the Sentinel
// queries (sentinel.cpp).

#include <uv.h>

struct redisAsyncContext;

namespace rooms {

// Attaches a fresh context (before redisAsyncSetConnectCallback) to the
// loop.  REDIS_OK, or REDIS_ERR with nothing attached: the caller frees
// the context then.  Once attached, hiredis's cleanup hook closes the
// poll handle when it frees the context.
int attach_redis_to_loop(redisAsyncContext* ac, uv_loop_t* loop);

}  // namespace rooms
