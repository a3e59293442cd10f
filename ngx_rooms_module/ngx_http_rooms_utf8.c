/*
 * Copyright (C) ngx_rooms developers
 */


#include <string.h>

#include "ngx_http_rooms_utf8.h"


/*
 * The validator state packs what the next byte must be: the number of
 * continuation bytes still expected (bits 0-7) and the range the next
 * one must fall in (lo in bits 8-15, hi in bits 16-23).  The range of the
 * first continuation byte is what rules out overlong forms (E0, F0),
 * surrogates (ED) and code points above U+10FFFF (F4); the others are
 * always 80..BF.  State 0 is a sequence boundary.
 */

#define NGX_ROOMS_UTF8_BAD       0xffffffff
#define NGX_ROOMS_UTF8_HIGH      0x8080808080808080ULL


static int ngx_rooms_utf8_lead(unsigned c, unsigned *need, unsigned *lo,
    unsigned *hi);
static const uint8_t *ngx_rooms_utf8_ascii(const uint8_t *p,
    const uint8_t *end);


int
ngx_rooms_utf8_feed(ngx_rooms_utf8_state_t *st, const uint8_t *data,
    size_t len)
{
    unsigned        c, need, lo, hi;
    const uint8_t  *p, *end;

    if (st->state == NGX_ROOMS_UTF8_BAD) {
        return NGX_ROOMS_UTF8_INVALID;
    }

    if (len == 0) {
        /* data may be NULL */
        return st->state ? NGX_ROOMS_UTF8_PARTIAL : NGX_ROOMS_UTF8_OK;
    }

    need = st->state & 0xff;
    lo = (st->state >> 8) & 0xff;
    hi = st->state >> 16;

    p = data;
    end = data + len;

    while (p < end) {
        c = *p++;

        if (need == 0) {
            if (c < 0x80) {
                p = ngx_rooms_utf8_ascii(p, end);
                continue;
            }

            if (ngx_rooms_utf8_lead(c, &need, &lo, &hi) != 0) {
                goto invalid;
            }

            continue;
        }

        if (c < lo || c > hi) {
            goto invalid;
        }

        need--;
        lo = 0x80;
        hi = 0xbf;
    }

    st->state = need ? (need | (lo << 8) | (hi << 16)) : 0;

    return need ? NGX_ROOMS_UTF8_PARTIAL : NGX_ROOMS_UTF8_OK;

invalid:

    st->state = NGX_ROOMS_UTF8_BAD;

    return NGX_ROOMS_UTF8_INVALID;
}


int
ngx_rooms_utf8_valid(const uint8_t *data, size_t len)
{
    ngx_rooms_utf8_state_t  st;

    st.state = 0;
    st.codepoint = 0;

    if (ngx_rooms_utf8_feed(&st, data, len) != NGX_ROOMS_UTF8_OK) {
        return NGX_ROOMS_UTF8_INVALID;
    }

    return NGX_ROOMS_UTF8_OK;
}


size_t
ngx_rooms_utf8_text_len(const uint8_t *data, size_t len)
{
    size_t          n;
    unsigned        c, need, lo, hi;
    const uint8_t  *p, *end;

    if (len == 0) {
        return 0;
    }

    n = 0;
    p = data;
    end = data + len;

    while (p < end) {
        c = *p++;

        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) {
                return (size_t) -1;
            }

            n++;
            continue;
        }

        if (ngx_rooms_utf8_lead(c, &need, &lo, &hi) != 0) {
            return (size_t) -1;
        }

        if ((size_t) (end - p) < need) {
            return (size_t) -1;
        }

        /* C1 controls U+0080..U+009F are C2 80..C2 9F */

        if (c == 0xc2) {
            hi = 0xbf;
            lo = 0xa0;
        }

        while (need--) {
            c = *p++;

            if (c < lo || c > hi) {
                return (size_t) -1;
            }

            lo = 0x80;
            hi = 0xbf;
        }

        n++;
    }

    return n;
}


static int
ngx_rooms_utf8_lead(unsigned c, unsigned *need, unsigned *lo, unsigned *hi)
{
    if (c < 0xc2) {
        /* a continuation byte, or the overlong leads C0 and C1 */
        return -1;
    }

    if (c < 0xe0) {
        *need = 1;
        *lo = 0x80;
        *hi = 0xbf;
        return 0;
    }

    if (c < 0xf0) {
        *need = 2;
        *lo = (c == 0xe0) ? 0xa0 : 0x80;
        *hi = (c == 0xed) ? 0x9f : 0xbf;
        return 0;
    }

    if (c < 0xf5) {
        *need = 3;
        *lo = (c == 0xf0) ? 0x90 : 0x80;
        *hi = (c == 0xf4) ? 0x8f : 0xbf;
        return 0;
    }

    return -1;
}


/* Skips a run of ASCII, eight bytes at a time; returns its end. */

static const uint8_t *
ngx_rooms_utf8_ascii(const uint8_t *p, const uint8_t *end)
{
    uint64_t  w;

    while (end - p >= 8) {
        memcpy(&w, p, 8);

        if (w & NGX_ROOMS_UTF8_HIGH) {
            break;
        }

        p += 8;
    }

    while (p < end && *p < 0x80) {
        p++;
    }

    return p;
}
