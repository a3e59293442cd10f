#pragma once

// A reply tree from RESP bytes, read by hiredis's own reader, for the unit
// tests of the reply parsers (redis_replies.h, sentinel.h).

#include <hiredis/hiredis.h>

#include <memory>
#include <string_view>

namespace rooms_test {

struct reply_deleter {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

// The one reply in resp; empty if resp does not hold a whole one.
inline reply_ptr read_reply(std::string_view resp) {
    redisReader* reader = redisReaderCreate();
    void* r = nullptr;
    if (redisReaderFeed(reader, resp.data(), resp.size()) != REDIS_OK ||
        redisReaderGetReply(reader, &r) != REDIS_OK) {
        r = nullptr;
    }
    redisReaderFree(reader);
    return reply_ptr(static_cast<redisReply*>(r));
}

}  // namespace rooms_test
