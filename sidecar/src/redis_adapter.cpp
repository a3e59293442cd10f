#include "redis_adapter.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <new>

namespace rooms {

namespace {

// Our hiredis adapter for libuv: the five event hooks of
// redisAsyncContext::ev on one uv_poll_t per context.  The poll lives in a
// heap object that hiredis's cleanup hook closes and the handle's close
// callback frees (hiredis may free the context first: `ac` is nulled
// then).
//
// Unlike hiredis's own libuv adapter, the poll callback does not ignore a
// poll error status: libuv reports a socket error (a refused connect, a
// reset) as exactly that, and stops the poll, so hiredis would never learn
// that the connect failed and we would wait for the connect timeout.  Ours
// lets hiredis read or write, and hiredis finds the error itself.
struct redis_poll {
    uv_poll_t handle;
    redisAsyncContext* ac = nullptr;
    int events = 0;  // UV_READABLE | UV_WRITABLE that hiredis wants
};

void poll_cb(uv_poll_t* handle, int status, int events) {
    auto* p = static_cast<redis_poll*>(handle->data);
    if (status < 0) {
        events = p->events;
    }
    if (p->ac != nullptr && (events & UV_READABLE)) {
        redisAsyncHandleRead(p->ac);
    }
    // The read may have freed the context (cleanup nulls p->ac; p itself
    // lives until the poll handle's close callback).
    if (p->ac != nullptr && (events & UV_WRITABLE)) {
        redisAsyncHandleWrite(p->ac);
    }
}

void poll_update(redis_poll* p) {
    if (p->events != 0) {
        uv_poll_start(&p->handle, p->events, poll_cb);
    } else {
        uv_poll_stop(&p->handle);
    }
}

void ev_add_read(void* privdata) {
    auto* p = static_cast<redis_poll*>(privdata);
    p->events |= UV_READABLE;
    poll_update(p);
}

void ev_del_read(void* privdata) {
    auto* p = static_cast<redis_poll*>(privdata);
    p->events &= ~UV_READABLE;
    poll_update(p);
}

void ev_add_write(void* privdata) {
    auto* p = static_cast<redis_poll*>(privdata);
    p->events |= UV_WRITABLE;
    poll_update(p);
}

void ev_del_write(void* privdata) {
    auto* p = static_cast<redis_poll*>(privdata);
    p->events &= ~UV_WRITABLE;
    poll_update(p);
}

// hiredis is done with the context (it is being freed).
void ev_cleanup(void* privdata) {
    auto* p = static_cast<redis_poll*>(privdata);
    p->ac = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), [](uv_handle_t* h) {
        delete static_cast<redis_poll*>(h->data);
    });
}

}  // namespace

// On failure nothing is attached: the context is freed without cleanup.
int attach_redis_to_loop(redisAsyncContext* ac, uv_loop_t* loop) {
    if (ac->ev.data != nullptr) {
        return REDIS_ERR;
    }
    auto* p = new (std::nothrow) redis_poll{};
    if (p == nullptr) {
        return REDIS_ERR;
    }
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
        delete p;
        return REDIS_ERR;
    }
    p->handle.data = p;
    p->ac = ac;
    ac->ev.data = p;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    // Nothing is polled yet: redisAsyncSetConnectCallback(), called next,
    // asks for writability to learn when the connect completes.
    return REDIS_OK;
}

}  // namespace rooms
