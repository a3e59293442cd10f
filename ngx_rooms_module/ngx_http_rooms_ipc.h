
/*
 * Copyright (C) ngx_rooms developers
 */


#ifndef _NGX_HTTP_ROOMS_IPC_H_INCLUDED_
#define _NGX_HTTP_ROOMS_IPC_H_INCLUDED_


/*
 * The module/sidecar link codec: docs/protocol.md.  Pure C99, no nginx or
 * libuv dependency; compiled by the module and by the sidecar.
 */


#include <stddef.h>
#include <stdint.h>


#ifdef __cplusplus
extern "C" {
#endif


#define NGX_ROOMS_IPC_VERSION        2
#define NGX_ROOMS_IPC_HEADER_LEN     5              /* length:u32 type:u8 */
#define NGX_ROOMS_IPC_MAX_FRAME      (16 * 1024 * 1024)
#define NGX_ROOMS_IPC_STR8_MAX       255

/* worker to sidecar */
#define NGX_ROOMS_IPC_HELLO          0x01
#define NGX_ROOMS_IPC_OPEN           0x02
#define NGX_ROOMS_IPC_MESSAGE        0x03
#define NGX_ROOMS_IPC_CLOSE          0x04
#define NGX_ROOMS_IPC_ROOMS          0x05
#define NGX_ROOMS_IPC_STATS          0x06

/* sidecar to worker */
#define NGX_ROOMS_IPC_SEND           0x81
#define NGX_ROOMS_IPC_ATTACH         0x82
#define NGX_ROOMS_IPC_BROADCAST      0x83
#define NGX_ROOMS_IPC_KICK           0x84
#define NGX_ROOMS_IPC_ROOMS_REPLY    0x85
#define NGX_ROOMS_IPC_HELLO_ACK      0x86
#define NGX_ROOMS_IPC_ACK            0x87
#define NGX_ROOMS_IPC_STATS_REPLY    0x88

/* OPEN flags */
#define NGX_ROOMS_IPC_F_RESUME       0x01
#define NGX_ROOMS_IPC_F_SINCE        0x02

/* MESSAGE flags */
#define NGX_ROOMS_IPC_F_EXPIRED      0x01
#define NGX_ROOMS_IPC_F_RESENT       0x02

/* ngx_rooms_ipc_decode() results other than a frame length */
#define NGX_ROOMS_IPC_INCOMPLETE     0
#define NGX_ROOMS_IPC_MALFORMED      (-1)


typedef struct {
    size_t              len;
    const uint8_t      *data;
} ngx_rooms_ipc_str_t;


/*
 * One frame, decoded or to be encoded.  Which fields a type uses is in
 * docs/protocol.md; the others are ignored by the encoder and zeroed by
 * the decoder.  Strings point into the buffer that was decoded.
 */

typedef struct {
    unsigned             type;
    unsigned             flags;       /* OPEN, MESSAGE */
    unsigned             version;     /* HELLO, HELLO_ACK */
    unsigned             status;      /* KICK: WebSocket close status */
    uint32_t             pid;         /* HELLO */
    uint64_t             id;          /* conn, or request id for ROOMS,
                                         STATS */
    uint64_t             since;       /* OPEN */
    uint64_t             seq;         /* MESSAGE, ACK */
    uint64_t             last_id;     /* ATTACH, BROADCAST */
    ngx_rooms_ipc_str_t  room;        /* OPEN, BROADCAST */
    ngx_rooms_ipc_str_t  name;        /* OPEN */
    ngx_rooms_ipc_str_t  player;      /* OPEN */
    ngx_rooms_ipc_str_t  payload;     /* MESSAGE, SEND, BROADCAST, KICK,
                                         ROOMS_REPLY, STATS_REPLY, ACK;
                                         unknown types:
                                         body */
} ngx_rooms_ipc_msg_t;


/*
 * Decodes the frame at the start of buf[0..len).  Returns the number of
 * bytes the frame occupies (> 0), NGX_ROOMS_IPC_INCOMPLETE when more bytes
 * are needed, or NGX_ROOMS_IPC_MALFORMED when the link must be closed.
 */
long ngx_rooms_ipc_decode(const uint8_t *buf, size_t len,
    ngx_rooms_ipc_msg_t *msg);

/*
 * Bytes that ngx_rooms_ipc_encode() writes for msg, header included, or 0
 * if msg cannot be encoded (unknown type, str8 over 255 bytes, frame over
 * NGX_ROOMS_IPC_MAX_FRAME).
 */
size_t ngx_rooms_ipc_size(const ngx_rooms_ipc_msg_t *msg);

/*
 * Bytes ngx_rooms_ipc_encode_head() writes: the whole frame but the
 * payload bytes, so that a sender can gather the payload from where it
 * lies.  The length field covers the payload.
 */
size_t ngx_rooms_ipc_head_size(const ngx_rooms_ipc_msg_t *msg);

/* Both require a buffer of the size above; they return its end. */
uint8_t *ngx_rooms_ipc_encode(uint8_t *buf, const ngx_rooms_ipc_msg_t *msg);
uint8_t *ngx_rooms_ipc_encode_head(uint8_t *buf,
    const ngx_rooms_ipc_msg_t *msg);


#ifdef __cplusplus
}
#endif


#endif /* _NGX_HTTP_ROOMS_IPC_H_INCLUDED_ */
