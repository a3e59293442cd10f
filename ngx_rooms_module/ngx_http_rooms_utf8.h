
/*
 * Copyright (C) ngx_rooms developers
 */


#ifndef _NGX_HTTP_ROOMS_UTF8_H_INCLUDED_
#define _NGX_HTTP_ROOMS_UTF8_H_INCLUDED_


/*
 * Incremental UTF-8 validation (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF).  Pure C99.
 */


#include <stddef.h>
#include <stdint.h>


#ifdef __cplusplus
extern "C" {
#endif


#define NGX_ROOMS_UTF8_OK            0     /* valid, ends on a boundary */
#define NGX_ROOMS_UTF8_PARTIAL       1     /* valid so far, mid sequence */
#define NGX_ROOMS_UTF8_INVALID       (-1)


typedef struct {
    uint32_t   state;
    uint32_t   codepoint;
} ngx_rooms_utf8_state_t;


/* state must start zeroed; feed chunks in order. */
int ngx_rooms_utf8_feed(ngx_rooms_utf8_state_t *st, const uint8_t *data,
    size_t len);

/* Whole-buffer check; returns NGX_ROOMS_UTF8_OK or _INVALID. */
int ngx_rooms_utf8_valid(const uint8_t *data, size_t len);

/*
 * Counts code points of valid UTF-8; returns (size_t) -1 if invalid or if
 * it holds a control character (C0, DEL, C1).
 */
size_t ngx_rooms_utf8_text_len(const uint8_t *data, size_t len);


#ifdef __cplusplus
}
#endif


#endif /* _NGX_HTTP_ROOMS_UTF8_H_INCLUDED_ */
