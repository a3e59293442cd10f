#include "link_reader.h"

#include <algorithm>
#include <cstring>
#include <new>

namespace rooms {

uint8_t* link_reader::space(size_t* len) {
    size_t want = std::max(link_read_chunk, rneed_);
    if (rcap_ - rend_ < want) {
        if (rstart_ > 0) {
            std::memmove(rbuf_.get(), rbuf_.get() + rstart_, rend_ - rstart_);
            rend_ -= rstart_;
            rstart_ = 0;
        }
        if (rcap_ - rend_ < want) {
            size_t cap = std::max(rcap_ * 2, rend_ + want);
            auto* p = new (std::nothrow) uint8_t[cap];
            if (p == nullptr) {
                *len = 0;
                return nullptr;
            }
            if (rend_ > 0) {
                std::memcpy(p, rbuf_.get(), rend_);
            }
            rbuf_.reset(p);
            rcap_ = cap;
        }
    }
    *len = rcap_ - rend_;
    return rbuf_.get() + rend_;
}

void link_reader::settle() {
    if (rstart_ == rend_) {
        rstart_ = 0;
        rend_ = 0;
        if (rcap_ > link_read_keep) {
            rbuf_.reset();
            rcap_ = 0;
        }
        return;
    }

    // A buffer grown for a big frame is given back once that frame is
    // consumed, also when a worker that keeps sending never lets it drain
    // (a partial frame waits at its end): what is left moves to a small
    // one, unless the frame under way is big too.
    size_t left = rend_ - rstart_;
    size_t cap = left + std::max(link_read_chunk, rneed_);
    if (rcap_ <= link_read_keep || cap > link_read_keep) {
        return;
    }
    auto* p = new (std::nothrow) uint8_t[cap];
    if (p == nullptr) {
        return;  // keep the big one
    }
    std::memcpy(p, rbuf_.get() + rstart_, left);
    rbuf_.reset(p);
    rcap_ = cap;
    rstart_ = 0;
    rend_ = left;
}

}  // namespace rooms
