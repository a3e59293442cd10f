
/*
 * Copyright (C) ngx_rooms developers
 */


#ifndef _NGX_HTTP_ROOMS_EXT_H_INCLUDED_
#define _NGX_HTTP_ROOMS_EXT_H_INCLUDED_


/*
 * Sec-WebSocket-Extensions negotiation of permessage-deflate (RFC 7692)
 * on the server side.  Pure C99, no nginx dependency, no allocation.
 *
 * The server always answers with server_no_context_takeover (every
 * message it sends is compressed on its own, so that one compressed
 * frame serves every client) and client_no_context_takeover (every
 * message received is inflated on its own, RFC 7692 7.1.1.2), plus
 * server_max_window_bits when the client asked for a limit.
 */


#include <stddef.h>
#include <stdint.h>


#ifdef __cplusplus
extern "C" {
#endif


/* "permessage-deflate; server_no_context_takeover;
 * client_no_context_takeover; server_max_window_bits=15" */
#define NGX_ROOMS_WS_DEFLATE_RESPONSE_MAX  128


typedef struct {
    unsigned   server_max_window_bits;   /* 0: not asked; else 8 to 15 */
} ngx_rooms_ws_deflate_offer_t;


/*
 * Looks through one Sec-WebSocket-Extensions header value (a list of
 * offers, each with parameters, values as tokens or quoted strings) for
 * the first permessage-deflate offer that can be honoured.  An offer
 * with an unknown, repeated or invalid parameter is skipped; the rest of
 * a value that breaks the syntax is ignored.  Returns 1 and fills *offer,
 * or 0.  With several header lines, call it on each in order.
 */
int ngx_rooms_ws_deflate_negotiate(const uint8_t *value, size_t len,
    ngx_rooms_ws_deflate_offer_t *offer);

/*
 * Writes the extension response to an accepted offer (at most
 * NGX_ROOMS_WS_DEFLATE_RESPONSE_MAX bytes, no CRLF); returns its length.
 */
size_t ngx_rooms_ws_deflate_response(uint8_t *buf,
    const ngx_rooms_ws_deflate_offer_t *offer);


#ifdef __cplusplus
}
#endif


#endif /* _NGX_HTTP_ROOMS_EXT_H_INCLUDED_ */
