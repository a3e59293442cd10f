#pragma once

// Ownership of libuv handles.  A uv_ptr<T> owns a heap-allocated handle;
// destroying it calls uv_close() and the memory is freed in the close
// callback, never before.  make_uv_handle() runs the init function and
// only hands out handles whose init succeeded (a handle that failed init
// must not be closed).

#include <uv.h>

#include <memory>
#include <utility>

namespace rooms {

struct uv_handle_closer {
    template <typename T>
    void operator()(T* h) const noexcept {
        uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* p) {
            delete reinterpret_cast<T*>(p);
        });
    }
};

template <typename T>
using uv_ptr = std::unique_ptr<T, uv_handle_closer>;

// init(T*) returns a libuv status; on failure rc holds it and the result
// is empty.
template <typename T, typename Init>
uv_ptr<T> make_uv_handle(Init&& init, int& rc, void* data = nullptr) {
    T* h = new T{};
    rc = std::forward<Init>(init)(h);
    if (rc < 0) {
        delete h;
        return uv_ptr<T>();
    }
    h->data = data;
    return uv_ptr<T>(h);
}

// A timer on loop whose handle's data is `data`; empty on failure (rc
// holds the libuv error).
inline uv_ptr<uv_timer_t> make_uv_timer(uv_loop_t* loop, void* data,
                                        int& rc) {
    return make_uv_handle<uv_timer_t>(
        [loop](uv_timer_t* t) { return uv_timer_init(loop, t); }, rc, data);
}

}  // namespace rooms
