
/*
 * Copyright (C) ngx_rooms developers
 */


#ifndef _NGX_HTTP_ROOMS_MODULE_H_INCLUDED_
#define _NGX_HTTP_ROOMS_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_rooms_ipc.h"
#include "ngx_http_rooms_frame.h"
#include "ngx_http_rooms_ext.h"
#include "ngx_http_rooms_utf8.h"
#include "ngx_http_rooms_json.h"


#define NGX_HTTP_ROOMS_ROOM_MAX       32
#define NGX_HTTP_ROOMS_NAME_MAX       32      /* code points */
#define NGX_HTTP_ROOMS_NAME_BYTES     128
#define NGX_HTTP_ROOMS_PLAYER_MAX     64      /* token.pid.conn */
#define NGX_HTTP_ROOMS_MESSAGE_MAX    (1024 * 1024)

#define NGX_HTTP_ROOMS_LOG_CLOSE      0
#define NGX_HTTP_ROOMS_LOG_UPGRADE    1

/*
 * The values of a WebSocket known only at its close: $rooms_* counters
 * and the close code (ngx_http_rooms_variables.c), and, for
 * rooms_access_log, the time of the line and $bytes_sent.
 */

#define NGX_HTTP_ROOMS_V_SESSION_TIME   0
#define NGX_HTTP_ROOMS_V_MESSAGES_IN    1
#define NGX_HTTP_ROOMS_V_MESSAGES_OUT   2
#define NGX_HTTP_ROOMS_V_BYTES_IN       3
#define NGX_HTTP_ROOMS_V_BYTES_OUT      4
#define NGX_HTTP_ROOMS_V_CLOSE_CODE     5
#define NGX_HTTP_ROOMS_V_TIME_LOCAL     6
#define NGX_HTTP_ROOMS_V_TIME_ISO8601   7
#define NGX_HTTP_ROOMS_V_MSEC           8
#define NGX_HTTP_ROOMS_V_BYTES_SENT     9

/* the longest of them: a counter has 20 digits at most */
#define NGX_HTTP_ROOMS_V_LEN                                                  \
    (sizeof("28/Sep/1970:12:00:00 +0600") - 1)


typedef struct ngx_http_rooms_log_s  ngx_http_rooms_log_t;


typedef struct {
    ngx_addr_t                    *sidecar;
    ngx_msec_t                     hold_time;
    size_t                         hold_size;
    ngx_msec_t                     shutdown_spread; /* one per worker */
    ngx_shm_zone_t                *metrics_zone;
} ngx_http_rooms_main_conf_t;


typedef struct {
    ngx_http_complex_value_t      *room;
    ngx_http_complex_value_t      *name;
    ngx_array_t                   *origins;     /* of ngx_str_t */
    ngx_flag_t                     origin_required;
    size_t                         max_message_size;
    size_t                         output_queue_size;
    ngx_msec_t                     ping_interval;
    ngx_msec_t                     idle_timeout;
    ngx_uint_t                     log_at;     /* may stay unset */
    ngx_flag_t                     log_close;  /* nginx's line at close */
    ngx_http_rooms_log_t          *access_log; /* rooms_access_log */
    ngx_flag_t                     deflate;
} ngx_http_rooms_loc_conf_t;


/* a WebSocket frame built once and queued on any number of connections */

typedef struct {
    ngx_uint_t                     refs;
    size_t                         len;
    u_char                         data[1];
} ngx_http_rooms_frame_t;


/* one queued frame of one connection */

typedef struct {
    ngx_chain_t                    cl;
    ngx_buf_t                      buf;
    ngx_http_rooms_frame_t        *frame;
} ngx_http_rooms_out_t;


/*
 * A text message to one or more clients: its plain frame and, for the
 * clients that negotiated permessage-deflate, its compressed frame, each
 * built at most once, when a client first needs it, and held (one
 * reference) until ngx_http_rooms_text_release().
 */

typedef struct {
    u_char                        *payload;
    size_t                         len;
    ngx_log_t                     *log;
    ngx_http_rooms_frame_t        *plain;
    ngx_http_rooms_frame_t        *deflated;
    unsigned                       tried:1;     /* to compress it */
} ngx_http_rooms_text_t;


typedef struct ngx_http_rooms_room_s  ngx_http_rooms_room_t;


/*
 * One upgraded client connection: what an idle WebSocket holds, in a
 * pool of its own with the room code and the name right behind it (see
 * ngx_http_rooms_conn_create()).  The frame parser is the worker's while it reads,
 * and the connection's own only while a frame or message is cut short
 * (see ngx_http_rooms_conn_input()).
 */

typedef struct {
    ngx_rbtree_node_t              node;        /* key: connection number */
    ngx_queue_t                    queue;       /* all live connections */
    ngx_queue_t                    member;      /* room members */
    ngx_queue_t                    dirty;       /* to be flushed */
    ngx_queue_t                    live;        /* open connections */
    ngx_queue_t                    unanswered;  /* messages, by seq */

    ngx_connection_t              *connection;
    ngx_http_request_t            *request;     /* until the takeover, or
                                                   kept: see takeover */
    ngx_http_rooms_room_t         *room;        /* while attached */
    ngx_http_rooms_loc_conf_t     *conf;        /* limits and timers */
    ngx_rooms_ws_parser_t         *parser;      /* input cut short */
    uint64_t                       id;          /* connection number */

    ngx_str_t                      room_code;   /* behind the structure */
    ngx_str_t                      name;        /* behind the room code */
    uint64_t                       since;
    uint64_t                       seq;         /* of the last message */

    ngx_chain_t                   *out;
    ngx_chain_t                  **last_out;
    size_t                         out_size;    /* memory held, see
                                                   NGX_HTTP_ROOMS_OUT_COST */
    ngx_http_rooms_out_t          *pong;        /* queued, not started */
    size_t                         unanswered_size;
    ngx_msec_t                     send_timeout;
    ngx_msec_t                     last_recv;

    /* for the access log ($rooms_* variables) */
    ngx_msec_t                     start;       /* of the WebSocket */
    uint64_t                       messages_in;
    uint64_t                       messages_out;
    uint64_t                       bytes_in;
    off_t                          head_sent;   /* c->sent before frames */
    ngx_uint_t                     close_code;  /* 0: none yet */
    u_char                        *log_line;    /* rooms_access_log's,
                                                   rendered at the upgrade */

    /* permessage-deflate: compressed frames for payloads up to this */
    size_t                         deflate_max;

    unsigned                       has_since:1;
    unsigned                       registered:1; /* known to the link */
    unsigned                       announced:1; /* OPEN sent on this link */
    unsigned                       welcomed:1;  /* got a SEND: joining */
    unsigned                       is_dirty:1;
    unsigned                       close_sent:1;
    unsigned                       close_received:1;
    unsigned                       close_wait:1;
    unsigned                       parser_failed:1;
    unsigned                       detached:1;
    unsigned                       taken:1;     /* the request is gone */
    unsigned                       doomed:1;    /* close at the takeover */
    unsigned                       failed:1;    /* close when flushed */
    unsigned                       log_close:1; /* request logged at close */
    unsigned                       deflate:1;   /* permessage-deflate */
} ngx_http_rooms_conn_t;


struct ngx_http_rooms_room_s {
    ngx_str_node_t                 sn;
    ngx_queue_t                    members;
    ngx_uint_t                     count;
    uint64_t                       last_id;     /* delivered to members */
    u_char                         code[NGX_HTTP_ROOMS_ROOM_MAX];
};


/*
 * One worker's figures in the metrics zone (ngx_http_rooms_metrics.c),
 * written by that worker alone: counters, added up over the workers, and
 * gauges, of the workers alive.
 */

#define NGX_HTTP_ROOMS_M_MESSAGES_IN      0
#define NGX_HTTP_ROOMS_M_MESSAGES_OUT     1
#define NGX_HTTP_ROOMS_M_BYTES_IN         2
#define NGX_HTTP_ROOMS_M_BYTES_OUT        3
#define NGX_HTTP_ROOMS_M_SLOW_KICKS       4
#define NGX_HTTP_ROOMS_M_HELD_EXPIRED     5
#define NGX_HTTP_ROOMS_M_UNAVAILABLE      6
#define NGX_HTTP_ROOMS_M_LINK_RECONNECTS  7
#define NGX_HTTP_ROOMS_M_UPGRADES         8     /* by status: 10 */
#define NGX_HTTP_ROOMS_UPGRADE_CODES      10
#define NGX_HTTP_ROOMS_M_CLOSES           18    /* by close code: 11 */
#define NGX_HTTP_ROOMS_CLOSE_CODES        11
#define NGX_HTTP_ROOMS_COUNTERS           29


typedef struct {
    ngx_atomic_t                   pid;         /* 0: a free slot */
    ngx_atomic_t                   connections;
    ngx_atomic_t                   link_up;
    ngx_atomic_t                   held;        /* messages, not sent */
    ngx_atomic_t                   hold_bytes;  /* unanswered_size */
    ngx_atomic_t                   counter[NGX_HTTP_ROOMS_COUNTERS];
} ngx_http_rooms_stats_t;


#define ngx_http_rooms_count(i, n)                                            \
    ngx_http_rooms_stats->counter[i] += (n)


ngx_int_t ngx_http_rooms_link_init(ngx_cycle_t *cycle,
    ngx_http_rooms_main_conf_t *rmcf);
void ngx_http_rooms_link_exit(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_rooms_link_up(void);
ngx_int_t ngx_http_rooms_link_message(ngx_http_rooms_conn_t *conn,
    u_char *data, size_t len);
ngx_int_t ngx_http_rooms_link_open(ngx_http_rooms_conn_t *conn);
void ngx_http_rooms_link_close(ngx_http_rooms_conn_t *conn);
u_char *ngx_http_rooms_link_player(ngx_http_rooms_conn_t *conn, u_char *buf);
ngx_int_t ngx_http_rooms_link_request(ngx_http_request_t *r,
    ngx_uint_t type, ngx_msec_t timeout);

ngx_http_rooms_conn_t *ngx_http_rooms_conn_create(ngx_http_request_t *r,
    ngx_str_t *room, ngx_str_t *name);
ngx_int_t ngx_http_rooms_conn_start(ngx_http_request_t *r,
    ngx_http_rooms_conn_t *conn, ngx_str_t *accept, ngx_str_t *extensions);
ngx_uint_t ngx_http_rooms_conn_drained(void);
ngx_http_rooms_frame_t *ngx_http_rooms_frame_create(ngx_uint_t opcode,
    u_char *payload, size_t len, ngx_log_t *log);
void ngx_http_rooms_frame_release(ngx_http_rooms_frame_t *frame);
void ngx_http_rooms_memory_freed(size_t size);
ngx_http_rooms_out_t *ngx_http_rooms_conn_queue(
    ngx_http_rooms_conn_t *conn, ngx_http_rooms_frame_t *frame);
ngx_int_t ngx_http_rooms_conn_send(ngx_http_rooms_conn_t *conn,
    ngx_uint_t opcode, u_char *data, size_t len);
void ngx_http_rooms_conn_kick(ngx_http_rooms_conn_t *conn,
    ngx_uint_t status, u_char *reason, size_t len);
void ngx_http_rooms_conn_flush_dirty(void);
void ngx_http_rooms_conn_exit(void);

ngx_int_t ngx_http_rooms_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_rooms_main_conf_t *rmcf);
void ngx_http_rooms_metrics_init_process(ngx_cycle_t *cycle,
    ngx_http_rooms_main_conf_t *rmcf);
void ngx_http_rooms_metrics_exit_process(void);
void ngx_http_rooms_metrics_upgrade(ngx_uint_t status);
void ngx_http_rooms_metrics_close(ngx_uint_t code);
ngx_int_t ngx_http_rooms_metrics_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_rooms_metrics_send(ngx_http_request_t *r,
    ngx_rooms_ipc_str_t *sidecar);

ngx_http_rooms_frame_t *ngx_http_rooms_text_frame(ngx_http_rooms_text_t *t,
    ngx_http_rooms_conn_t *conn);
void ngx_http_rooms_text_release(ngx_http_rooms_text_t *t);
ngx_uint_t ngx_http_rooms_inflate(u_char *in, size_t len, size_t max,
    u_char **out, size_t *out_len, char **reason, ngx_log_t *log);
void ngx_http_rooms_deflate_exit(void);


ngx_int_t ngx_http_rooms_add_variables(ngx_conf_t *cf);
ngx_int_t ngx_http_rooms_close_variable(ngx_str_t *name);
u_char *ngx_http_rooms_close_value(ngx_http_rooms_conn_t *conn,
    ngx_uint_t value, u_char *buf);

char *ngx_http_rooms_access_log(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_rooms_log_upgrade(ngx_http_request_t *r,
    ngx_http_rooms_conn_t *conn);
void ngx_http_rooms_log_close(ngx_http_rooms_conn_t *conn);
ngx_int_t ngx_http_rooms_send_buffer(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *type, size_t type_len, ngx_buf_t *b);



extern ngx_module_t             ngx_http_rooms_module;
extern ngx_http_rooms_stats_t  *ngx_http_rooms_stats;


#endif /* _NGX_HTTP_ROOMS_MODULE_H_INCLUDED_ */
