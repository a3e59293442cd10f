
/*
 * Copyright (C) ngx_rooms developers
 */


#ifndef _NGX_HTTP_ROOMS_FRAME_H_INCLUDED_
#define _NGX_HTTP_ROOMS_FRAME_H_INCLUDED_


/*
 * RFC 6455 server side framing: an incremental parser of client frames
 * and an encoder of server frame headers.  Pure C99, no nginx dependency,
 * no allocation: the caller owns the message buffer.
 */


#include <stddef.h>
#include <stdint.h>

#include "ngx_http_rooms_utf8.h"


#ifdef __cplusplus
extern "C" {
#endif


#define NGX_ROOMS_WS_OP_CONT         0x0
#define NGX_ROOMS_WS_OP_TEXT         0x1
#define NGX_ROOMS_WS_OP_BINARY       0x2
#define NGX_ROOMS_WS_OP_CLOSE        0x8
#define NGX_ROOMS_WS_OP_PING         0x9
#define NGX_ROOMS_WS_OP_PONG         0xa

#define NGX_ROOMS_WS_RSV1            0x40   /* permessage-deflate */

#define NGX_ROOMS_WS_CONTROL_MAX     125
#define NGX_ROOMS_WS_HEADER_MAX      10     /* server frames: no mask */

/* close status codes, RFC 6455 7.4.1 */
#define NGX_ROOMS_WS_CLOSE_NORMAL        1000
#define NGX_ROOMS_WS_CLOSE_GOING_AWAY    1001
#define NGX_ROOMS_WS_CLOSE_PROTOCOL      1002
#define NGX_ROOMS_WS_CLOSE_UNSUPPORTED   1003
#define NGX_ROOMS_WS_CLOSE_NO_STATUS     1005
#define NGX_ROOMS_WS_CLOSE_ABNORMAL      1006  /* no close frame, 7.1.5 */
#define NGX_ROOMS_WS_CLOSE_INVALID_DATA  1007
#define NGX_ROOMS_WS_CLOSE_POLICY        1008
#define NGX_ROOMS_WS_CLOSE_TOO_BIG       1009
#define NGX_ROOMS_WS_CLOSE_INTERNAL      1011
#define NGX_ROOMS_WS_CLOSE_RESTART       1012

/* ngx_rooms_ws_parse() results */
#define NGX_ROOMS_WS_AGAIN           0      /* all input consumed */
#define NGX_ROOMS_WS_EVENT           1      /* ev holds a message */
#define NGX_ROOMS_WS_NEED_BUF        2      /* see below */
#define NGX_ROOMS_WS_ERROR           (-1)   /* ev->status, ev->reason */


typedef struct {
    /* set by the caller before the first call */
    size_t                   max_message;   /* text message limit, bytes */
    unsigned                 deflate:1;     /* RSV1 allowed: negotiated
                                               permessage-deflate */

    /*
     * The buffer a data message is assembled in.  The caller provides it
     * when asked (NGX_ROOMS_WS_NEED_BUF) and may free it and set buf to
     * NULL after a NGX_ROOMS_WS_EVENT of a text message; it is never
     * needed between messages.
     */
    uint8_t                 *buf;
    size_t                   buf_size;

    /* private */
    unsigned                 state;
    unsigned                 opcode;        /* of the frame being read */
    unsigned                 fin:1;
    unsigned                 in_message:1;  /* a fragmented text message */
    unsigned                 closed:1;      /* a close frame was parsed */
    unsigned                 compressed:1;  /* the message had RSV1 */
    unsigned                 hdr_len;       /* header bytes in hdr */
    unsigned                 hdr_need;      /* header bytes wanted now */
    unsigned                 mask_pos;
    unsigned                 status;        /* of the error, once failed */
    const char              *reason;
    uint64_t                 frame_left;    /* payload bytes still to read */
    size_t                   msg_len;       /* bytes of message in buf */
    size_t                   ctl_len;
    ngx_rooms_utf8_state_t   utf8;
    uint8_t                  mask[4];
    uint8_t                  hdr[14];
    uint8_t                  ctl[NGX_ROOMS_WS_CONTROL_MAX];
} ngx_rooms_ws_parser_t;


typedef struct {
    unsigned                 opcode;   /* TEXT, CLOSE, PING or PONG */
    const uint8_t           *data;     /* message or control payload; for
                                          CLOSE the reason, after the
                                          status */
    size_t                   len;
    unsigned                 status;   /* CLOSE: received status (1005 if
                                          none); ERROR: status to close
                                          with (1002, 1003, 1007, 1009) */
    const char              *reason;   /* ERROR: for the log and the close
                                          frame */
    unsigned                 compressed;  /* TEXT: RSV1 was set on its
                                             first frame; data is raw
                                             DEFLATE, not checked as
                                             UTF-8 (the caller inflates
                                             and checks it) */
} ngx_rooms_ws_event_t;


/* Zeroes the parser and sets the limit. */
void ngx_rooms_ws_parser_init(ngx_rooms_ws_parser_t *p, size_t max_message);

/*
 * Consumes input from *pos up to end, unmasking the payload while copying
 * it out (the input is left as it was), and advances *pos past what it
 * consumed.  Returns:
 *
 *   NGX_ROOMS_WS_AGAIN     everything was consumed, nothing to report;
 *   NGX_ROOMS_WS_EVENT     ev holds one complete text message (in p->buf)
 *                          or control frame; call again for the rest;
 *   NGX_ROOMS_WS_NEED_BUF  a data frame needs p->buf to hold at least
 *                          ev->len bytes, its first p->msg_len bytes
 *                          preserved (realloc semantics); set buf and
 *                          buf_size, then call again;
 *   NGX_ROOMS_WS_ERROR     a violation: close with ev->status; the parser
 *                          must not be called again (if it is, it returns
 *                          the same error and consumes nothing).
 *
 * A message over max_message is an error (1009) as soon as its length is
 * known (for a compressed message: its compressed length).  RSV1 is
 * allowed only with p->deflate set, and only on the first frame of a
 * data message (RFC 7692 6.1); anywhere else it is an error (1002).  An
 * empty text message may come with ev->data NULL.  After a CLOSE event
 * the parser reports nothing more: it discards all input and returns
 * NGX_ROOMS_WS_AGAIN.
 */
int ngx_rooms_ws_parse(ngx_rooms_ws_parser_t *p, uint8_t **pos,
    uint8_t *end, ngx_rooms_ws_event_t *ev);

/*
 * Between frames, outside a fragmented message, and neither closed nor
 * failed: nothing read is pending, so the parser may be dropped and a
 * fresh one (ngx_rooms_ws_parser_init(), the same max_message and
 * deflate) goes on exactly as this one would.  buf is the caller's.
 */
int ngx_rooms_ws_parser_idle(const ngx_rooms_ws_parser_t *p);

/*
 * Writes an unmasked, final server frame header for a payload of len
 * bytes; returns the header length (2, 4 or 10).  The opcode may carry
 * NGX_ROOMS_WS_RSV1 (a compressed message).
 */
size_t ngx_rooms_ws_frame_header(uint8_t *buf, unsigned opcode,
    uint64_t len);

/*
 * Checks a close frame payload received from a client: status code
 * allowed on the wire and reason valid UTF-8.  Returns 0 or the status
 * to close with (1002 or 1007).
 */
unsigned ngx_rooms_ws_check_close(const uint8_t *data, size_t len);


#ifdef __cplusplus
}
#endif


#endif /* _NGX_HTTP_ROOMS_FRAME_H_INCLUDED_ */
