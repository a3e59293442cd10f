
/*
 * Copyright (C) ngx_rooms developers
 */


/*
 * libFuzzer target for the link codec (docs/protocol.md).
 *
 * The input is a byte stream read frame by frame, as a link reader does.
 * Every frame decoded is re-encoded (when its type is known) and decoded
 * again: the fields must survive, the head encoder must agree with the
 * full one, and a frame without trailing bytes must come back byte for
 * byte.  Every shorter prefix of a frame must be INCOMPLETE, never
 * MALFORMED or a frame.  Each frame is decoded from its own allocation of
 * exactly its length, so that AddressSanitizer sees any overread.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_rooms_ipc.h"


#define rooms_fuzz_assert(c)                                                  \
    if (!(c)) {                                                               \
        abort();                                                              \
    }


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static void rooms_fuzz_frame(const uint8_t *frame, size_t len,
    const ngx_rooms_ipc_msg_t *msg);
static int rooms_fuzz_known(unsigned type);
static void rooms_fuzz_same(const ngx_rooms_ipc_msg_t *a,
    const ngx_rooms_ipc_msg_t *b);
static int rooms_fuzz_str_eq(const ngx_rooms_ipc_str_t *a,
    const ngx_rooms_ipc_str_t *b);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long                  n, m;
    size_t                cut;
    uint8_t              *copy, *frame;
    ngx_rooms_ipc_msg_t   msg, again;

    while (size) {

        /* the decoder on its own allocation of exactly the bytes left */

        copy = malloc(size);
        if (copy == NULL) {
            return 0;
        }

        memcpy(copy, data, size);

        n = ngx_rooms_ipc_decode(copy, size, &msg);

        if (n <= 0) {
            rooms_fuzz_assert(n == NGX_ROOMS_IPC_INCOMPLETE
                              || n == NGX_ROOMS_IPC_MALFORMED);
            free(copy);
            return 0;
        }

        rooms_fuzz_assert((size_t) n <= size);
        rooms_fuzz_assert(n >= NGX_ROOMS_IPC_HEADER_LEN);

        /* the frame alone, to its exact length */

        frame = malloc(n);
        rooms_fuzz_assert(frame != NULL);
        memcpy(frame, data, n);

        m = ngx_rooms_ipc_decode(frame, n, &again);
        rooms_fuzz_assert(m == n);
        rooms_fuzz_same(&msg, &again);

        free(copy);
        copy = frame;

        /* every prefix is incomplete: a few of them */

        for (cut = 0; cut < (size_t) n; cut += 1 + cut * 3) {
            m = ngx_rooms_ipc_decode(copy, cut, &again);
            rooms_fuzz_assert(m == NGX_ROOMS_IPC_INCOMPLETE);
        }

        m = ngx_rooms_ipc_decode(copy, n - 1, &again);
        rooms_fuzz_assert(m == NGX_ROOMS_IPC_INCOMPLETE);

        ngx_rooms_ipc_decode(copy, n, &msg);
        rooms_fuzz_frame(copy, n, &msg);

        free(copy);

        data += n;
        size -= n;
    }

    return 0;
}


static void
rooms_fuzz_frame(const uint8_t *frame, size_t len,
    const ngx_rooms_ipc_msg_t *msg)
{
    long                  m;
    size_t                size, head;
    uint8_t              *buf, *end;
    ngx_rooms_ipc_msg_t   again;

    size = ngx_rooms_ipc_size(msg);
    head = ngx_rooms_ipc_head_size(msg);

    if (!rooms_fuzz_known(msg->type)) {
        rooms_fuzz_assert(size == 0 && head == 0);
        return;
    }

    /* anything decoded from a valid frame can be encoded */

    rooms_fuzz_assert(size >= NGX_ROOMS_IPC_HEADER_LEN);
    rooms_fuzz_assert(size <= len);
    rooms_fuzz_assert(head <= size);
    rooms_fuzz_assert(head + msg->payload.len == size);

    buf = malloc(size);
    rooms_fuzz_assert(buf != NULL);

    end = ngx_rooms_ipc_encode(buf, msg);
    rooms_fuzz_assert(end == buf + size);

    m = ngx_rooms_ipc_decode(buf, size, &again);
    rooms_fuzz_assert(m == (long) size);
    rooms_fuzz_same(msg, &again);

    /* no trailing bytes: the same frame */

    if (size == len) {
        rooms_fuzz_assert(memcmp(buf, frame, len) == 0);
    }

    /* the head encoder writes the same head */

    memset(buf, 0, size);
    end = ngx_rooms_ipc_encode_head(buf, msg);
    rooms_fuzz_assert(end == buf + head);

    if (head < size) {
        memcpy(end, msg->payload.data, size - head);
    }

    m = ngx_rooms_ipc_decode(buf, size, &again);
    rooms_fuzz_assert(m == (long) size);
    rooms_fuzz_same(msg, &again);

    free(buf);
}


static int
rooms_fuzz_known(unsigned type)
{
    switch (type) {

    case NGX_ROOMS_IPC_HELLO:
    case NGX_ROOMS_IPC_OPEN:
    case NGX_ROOMS_IPC_MESSAGE:
    case NGX_ROOMS_IPC_CLOSE:
    case NGX_ROOMS_IPC_ROOMS:
    case NGX_ROOMS_IPC_STATS:
    case NGX_ROOMS_IPC_SEND:
    case NGX_ROOMS_IPC_ATTACH:
    case NGX_ROOMS_IPC_BROADCAST:
    case NGX_ROOMS_IPC_KICK:
    case NGX_ROOMS_IPC_ROOMS_REPLY:
    case NGX_ROOMS_IPC_STATS_REPLY:
    case NGX_ROOMS_IPC_HELLO_ACK:
    case NGX_ROOMS_IPC_ACK:
        return 1;

    default:
        return 0;
    }
}


static void
rooms_fuzz_same(const ngx_rooms_ipc_msg_t *a, const ngx_rooms_ipc_msg_t *b)
{
    rooms_fuzz_assert(a->type == b->type);
    rooms_fuzz_assert(a->flags == b->flags);
    rooms_fuzz_assert(a->version == b->version);
    rooms_fuzz_assert(a->status == b->status);
    rooms_fuzz_assert(a->pid == b->pid);
    rooms_fuzz_assert(a->id == b->id);
    rooms_fuzz_assert(a->since == b->since);
    rooms_fuzz_assert(a->seq == b->seq);
    rooms_fuzz_assert(a->last_id == b->last_id);
    rooms_fuzz_assert(rooms_fuzz_str_eq(&a->room, &b->room));
    rooms_fuzz_assert(rooms_fuzz_str_eq(&a->name, &b->name));
    rooms_fuzz_assert(rooms_fuzz_str_eq(&a->player, &b->player));
    rooms_fuzz_assert(rooms_fuzz_str_eq(&a->payload, &b->payload));
}


static int
rooms_fuzz_str_eq(const ngx_rooms_ipc_str_t *a, const ngx_rooms_ipc_str_t *b)
{
    if (a->len != b->len) {
        return 0;
    }

    return a->len == 0 || memcmp(a->data, b->data, a->len) == 0;
}
