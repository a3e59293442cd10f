
/*
 * Copyright (C) ngx_rooms developers
 */


/*
 * libFuzzer target for the RFC 6455 frame parser.
 *
 * Input: byte 0 picks the message size limit, byte 1 holds flags, bytes
 * 2-3 the split point; the rest is the client byte stream.  The stream
 * is parsed three ways: in one piece, in two pieces split at the
 * data-derived point, and one byte at a time (short inputs only).  Every
 * way must report the same events (opcode, status, payload) and end the
 * same way.  Each call is checked against the parser's contract: AGAIN
 * consumes everything, NEED_BUF asks for more than the buffer holds and
 * is followed by progress, a text message is valid UTF-8 and within the
 * limit, control payloads are at most 125 bytes, an error repeats itself
 * and consumes nothing.  The message buffer is allocated at exactly the
 * size asked for, so that AddressSanitizer sees any overrun.  The ways
 * that free the message buffer after each text message also replace the
 * parser by a fresh one after every piece that leaves it idle
 * (ngx_rooms_ws_parser_idle()), as the module does.
 *
 * Flag bit 1 parses as with permessage-deflate negotiated (RSV1 allowed
 * on the first frame of a message, whose payload is then not UTF-8
 * checked).  The same bytes are also read as a Sec-WebSocket-Extensions
 * value: an accepted offer has no window or one of 8 to 15 bits, and its
 * answer fits its bound.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_rooms_ext.h"
#include "ngx_http_rooms_frame.h"
#include "ngx_http_rooms_utf8.h"


#define ROOMS_FUZZ_BYTEWISE_MAX  4096

#define rooms_fuzz_assert(c)                                                  \
    if (!(c)) {                                                               \
        abort();                                                              \
    }


typedef struct {
    uint64_t     hash;
    size_t       events;
    unsigned     status;        /* of the error, 0 if none */
    unsigned     closed;
} rooms_fuzz_digest_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static void rooms_fuzz_parse(const uint8_t *in, size_t len, size_t max,
    int deflate, const size_t *cuts, size_t ncuts, int free_after_text,
    rooms_fuzz_digest_t *d);
static void rooms_fuzz_negotiate(const uint8_t *in, size_t len);
static int rooms_fuzz_chunk(ngx_rooms_ws_parser_t *p, uint8_t *start,
    uint8_t *end, int free_after_text, rooms_fuzz_digest_t *d);
static void rooms_fuzz_check_event(ngx_rooms_ws_parser_t *p,
    ngx_rooms_ws_event_t *ev);
static void rooms_fuzz_fold(rooms_fuzz_digest_t *d, const void *data,
    size_t len);


static const size_t  rooms_fuzz_limits[8] = {
    1, 2, 3, 125, 126, 1000, 16384, 65536
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                   flags, deflate;
    size_t                max, len, cut, cuts[1], *bytes, i;
    const uint8_t        *in;
    rooms_fuzz_digest_t   whole, split, bytewise;

    if (size < 4) {
        return 0;
    }

    max = rooms_fuzz_limits[data[0] & 7];
    flags = data[1];
    in = data + 4;
    len = size - 4;
    cut = len ? ((size_t) data[2] << 8 | data[3]) % (len + 1) : 0;
    deflate = (flags >> 1) & 1;

    rooms_fuzz_negotiate(in, len);

    rooms_fuzz_parse(in, len, max, deflate, NULL, 0, 0, &whole);

    cuts[0] = cut;
    rooms_fuzz_parse(in, len, max, deflate, cuts, 1, flags & 1, &split);

    rooms_fuzz_assert(whole.hash == split.hash);
    rooms_fuzz_assert(whole.events == split.events);
    rooms_fuzz_assert(whole.status == split.status);
    rooms_fuzz_assert(whole.closed == split.closed);

    if (len > ROOMS_FUZZ_BYTEWISE_MAX || len == 0) {
        return 0;
    }

    bytes = malloc(len * sizeof(size_t));
    if (bytes == NULL) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        bytes[i] = i;
    }

    rooms_fuzz_parse(in, len, max, deflate, bytes + 1, len - 1,
                     !(flags & 1), &bytewise);
    free(bytes);

    rooms_fuzz_assert(whole.hash == bytewise.hash);
    rooms_fuzz_assert(whole.events == bytewise.events);
    rooms_fuzz_assert(whole.status == bytewise.status);
    rooms_fuzz_assert(whole.closed == bytewise.closed);

    return 0;
}


static void
rooms_fuzz_negotiate(const uint8_t *in, size_t len)
{
    size_t                        n;
    uint8_t                       buf[NGX_ROOMS_WS_DEFLATE_RESPONSE_MAX];
    ngx_rooms_ws_deflate_offer_t  offer;

    offer.server_max_window_bits = 99;

    if (!ngx_rooms_ws_deflate_negotiate(in, len, &offer)) {
        rooms_fuzz_assert(offer.server_max_window_bits == 99);
        return;
    }

    rooms_fuzz_assert(offer.server_max_window_bits == 0
                      || (offer.server_max_window_bits >= 8
                          && offer.server_max_window_bits <= 15));

    n = ngx_rooms_ws_deflate_response(buf, &offer);
    rooms_fuzz_assert(n <= sizeof(buf));
}


/*
 * Parses in[0..len) fed in pieces that end at the cut offsets (ascending)
 * and at len; each piece is copied into its own allocation so that reads
 * past it are caught.
 */

static void
rooms_fuzz_parse(const uint8_t *in, size_t len, size_t max, int deflate,
    const size_t *cuts, size_t ncuts, int free_after_text,
    rooms_fuzz_digest_t *d)
{
    size_t                  from, to, i;
    uint8_t                *piece;
    ngx_rooms_ws_parser_t   p;

    memset(d, 0, sizeof(rooms_fuzz_digest_t));
    d->hash = 14695981039346656037ULL;

    ngx_rooms_ws_parser_init(&p, max);
    p.deflate = deflate;

    from = 0;

    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;

        if (to < from) {
            to = from;
        }

        piece = malloc(to - from + 1);
        if (piece == NULL) {
            break;
        }

        memcpy(piece, in + from, to - from);

        if (rooms_fuzz_chunk(&p, piece, piece + (to - from),
                             free_after_text, d)
            != 0)
        {
            free(piece);
            break;
        }

        free(piece);
        from = to;

        /*
         * As the module does: a parser with nothing pending is dropped
         * after a read and a fresh one takes the next (the events must
         * not change).
         */

        if (free_after_text && ngx_rooms_ws_parser_idle(&p)) {
            rooms_fuzz_assert(p.buf == NULL);
            ngx_rooms_ws_parser_init(&p, max);
            p.deflate = deflate;
        }
    }

    free(p.buf);
}


/* Returns 1 once the parser has failed. */

static int
rooms_fuzz_chunk(ngx_rooms_ws_parser_t *p, uint8_t *start, uint8_t *end,
    int free_after_text, rooms_fuzz_digest_t *d)
{
    int                    rc, again;
    size_t                 n;
    uint8_t               *pos, *before, *buf;
    unsigned               v[4];
    ngx_rooms_ws_event_t   ev;

    pos = start;
    again = 0;

    for ( ;; ) {
        before = pos;
        rc = ngx_rooms_ws_parse(p, &pos, end, &ev);

        rooms_fuzz_assert(pos >= before && pos <= end);

        if (pos != before) {
            again = 0;
        }

        switch (rc) {

        case NGX_ROOMS_WS_AGAIN:
            rooms_fuzz_assert(pos == end);
            return 0;

        case NGX_ROOMS_WS_NEED_BUF:

            /* a second request without input consumed: no progress */

            rooms_fuzz_assert(!again);
            rooms_fuzz_assert(ev.len > p->buf_size);
            rooms_fuzz_assert(ev.len <= p->max_message);
            rooms_fuzz_assert(p->msg_len <= ev.len);

            buf = malloc(ev.len);
            rooms_fuzz_assert(buf != NULL);

            if (p->msg_len) {
                memcpy(buf, p->buf, p->msg_len);
            }

            free(p->buf);
            p->buf = buf;
            p->buf_size = ev.len;

            again = 1;
            continue;

        case NGX_ROOMS_WS_EVENT:
            rooms_fuzz_check_event(p, &ev);

            v[0] = ev.opcode;
            v[1] = ev.status;
            v[2] = (unsigned) ev.len;
            v[3] = ev.compressed;
            rooms_fuzz_fold(d, v, sizeof(v));

            if (ev.len) {
                rooms_fuzz_fold(d, ev.data, ev.len);
            }

            d->events++;

            if (ev.opcode == NGX_ROOMS_WS_OP_CLOSE) {
                d->closed = 1;
            }

            if (ev.opcode == NGX_ROOMS_WS_OP_TEXT && free_after_text) {
                free(p->buf);
                p->buf = NULL;
                p->buf_size = 0;
            }

            again = 0;
            continue;

        case NGX_ROOMS_WS_ERROR:
            rooms_fuzz_assert(ev.status == NGX_ROOMS_WS_CLOSE_PROTOCOL
                              || ev.status == NGX_ROOMS_WS_CLOSE_UNSUPPORTED
                              || ev.status
                                 == NGX_ROOMS_WS_CLOSE_INVALID_DATA
                              || ev.status == NGX_ROOMS_WS_CLOSE_TOO_BIG);
            rooms_fuzz_assert(ev.reason != NULL);
            rooms_fuzz_assert(!d->closed);

            d->status = ev.status;

            /* it says the same again and consumes nothing */

            before = pos;
            n = ev.status;
            rc = ngx_rooms_ws_parse(p, &pos, end, &ev);

            rooms_fuzz_assert(rc == NGX_ROOMS_WS_ERROR);
            rooms_fuzz_assert(ev.status == n);
            rooms_fuzz_assert(pos == before);

            return 1;

        default:
            abort();
        }
    }
}


static void
rooms_fuzz_check_event(ngx_rooms_ws_parser_t *p, ngx_rooms_ws_event_t *ev)
{
    switch (ev->opcode) {

    case NGX_ROOMS_WS_OP_TEXT:
        rooms_fuzz_assert(ev->len <= p->max_message);
        rooms_fuzz_assert(ev->len == 0 || ev->data != NULL);
        rooms_fuzz_assert(!ev->compressed || p->deflate);
        rooms_fuzz_assert(ev->compressed
                          || ngx_rooms_utf8_valid(ev->data, ev->len)
                             == NGX_ROOMS_UTF8_OK);
        rooms_fuzz_assert(ev->status == 0);
        break;

    case NGX_ROOMS_WS_OP_CLOSE:
        rooms_fuzz_assert(!ev->compressed);
        rooms_fuzz_assert(ev->len <= NGX_ROOMS_WS_CONTROL_MAX - 2);
        rooms_fuzz_assert(ev->status == NGX_ROOMS_WS_CLOSE_NO_STATUS
                          || ngx_rooms_ws_check_close(ev->data - 2,
                                                      ev->len + 2)
                             == 0);
        rooms_fuzz_assert(ngx_rooms_utf8_valid(ev->data, ev->len)
                          == NGX_ROOMS_UTF8_OK);
        break;

    case NGX_ROOMS_WS_OP_PING:
    case NGX_ROOMS_WS_OP_PONG:
        rooms_fuzz_assert(!ev->compressed);
        rooms_fuzz_assert(ev->len <= NGX_ROOMS_WS_CONTROL_MAX);
        break;

    default:
        abort();
    }
}


/* FNV-1a */

static void
rooms_fuzz_fold(rooms_fuzz_digest_t *d, const void *data, size_t len)
{
    size_t          i;
    const uint8_t  *p;

    p = data;

    for (i = 0; i < len; i++) {
        d->hash ^= p[i];
        d->hash *= 1099511628211ULL;
    }
}
