
/*
 * Copyright (C) ngx_rooms developers
 */


#ifndef _NGX_HTTP_ROOMS_JSON_H_INCLUDED_
#define _NGX_HTTP_ROOMS_JSON_H_INCLUDED_


/*
 * The little JSON the module needs without a JSON library: the client's
 * "ref" (SPEC 2.2), so that an error the worker makes itself (a message
 * held past its bound while the sidecar was away) carries it.  Pure C99,
 * no nginx dependency.
 */


#include <stddef.h>
#include <stdint.h>


#ifdef __cplusplus
extern "C" {
#endif


#define NGX_ROOMS_REF_MAX  64


/*
 * Finds the top-level "ref" member of the JSON object text p[0..len).
 * Returns 1 and its decoded value in ref[0..*ref_len) when it is a valid
 * ref (a string of 1..64 printable ASCII characters); 0 when the text is
 * not an object, has no "ref", or its ref is not valid.  With duplicate
 * keys the last one counts, as in the sidecar's parser.
 */
int ngx_rooms_json_ref(const uint8_t *p, size_t len, uint8_t *ref,
    size_t *ref_len);

/*
 * Writes src[0..len) as the contents of a JSON string (without quotes)
 * for printable ASCII input: '"' and '\' are escaped.  dst must hold
 * 2 * len bytes.  Returns the end of the output.
 */
uint8_t *ngx_rooms_json_escape_ascii(uint8_t *dst, const uint8_t *src,
    size_t len);


#ifdef __cplusplus
}
#endif


#endif /* _NGX_HTTP_ROOMS_JSON_H_INCLUDED_ */
