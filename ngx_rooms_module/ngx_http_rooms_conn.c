
/*
 * Copyright (C) ngx_rooms developers
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_rooms_module.h"

#if (NGX_LINUX && defined __GLIBC__)
#include <malloc.h>
#define NGX_HTTP_ROOMS_MALLOC_TRIM  1
#endif


#define NGX_HTTP_ROOMS_RECV_SIZE   16384

/* bytes read from one client before the worker serves others */
#define NGX_HTTP_ROOMS_READ_BUDGET  (4 * NGX_HTTP_ROOMS_RECV_SIZE)
#define NGX_HTTP_ROOMS_CLOSE_WAIT  3000
#define NGX_HTTP_ROOMS_FREE_OUT    1024

/* freed since the last trim of the heap, and the least time between trims */
#define NGX_HTTP_ROOMS_TRIM_SIZE   (1024 * 1024)
#define NGX_HTTP_ROOMS_TRIM_TIME   1000

/* what a queued frame holds: its bytes and its queue entry */
#define NGX_HTTP_ROOMS_OUT_COST(len)                                          \
    ((len) + sizeof(ngx_http_rooms_out_t) + sizeof(ngx_http_rooms_frame_t))
#define NGX_HTTP_ROOMS_HOLD        3600000


/*
 * A graceful shutdown (reload, binary upgrade) does not drop clients:
 * a worker with clients keeps one non-cancelable timer, so that nginx
 * lets it run until they leave.  When the drain ends (the shutdown timer
 * of worker_shutdown_timeout sets c->close), the same timer closes the
 * clients left one by one, spread over "rooms_shutdown_spread".
 */

typedef struct {
    ngx_event_t                    event;
    ngx_msec_t                     start;
    ngx_msec_t                     spread;
    ngx_uint_t                     total;      /* open clients at the end */
    ngx_uint_t                     turn;       /* clients closed so far */
    unsigned                       ending:1;
} ngx_http_rooms_drain_t;


static void ngx_http_rooms_conn_read_handler(ngx_event_t *rev);
static void ngx_http_rooms_conn_write_handler(ngx_event_t *wev);
static ngx_int_t ngx_http_rooms_conn_read(ngx_http_rooms_conn_t *conn);
static ngx_int_t ngx_http_rooms_conn_tick(ngx_http_rooms_conn_t *conn);
static ngx_int_t ngx_http_rooms_conn_input(ngx_http_rooms_conn_t *conn,
    u_char *pos, u_char *last);
static ngx_int_t ngx_http_rooms_conn_parse(ngx_http_rooms_conn_t *conn,
    u_char *pos, u_char *last);
static void ngx_http_rooms_conn_drop_parser(ngx_http_rooms_conn_t *conn);
static ngx_int_t ngx_http_rooms_conn_event(ngx_http_rooms_conn_t *conn,
    ngx_rooms_ws_event_t *ev);
static ngx_int_t ngx_http_rooms_conn_grow(ngx_http_rooms_conn_t *conn,
    size_t size);
static ngx_int_t ngx_http_rooms_conn_close_with(ngx_http_rooms_conn_t *conn,
    ngx_uint_t status, u_char *reason, size_t len);
static ngx_int_t ngx_http_rooms_conn_going_away(ngx_http_rooms_conn_t *conn);
static ngx_int_t ngx_http_rooms_conn_flush(ngx_http_rooms_conn_t *conn);
static void ngx_http_rooms_conn_finalize(ngx_http_rooms_conn_t *conn);
static void ngx_http_rooms_conn_takeover(ngx_event_t *wev);
static size_t ngx_http_rooms_conn_moved_size(ngx_connection_t *c);
static void ngx_http_rooms_conn_move(ngx_connection_t *c);
static void ngx_http_rooms_conn_pool_cleanup(void *data);
static void ngx_http_rooms_conn_request_gone(void *data);
static void ngx_http_rooms_conn_keep(ngx_http_request_t *r,
    ngx_http_rooms_conn_t *conn);
static ngx_int_t ngx_http_rooms_conn_save_strings(ngx_http_request_t *r,
    ngx_http_connection_t *hc);
static void ngx_http_rooms_conn_relocate(ngx_http_request_t *r,
    u_char *start, u_char *end, u_char *to);
static void ngx_http_rooms_conn_closing(ngx_http_rooms_conn_t *conn);
static void ngx_http_rooms_conn_free_buffers(ngx_connection_t *c,
    ngx_http_connection_t *hc);
static void ngx_http_rooms_conn_detach(ngx_http_rooms_conn_t *conn);
static ngx_int_t ngx_http_rooms_conn_pong(ngx_http_rooms_conn_t *conn,
    u_char *data, size_t len);
static void ngx_http_rooms_conn_fail(ngx_http_rooms_conn_t *conn);
static void ngx_http_rooms_conn_drop_unsent(ngx_http_rooms_conn_t *conn);
static void ngx_http_rooms_conn_unqueue(ngx_http_rooms_conn_t *conn,
    ngx_http_rooms_out_t *out);
static void ngx_http_rooms_conn_drain_end(void);
#if (NGX_HTTP_ROOMS_MALLOC_TRIM)
static void ngx_http_rooms_trim_handler(ngx_event_t *ev);
#endif
static void ngx_http_rooms_conn_drain_handler(ngx_event_t *ev);


static u_char        ngx_http_rooms_recv_buf[NGX_HTTP_ROOMS_RECV_SIZE];
static ngx_queue_t   ngx_http_rooms_dirty;
static ngx_queue_t   ngx_http_rooms_live;
static ngx_uint_t    ngx_http_rooms_queues_init;
static ngx_chain_t  *ngx_http_rooms_free_out;
static ngx_uint_t    ngx_http_rooms_free_out_n;

static ngx_http_rooms_drain_t  ngx_http_rooms_drain;

/* the worker's frame parser: see ngx_http_rooms_conn_input() */
static ngx_rooms_ws_parser_t   ngx_http_rooms_parser;

#if (NGX_HTTP_ROOMS_MALLOC_TRIM)
static size_t        ngx_http_rooms_freed;
static ngx_event_t   ngx_http_rooms_trim_event;
#endif


/*
 * An upgraded connection lives in a pool of its own, sized to what an
 * idle WebSocket keeps: this structure with its room code and name and,
 * once the request is gone, what the connection still uses of its
 * original pool (ngx_http_rooms_conn_move()).  That pool, a block of
 * connection_pool_size with the HTTP connection's state, then goes.
 * Until then, the original pool destroys this one with itself.
 */

ngx_http_rooms_conn_t *
ngx_http_rooms_conn_create(ngx_http_request_t *r, ngx_str_t *room,
    ngx_str_t *name)
{
    size_t                      size;
    ngx_pool_t                 *pool;
    ngx_connection_t           *c;
    ngx_pool_cleanup_t         *cln;
    ngx_http_rooms_conn_t      *conn;
    ngx_http_rooms_loc_conf_t  *rlcf;

    c = r->connection;
    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_rooms_module);

    size = sizeof(ngx_pool_t)
           + ngx_align(sizeof(ngx_http_rooms_conn_t) + room->len + name->len,
                       NGX_ALIGNMENT);

    if (!rlcf->log_close && r->pool->cleanup == NULL
        && c->ssl == NULL && c->proxy_protocol == NULL)
    {
        /* the request will not be kept: room for what moves here */
        size += ngx_http_rooms_conn_moved_size(c);
    }

    cln = ngx_pool_cleanup_add(c->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    pool = ngx_create_pool(size, c->log);
    if (pool == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_rooms_conn_pool_cleanup;
    cln->data = pool;

    conn = ngx_pcalloc(pool, sizeof(ngx_http_rooms_conn_t) + room->len
                             + name->len);
    if (conn == NULL) {
        return NULL;
    }

    conn->room_code.data = (u_char *) (conn + 1);
    conn->room_code.len = room->len;
    ngx_memcpy(conn->room_code.data, room->data, room->len);

    conn->name.data = conn->room_code.data + room->len;
    conn->name.len = name->len;
    ngx_memcpy(conn->name.data, name->data, name->len);

    conn->conf = rlcf;
    conn->log_close = rlcf->log_close;

    return conn;
}


/*
 * Called by the content handler once the upgrade is accepted: the client
 * is announced to the sidecar and the 101 response queued.  The request
 * itself is freed right after the content phase, by
 * ngx_http_rooms_conn_takeover(): an upgraded connection keeps only the
 * pool of this structure (ngx_http_rooms_conn_create()), which becomes
 * the connection's, not a request pool nor the connection's own; unless
 * the request is to last as long as the WebSocket (its access log line
 * written at the close, a limit_conn slot: see there).
 */

ngx_int_t
ngx_http_rooms_conn_start(ngx_http_request_t *r, ngx_http_rooms_conn_t *conn,
    ngx_str_t *accept, ngx_str_t *extensions)
{
    size_t                     len;
    u_char                    *p;
    ngx_connection_t          *c;
    ngx_pool_cleanup_t        *cln;
    ngx_http_rooms_frame_t    *frame;
    ngx_http_core_loc_conf_t  *clcf;

    static u_char  head[] = "HTTP/1.1 101 Switching Protocols" CRLF
                            "Upgrade: websocket" CRLF
                            "Connection: Upgrade" CRLF
                            "Sec-WebSocket-Accept: ";
    static u_char  ext[] = "Sec-WebSocket-Extensions: ";

    c = r->connection;

    if (!ngx_http_rooms_queues_init) {
        ngx_queue_init(&ngx_http_rooms_dirty);
        ngx_queue_init(&ngx_http_rooms_live);
        ngx_http_rooms_queues_init = 1;

        ngx_http_rooms_drain.event.handler = ngx_http_rooms_conn_drain_handler;
        ngx_http_rooms_drain.event.data = &ngx_http_rooms_drain;
        ngx_http_rooms_drain.event.log = ngx_cycle->log;
    }

    /*
     * Until the takeover, nginx may end the request on its own (the
     * shutdown timer of worker_shutdown_timeout, a fast shutdown): the
     * client is then forgotten with it.
     */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_rooms_conn_request_gone;
    cln->data = conn;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    conn->connection = c;
    conn->request = r;
    conn->id = c->number;
    conn->node.key = (ngx_rbtree_key_t) conn->id;
    conn->last_out = &conn->out;
    conn->send_timeout = clcf->send_timeout;
    conn->last_recv = ngx_current_msec;
    conn->start = ngx_current_msec;
    ngx_queue_init(&conn->member);
    ngx_queue_init(&conn->dirty);
    ngx_queue_init(&conn->live);
    ngx_queue_init(&conn->unanswered);

    len = sizeof(head) - 1 + accept->len + 2 * (sizeof(CRLF) - 1);

    if (extensions->len) {
        len += sizeof(ext) - 1 + extensions->len + sizeof(CRLF) - 1;
    }

    frame = ngx_alloc(sizeof(ngx_http_rooms_frame_t) + len, c->log);
    if (frame == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(frame->data, head, sizeof(head) - 1);
    p = ngx_cpymem(p, accept->data, accept->len);
    *p++ = CR; *p++ = LF;

    if (extensions->len) {
        p = ngx_cpymem(p, ext, sizeof(ext) - 1);
        p = ngx_cpymem(p, extensions->data, extensions->len);
        *p++ = CR; *p++ = LF;
    }

    *p++ = CR; *p++ = LF;

    frame->refs = 0;
    frame->len = len;

    conn->head_sent = c->sent + len;

    if (ngx_http_rooms_link_open(conn) != NGX_OK) {
        ngx_free(frame);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_queue_insert_tail(&ngx_http_rooms_live, &conn->live);

    ngx_http_rooms_stats->connections++;
    ngx_http_rooms_metrics_upgrade(NGX_HTTP_SWITCHING_PROTOCOLS);

    /* hold the worker through a graceful shutdown while it has clients */

    if (!ngx_http_rooms_drain.event.timer_set) {
        ngx_add_timer(&ngx_http_rooms_drain.event, NGX_HTTP_ROOMS_HOLD);
    }

    ngx_http_rooms_conn_queue(conn, frame);

    if (clcf->tcp_nodelay && ngx_tcp_nodelay(c) != NGX_OK) {
        ngx_http_rooms_conn_detach(conn);
        return NGX_ERROR;
    }

    ngx_http_set_ctx(r, conn, ngx_http_rooms_module);

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;

    /* hold the request past the content phase; the takeover frees it */

    r->main->count++;

    c->write->handler = ngx_http_rooms_conn_takeover;
    ngx_post_event(c->write, &ngx_posted_events);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "rooms: client joined room \"%V\" as \"%V\"",
                   &conn->room_code, &conn->name);

    return NGX_DONE;
}


/*
 * The drain of a shutting down worker is over: a request read since (the
 * shutdown timer itself runs every connection's read handler) is told to
 * come back, to a new worker.
 */

ngx_uint_t
ngx_http_rooms_conn_drained(void)
{
    return ngx_http_rooms_drain.ending;
}


/*
 * Frees the request and makes the connection a bare WebSocket: our event
 * handlers, no HTTP state.  Frames pipelined behind the request are kept.
 *
 * The request is kept until the connection closes when nginx's access
 * log line is to be written then (rooms_log_at close, the default without
 * rooms_access_log), with its strings moved out of the header buffers;
 * rooms_access_log's own line (SPEC section 5) is rendered here instead
 * and written at the close without the request.  It is kept too when
 * other modules tied something to its life, released by its pool's
 * cleanups: limit_conn's slot is one (SPEC section 5: it is held for the
 * life of the WebSocket).  Any other request is logged and freed here,
 * so that an idle WebSocket costs no request pool, and the connection's
 * pool is replaced by the WebSocket's (ngx_http_rooms_conn_move()).
 */

static void
ngx_http_rooms_conn_takeover(ngx_event_t *wev)
{
    size_t                      size;
    u_char                     *in;
    ngx_buf_t                  *b;
    ngx_int_t                   rc;
    ngx_uint_t                  keep;
    ngx_connection_t           *c;
    ngx_pool_cleanup_t        **cln;
    ngx_http_request_t         *r;
    ngx_http_connection_t      *hc;
    ngx_http_rooms_conn_t      *conn;
    ngx_http_rooms_loc_conf_t  *rlcf;

    c = wev->data;
    r = c->data;
    hc = r->http_connection;
    conn = ngx_http_get_module_ctx(r, ngx_http_rooms_module);

    in = NULL;
    b = r->header_in;
    size = b->last - b->pos;

    if (size) {
        in = ngx_alloc(size, c->log);
        if (in == NULL) {
            size = 0;
            conn->doomed = 1;

        } else {
            ngx_memcpy(in, b->pos, size);
            conn->bytes_in = size;
            ngx_http_rooms_count(NGX_HTTP_ROOMS_M_BYTES_IN, size);
        }
    }

    /* rooms_access_log's line, as far as it is known now */

    if (ngx_http_rooms_log_upgrade(r, conn) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "rooms: the WebSocket's rooms_access_log line "
                      "could not be prepared, it will not be written");
    }

    /* our guard against nginx ending the request first is done */

    for (cln = &r->pool->cleanup; *cln; cln = &(*cln)->next) {
        if ((*cln)->handler == ngx_http_rooms_conn_request_gone) {
            *cln = (*cln)->next;
            break;
        }
    }

    keep = !conn->doomed && (r->pool->cleanup != NULL || conn->log_close);

    if (keep && conn->log_close
        && ngx_http_rooms_conn_save_strings(r, hc) != NGX_OK)
    {
        /* logged now, as a freed one */
        conn->log_close = 0;
        keep = (r->pool->cleanup != NULL);
    }

    if (keep) {
        ngx_http_rooms_conn_keep(r, conn);

    } else {
        ngx_http_free_request(r, 0);
        conn->request = NULL;
    }

    conn->taken = 1;

    ngx_http_rooms_conn_free_buffers(c, hc);

    if (conn->request == NULL && !conn->doomed) {
        ngx_http_rooms_conn_move(c);
    }

    c->data = conn;
    c->log->action = "serving WebSocket";
    c->read->handler = ngx_http_rooms_conn_read_handler;
    c->write->handler = ngx_http_rooms_conn_write_handler;

    /*
     * Not idle: a graceful shutdown must not close a WebSocket at once,
     * the client is served until the drain ends (see above).
     */

    c->idle = 0;

    if (conn->doomed) {
        ngx_free(in);
        ngx_http_rooms_conn_finalize(conn);
        return;
    }

    rlcf = conn->conf;

    if (rlcf->ping_interval || rlcf->idle_timeout) {
        ngx_add_timer(c->read, rlcf->ping_interval ? rlcf->ping_interval
                                                   : rlcf->idle_timeout);
    }

    rc = NGX_OK;

    if (size) {
        rc = ngx_http_rooms_conn_input(conn, in, in + size);
        ngx_free(in);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_rooms_conn_flush(conn);
    }

    if (rc == NGX_ERROR || rc == NGX_DONE) {
        ngx_http_rooms_conn_finalize(conn);
        return;
    }

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}


/*
 * Keeps the request for the life of the WebSocket.  Unless its line is
 * written at the close (then by ngx_http_free_request()), it is logged
 * now, as a freed one is, and the close skips the log (r->logged).
 * Error lines stop showing it either way.
 */

static void
ngx_http_rooms_conn_keep(ngx_http_request_t *r, ngx_http_rooms_conn_t *conn)
{
    ngx_uint_t                  i, n;
    ngx_http_log_ctx_t         *ctx;
    ngx_http_handler_pt        *log_handler;
    ngx_http_core_main_conf_t  *cmcf;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "rooms: request kept for the life of the WebSocket, "
                   "logged at the %s", conn->log_close ? "close" : "upgrade");

    if (!conn->log_close) {
        r->connection->log->action = "logging request";

        cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);

        log_handler = cmcf->phases[NGX_HTTP_LOG_PHASE].handlers.elts;
        n = cmcf->phases[NGX_HTTP_LOG_PHASE].handlers.nelts;

        for (i = 0; i < n; i++) {
            log_handler[i](r);
        }

        r->logged = 1;
    }

#if (NGX_STAT_STUB)

    /* as for a freed request: a WebSocket is not "writing" a response */

    if (r->stat_writing) {
        (void) ngx_atomic_fetch_add(ngx_stat_writing, -1);
        r->stat_writing = 0;
    }

#endif

    ctx = r->connection->log->data;
    ctx->request = NULL;
    ctx->current_request = NULL;
}


/* what ngx_http_rooms_conn_move() takes over from the connection's pool */

static size_t
ngx_http_rooms_conn_moved_size(ngx_connection_t *c)
{
    size_t  size;

    size = ngx_align(sizeof(ngx_log_t), NGX_ALIGNMENT)
           + ngx_align(sizeof(ngx_http_log_ctx_t), NGX_ALIGNMENT)
           + ngx_align(c->socklen, NGX_ALIGNMENT)
           + ngx_align(c->addr_text.len, NGX_ALIGNMENT);

    if (c->local_sockaddr != c->listening->sockaddr) {
        size += ngx_align(c->local_socklen, NGX_ALIGNMENT);
    }

    return size;
}


/*
 * With the request freed, what the connection still refers to in its
 * pool is its log, the log's context (ngx_http_log_ctx_t, for the error
 * lines) and the addresses: they are copied into the WebSocket's pool,
 * which becomes the connection's, and the original pool is destroyed,
 * with the HTTP connection's state and the header buffers' descriptors.
 * Not with TLS or the PROXY protocol (their state is in that pool), nor
 * while anything else holds a part of it: a cleanup or a large
 * allocation of another module.  Then the connection keeps both pools.
 */

static void
ngx_http_rooms_conn_move(ngx_connection_t *c)
{
    u_char              *text;
    ngx_log_t           *log;
    ngx_pool_t          *pool, *old;
    struct sockaddr     *sa, *local;
    ngx_pool_large_t    *l;
    ngx_pool_cleanup_t  *cln;
    ngx_http_log_ctx_t  *ctx;

    old = c->pool;
    cln = old->cleanup;

    if (cln == NULL || cln->next != NULL
        || cln->handler != ngx_http_rooms_conn_pool_cleanup
        || c->ssl || c->proxy_protocol)
    {
        return;
    }

    for (l = old->large; l; l = l->next) {
        if (l->alloc) {
            return;
        }
    }

    pool = cln->data;

    log = ngx_palloc(pool, sizeof(ngx_log_t));
    ctx = ngx_palloc(pool, sizeof(ngx_http_log_ctx_t));
    sa = ngx_palloc(pool, c->socklen);
    text = ngx_pnalloc(pool, c->addr_text.len);
    local = c->local_sockaddr;

    if (local != c->listening->sockaddr) {
        local = ngx_palloc(pool, c->local_socklen);
    }

    if (log == NULL || ctx == NULL || sa == NULL || text == NULL
        || local == NULL)
    {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "rooms: connection pool replaced by the WebSocket's");

    *log = *c->log;
    *ctx = *(ngx_http_log_ctx_t *) c->log->data;
    log->data = ctx;

    ngx_memcpy(sa, c->sockaddr, c->socklen);
    ngx_memcpy(text, c->addr_text.data, c->addr_text.len);

    if (local != c->local_sockaddr) {
        ngx_memcpy(local, c->local_sockaddr, c->local_socklen);
    }

    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->sockaddr = sa;
    c->addr_text.data = text;
    c->local_sockaddr = local;

    /* a header buffer the pool could not free is gone with it */
    c->buffer = NULL;

    pool->log = log;

    old->cleanup = NULL;
    old->log = log;
    ngx_destroy_pool(old);

    c->pool = pool;
}


static void
ngx_http_rooms_conn_pool_cleanup(void *data)
{
    ngx_pool_t  *pool = data;

    ngx_destroy_pool(pool);
}


/*
 * The request's strings are in the header buffers, freed at the takeover:
 * for a line written at the close, what of them was read is copied into
 * the request's pool, and the pointers into them are moved there: the
 * request's own, its headers' and the values of the variables evaluated
 * so far.  Nothing else of a request refers to those buffers.
 */

static ngx_int_t
ngx_http_rooms_conn_save_strings(ngx_http_request_t *r,
    ngx_http_connection_t *hc)
{
    u_char       *p, *last;
    size_t        size;
    ngx_buf_t    *b;
    ngx_uint_t    pass;
    ngx_chain_t  *cl, first;

    first.buf = r->connection->buffer;
    first.next = hc->busy;

    p = NULL;
    size = 0;

    for (pass = 0; pass < 2; pass++) {

        for (cl = first.buf ? &first : hc->busy; cl; cl = cl->next) {
            b = cl->buf;

            /* the bytes pipelined behind the request are not its own */
            last = (b == r->header_in) ? b->pos : b->last;

            if (pass == 0) {
                size += last - b->start;
                continue;
            }

            ngx_memcpy(p, b->start, last - b->start);
            ngx_http_rooms_conn_relocate(r, b->start, last, p);
            p += last - b->start;
        }

        if (pass == 0) {
            p = ngx_pnalloc(r->pool, size);
            if (p == NULL) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


#define ngx_http_rooms_reloc(ptr)                                            \
    if ((u_char *) (ptr) >= start && (u_char *) (ptr) <= end) {               \
        (ptr) = to + ((u_char *) (ptr) - start);                              \
    }

static void
ngx_http_rooms_conn_relocate(ngx_http_request_t *r, u_char *start,
    u_char *end, u_char *to)
{
    ngx_uint_t                  i;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_http_variable_value_t  *v;
    ngx_http_core_main_conf_t  *cmcf;

    ngx_http_rooms_reloc(r->request_line.data);
    ngx_http_rooms_reloc(r->uri.data);
    ngx_http_rooms_reloc(r->args.data);
    ngx_http_rooms_reloc(r->exten.data);
    ngx_http_rooms_reloc(r->unparsed_uri.data);
    ngx_http_rooms_reloc(r->method_name.data);
    ngx_http_rooms_reloc(r->http_protocol.data);
    ngx_http_rooms_reloc(r->schema.data);
    ngx_http_rooms_reloc(r->captures_data);
    ngx_http_rooms_reloc(r->headers_in.server.data);
    ngx_http_rooms_reloc(r->headers_in.user.data);
    ngx_http_rooms_reloc(r->headers_in.passwd.data);

    ngx_http_rooms_reloc(r->header_name_start);
    ngx_http_rooms_reloc(r->header_name_end);
    ngx_http_rooms_reloc(r->header_start);
    ngx_http_rooms_reloc(r->header_end);
    ngx_http_rooms_reloc(r->uri_start);
    ngx_http_rooms_reloc(r->uri_end);
    ngx_http_rooms_reloc(r->uri_ext);
    ngx_http_rooms_reloc(r->args_start);
    ngx_http_rooms_reloc(r->request_start);
    ngx_http_rooms_reloc(r->request_end);
    ngx_http_rooms_reloc(r->method_end);
    ngx_http_rooms_reloc(r->schema_start);
    ngx_http_rooms_reloc(r->schema_end);
    ngx_http_rooms_reloc(r->host_start);
    ngx_http_rooms_reloc(r->host_end);
    ngx_http_rooms_reloc(r->port_start);
    ngx_http_rooms_reloc(r->port_end);

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            ngx_http_rooms_reloc(h[i].key.data);
            ngx_http_rooms_reloc(h[i].value.data);
            ngx_http_rooms_reloc(h[i].lowcase_key);
        }
    }

    if (r->variables == NULL) {
        return;
    }

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);
    v = r->variables;

    for (i = 0; i < cmcf->variables.nelts; i++) {
        if (v[i].valid) {
            ngx_http_rooms_reloc(v[i].data);
        }
    }
}


/*
 * The header buffers are not needed any more, as on a keepalive
 * (ngx_http_set_keepalive()): the client header buffer and the large
 * header buffers a long request took, up to 4 x 8 KiB by default.  The
 * bytes pipelined behind the request were copied out before.
 */

static void
ngx_http_rooms_conn_free_buffers(ngx_connection_t *c,
    ngx_http_connection_t *hc)
{
    ngx_buf_t     *b;
    ngx_uint_t     i;
    ngx_chain_t   *cl, *ln, **lists[2];

    lists[0] = &hc->busy;
    lists[1] = &hc->free;

    for (i = 0; i < 2; i++) {

        for (cl = *lists[i]; cl; /* void */) {
            ln = cl;
            cl = cl->next;
            ngx_pfree(c->pool, ln->buf->start);
            ngx_free_chain(c->pool, ln);
        }

        *lists[i] = NULL;
    }

    hc->nbusy = 0;

    b = c->buffer;

    if (b != NULL && ngx_pfree(c->pool, b->start) == NGX_OK) {
        c->buffer = NULL;
    }
}


static void
ngx_http_rooms_conn_request_gone(void *data)
{
    ngx_http_rooms_conn_t  *conn = data;

    /* the takeover unlinks this cleanup: nginx closes the connection */

    ngx_log_error(NGX_LOG_INFO, conn->connection->log, 0,
                  "rooms: request ended before the upgrade took over");

    ngx_http_rooms_conn_detach(conn);
}


static void
ngx_http_rooms_conn_read_handler(ngx_event_t *rev)
{
    ngx_int_t               rc;
    ngx_connection_t       *c;
    ngx_http_rooms_conn_t  *conn;

    c = rev->data;
    conn = c->data;

    if (c->close) {

        /*
         * The shutdown timer (worker_shutdown_timeout) ends the drain.
         * The client is served until its turn in the spread comes.
         */

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "rooms: drain over, client waits for its turn");

        c->close = 0;
        c->error = 0;

        ngx_http_rooms_conn_drain_end();

        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;
        rc = ngx_http_rooms_conn_tick(conn);

    } else {
        rc = ngx_http_rooms_conn_read(conn);
    }

    if (rc == NGX_ERROR) {
        ngx_http_rooms_conn_finalize(conn);
    }

    /* output queued by this input: pongs, the close frame, unavailable */

    ngx_http_rooms_conn_flush_dirty();
}


/*
 * Reads and acts on everything the client sent.  Returns NGX_ERROR when
 * the connection is to be closed now.
 */

static ngx_int_t
ngx_http_rooms_conn_read(ngx_http_rooms_conn_t *conn)
{
    size_t             budget;
    ssize_t            n;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = conn->connection;

    for (budget = NGX_HTTP_ROOMS_READ_BUDGET; /* void */ ; ) {

        if (budget == 0) {

            /*
             * One fast client does not hold the worker: the rest of its
             * input is read after the next round of events.
             */

            ngx_post_event(c->read, &ngx_posted_next_events);

            return NGX_OK;
        }

        n = c->recv(c, ngx_http_rooms_recv_buf, NGX_HTTP_ROOMS_RECV_SIZE);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "rooms: client closed the connection");
            c->read->eof = 1;
            return NGX_ERROR;
        }

        conn->last_recv = ngx_current_msec;
        conn->bytes_in += n;
        budget -= ngx_min((size_t) n, budget);

        ngx_http_rooms_count(NGX_HTTP_ROOMS_M_BYTES_IN, n);

        rc = ngx_http_rooms_conn_input(conn, ngx_http_rooms_recv_buf,
                                       ngx_http_rooms_recv_buf + n);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The read timer: pings a quiet client, closes a silent one with 1001,
 * and ends the wait for the client's close frame.
 */

static ngx_int_t
ngx_http_rooms_conn_tick(ngx_http_rooms_conn_t *conn)
{
    ngx_msec_t         idle, next, ping, timeout;
    ngx_connection_t  *c;

    c = conn->connection;
    ping = conn->conf->ping_interval;
    timeout = conn->conf->idle_timeout;

    if (conn->close_sent) {

        if (!conn->close_wait) {
            /* our close frame is not written yet: send_timeout bounds it */
            return NGX_OK;
        }

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "rooms: no close frame from client in time");
        return NGX_ERROR;
    }

    idle = ngx_current_msec - conn->last_recv;

    if (timeout && idle >= timeout) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "rooms: client silent for %Mms, closing", idle);

        return ngx_http_rooms_conn_close_with(conn,
                                              NGX_ROOMS_WS_CLOSE_GOING_AWAY,
                                              (u_char *) "idle timeout",
                                              sizeof("idle timeout") - 1);
    }

    next = ping;

    if (ping && idle >= ping) {
        if (ngx_http_rooms_conn_send(conn, NGX_ROOMS_WS_OP_PING,
                                             NULL, 0)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (timeout && (next == 0 || timeout - idle < next)) {
        next = timeout - idle;
    }

    ngx_add_timer(c->read, next);

    return NGX_OK;
}


/*
 * Parses client input and acts on it.  Returns NGX_OK to go on reading,
 * NGX_ERROR to close now.
 *
 * The parser is the worker's one (ngx_http_rooms_parser) as long as
 * input comes in whole frames: an idle connection holds none.  One that
 * a read leaves inside a frame or a fragmented message keeps its own
 * copy until the rest comes.
 */

static ngx_int_t
ngx_http_rooms_conn_input(ngx_http_rooms_conn_t *conn, u_char *pos,
    u_char *last)
{
    ngx_int_t               rc;
    ngx_rooms_ws_parser_t  *p;

    if (conn->close_sent && conn->parser_failed) {
        /* the stream is garbage: wait for the end of it */
        return NGX_OK;
    }

    if (conn->parser == NULL) {
        p = &ngx_http_rooms_parser;
        ngx_rooms_ws_parser_init(p, conn->conf->max_message_size);
        p->deflate = conn->deflate;
        conn->parser = p;
    }

    rc = ngx_http_rooms_conn_parse(conn, pos, last);

    p = conn->parser;

    /* a connection to be closed now needs it no more */

    if (rc == NGX_ERROR || ngx_rooms_ws_parser_idle(p)) {
        ngx_http_rooms_conn_drop_parser(conn);
        return rc;
    }

    if (p == &ngx_http_rooms_parser) {
        p = ngx_alloc(sizeof(ngx_rooms_ws_parser_t), conn->connection->log);
        if (p == NULL) {
            ngx_http_rooms_conn_drop_parser(conn);
            return NGX_ERROR;
        }

        ngx_memcpy(p, &ngx_http_rooms_parser, sizeof(ngx_rooms_ws_parser_t));
        conn->parser = p;
    }

    return rc;
}


static ngx_int_t
ngx_http_rooms_conn_parse(ngx_http_rooms_conn_t *conn, u_char *pos,
    u_char *last)
{
    ngx_int_t              rc;
    ngx_rooms_ws_event_t   ev;

    while (pos < last) {

        rc = ngx_rooms_ws_parse(conn->parser, &pos, last, &ev);

        switch (rc) {

        case NGX_ROOMS_WS_AGAIN:
            return NGX_OK;

        case NGX_ROOMS_WS_NEED_BUF:
            if (ngx_http_rooms_conn_grow(conn, ev.len) != NGX_OK) {
                return NGX_ERROR;
            }

            break;

        case NGX_ROOMS_WS_EVENT:
            rc = ngx_http_rooms_conn_event(conn, &ev);
            if (rc != NGX_OK) {
                return rc;
            }

            break;

        default: /* NGX_ROOMS_WS_ERROR */
            ngx_log_error(NGX_LOG_INFO, conn->connection->log, 0,
                          "rooms: client protocol error %ui: %s",
                          (ngx_uint_t) ev.status, ev.reason);

            conn->parser_failed = 1;

            return ngx_http_rooms_conn_close_with(conn, ev.status,
                                                  (u_char *) ev.reason,
                                                  ngx_strlen(ev.reason));
        }
    }

    return NGX_OK;
}


/*
 * Frees the parser the connection holds and its message buffer; the
 * worker's parser itself stays.
 */

static void
ngx_http_rooms_conn_drop_parser(ngx_http_rooms_conn_t *conn)
{
    ngx_rooms_ws_parser_t  *p;

    p = conn->parser;
    conn->parser = NULL;

    if (p == NULL) {
        return;
    }

    ngx_free(p->buf);
    p->buf = NULL;

    if (p != &ngx_http_rooms_parser) {
        ngx_free(p);
    }
}


static ngx_int_t
ngx_http_rooms_conn_event(ngx_http_rooms_conn_t *conn,
    ngx_rooms_ws_event_t *ev)
{
    char        *reason;
    u_char      *data;
    size_t       len;
    ngx_int_t    rc;
    ngx_uint_t   status;

    switch (ev->opcode) {

    case NGX_ROOMS_WS_OP_TEXT:

        rc = NGX_OK;
        reason = NULL;
        data = (u_char *) ev->data;
        len = ev->len;
        status = 0;

        if (!conn->close_sent && ev->compressed) {

            /* permessage-deflate: at most the message limit, UTF-8 */

            status = ngx_http_rooms_inflate(data, len,
                                            conn->conf->max_message_size,
                                            &data, &len, &reason,
                                            conn->connection->log);
        }

        if (status) {
            ngx_log_error(NGX_LOG_INFO, conn->connection->log, 0,
                          "rooms: client protocol error %ui: %s",
                          status, reason);

            conn->parser_failed = 1;

            rc = ngx_http_rooms_conn_close_with(conn, status,
                                                (u_char *) reason,
                                                ngx_strlen(reason));

        } else if (!conn->close_sent) {
            ngx_http_rooms_count(NGX_HTTP_ROOMS_M_MESSAGES_IN, 1);

            /* sent to the sidecar, or held while there is none */
            conn->messages_in++;
            rc = ngx_http_rooms_link_message(conn, data, len);
        }

        if (data != (u_char *) ev->data) {
            ngx_free(data);
        }

        /* the message buffer is not needed between messages */

        ngx_free(conn->parser->buf);
        conn->parser->buf = NULL;
        conn->parser->buf_size = 0;

        return rc;

    case NGX_ROOMS_WS_OP_PING:
        if (!conn->close_sent) {
            return ngx_http_rooms_conn_pong(conn, (u_char *) ev->data,
                                            ev->len);
        }

        break;

    case NGX_ROOMS_WS_OP_PONG:
        break;

    case NGX_ROOMS_WS_OP_CLOSE:
        conn->close_received = 1;

        if (conn->close_code == 0) {
            conn->close_code = ev->status;
        }

        if (conn->close_sent) {
            /* the close handshake is complete once ours is written */
            return conn->out ? NGX_OK : NGX_ERROR;
        }

        status = (ev->status == NGX_ROOMS_WS_CLOSE_NO_STATUS)
                 ? NGX_ROOMS_WS_CLOSE_NORMAL : ev->status;

        return ngx_http_rooms_conn_close_with(conn, status, NULL, 0);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_conn_grow(ngx_http_rooms_conn_t *conn, size_t size)
{
    u_char                 *buf;
    size_t                  need, max;
    ngx_rooms_ws_parser_t  *p;

    /*
     * Geometric growth, up to the message limit: a message sent in many
     * small fragments costs time linear in its size, not quadratic.
     */

    p = conn->parser;
    need = size;
    max = p->max_message;

    if (size < 2 * p->buf_size) {
        size = 2 * p->buf_size;
    }

    if (size < 1024) {
        size = 1024;
    }

    if (max && size > max) {
        size = max;
    }

    if (size < need) {
        size = need;
    }

    buf = ngx_alloc(size, conn->connection->log);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    if (p->buf) {
        ngx_memcpy(buf, p->buf, p->msg_len);
        ngx_free(p->buf);
    }

    p->buf = buf;
    p->buf_size = size;

    return NGX_OK;
}


/*
 * One frame built for this client alone (a control frame, a reply of the
 * worker's own); NGX_ERROR if it cannot be built.
 */

ngx_int_t
ngx_http_rooms_conn_send(ngx_http_rooms_conn_t *conn,
    ngx_uint_t opcode, u_char *data, size_t len)
{
    ngx_http_rooms_text_t    text;
    ngx_http_rooms_frame_t  *frame;

    if (opcode == NGX_ROOMS_WS_OP_TEXT && conn->deflate) {
        ngx_memzero(&text, sizeof(ngx_http_rooms_text_t));

        text.payload = data;
        text.len = len;
        text.log = conn->connection->log;

        frame = ngx_http_rooms_text_frame(&text, conn);
        if (frame == NULL) {
            return NGX_ERROR;
        }

        ngx_http_rooms_conn_queue(conn, frame);
        ngx_http_rooms_text_release(&text);

        return NGX_OK;
    }

    /* control frames are never compressed */

    frame = ngx_http_rooms_frame_create(opcode, data, len,
                                        conn->connection->log);
    if (frame == NULL) {
        return NGX_ERROR;
    }

    ngx_http_rooms_conn_queue(conn, frame);

    return NGX_OK;
}


/*
 * Queues a close frame; nothing is queued after it.  Once it is written
 * the connection waits a little for the client's close frame, then goes.
 */

static ngx_int_t
ngx_http_rooms_conn_close_with(ngx_http_rooms_conn_t *conn,
    ngx_uint_t status, u_char *reason, size_t len)
{
    u_char  payload[NGX_ROOMS_WS_CONTROL_MAX];

    if (conn->close_sent) {
        return NGX_OK;
    }

    if (len > NGX_ROOMS_WS_CONTROL_MAX - 2) {
        len = NGX_ROOMS_WS_CONTROL_MAX - 2;
    }

    payload[0] = (u_char) (status >> 8);
    payload[1] = (u_char) (status & 0xff);

    if (conn->close_code == 0) {
        conn->close_code = status;
    }

    if (len) {
        ngx_memcpy(payload + 2, reason, len);
    }

    if (ngx_http_rooms_conn_send(conn, NGX_ROOMS_WS_OP_CLOSE,
                                         payload, len + 2)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    conn->close_sent = 1;

    ngx_http_rooms_metrics_close(status);

    /* the sidecar forgets the client now; its close may never come */

    ngx_http_rooms_link_close(conn);

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_conn_going_away(ngx_http_rooms_conn_t *conn)
{
    return ngx_http_rooms_conn_close_with(conn, NGX_ROOMS_WS_CLOSE_GOING_AWAY,
                                          (u_char *) "server shutting down",
                                          sizeof("server shutting down") - 1);
}


/*
 * Closes a client with a status from anywhere: its callers may hold the
 * connection, so a client that cannot even be sent its close frame is
 * closed later, by ngx_http_rooms_conn_flush_dirty().
 */

void
ngx_http_rooms_conn_kick(ngx_http_rooms_conn_t *conn, ngx_uint_t status,
    u_char *reason, size_t len)
{
    if (ngx_http_rooms_conn_close_with(conn, status, reason, len)
        == NGX_ERROR)
    {
        ngx_http_rooms_conn_fail(conn);
    }
}


ngx_http_rooms_frame_t *
ngx_http_rooms_frame_create(ngx_uint_t opcode, u_char *payload, size_t len,
    ngx_log_t *log)
{
    size_t                   n;
    ngx_http_rooms_frame_t  *frame;

    frame = ngx_alloc(sizeof(ngx_http_rooms_frame_t)
                      + NGX_ROOMS_WS_HEADER_MAX + len, log);
    if (frame == NULL) {
        return NULL;
    }

    n = ngx_rooms_ws_frame_header(frame->data, opcode, len);

    if (len) {
        ngx_memcpy(frame->data + n, payload, len);
    }

    frame->refs = 0;
    frame->len = n + len;

    return frame;
}


/*
 * Drops one reference; a frame that no connection took is freed too.
 */

void
ngx_http_rooms_frame_release(ngx_http_rooms_frame_t *frame)
{
    if (frame->refs > 1) {
        frame->refs--;
        return;
    }

    ngx_free(frame);
}


/*
 * Memory that clients held goes back to the system, not only to the
 * heap: glibc keeps the freed small blocks of a burst (held messages,
 * link buffers, the queue of a client that left, queue entries past the
 * cache) in its heap, so once a megabyte or more of such was freed,
 * malloc_trim() gives the free pages back, once a second at most.  The
 * steady churn of frames written is not counted: the heap reuses it.
 */

void
ngx_http_rooms_memory_freed(size_t size)
{
#if (NGX_HTTP_ROOMS_MALLOC_TRIM)

    ngx_event_t  *ev;

    ngx_http_rooms_freed += size;

    ev = &ngx_http_rooms_trim_event;

    if (ngx_http_rooms_freed < NGX_HTTP_ROOMS_TRIM_SIZE || ev->timer_set) {
        return;
    }

    ev->handler = ngx_http_rooms_trim_handler;
    ev->log = ngx_cycle->log;
    ev->cancelable = 1;

    ngx_add_timer(ev, NGX_HTTP_ROOMS_TRIM_TIME);

#endif
}


#if (NGX_HTTP_ROOMS_MALLOC_TRIM)

static void
ngx_http_rooms_trim_handler(ngx_event_t *ev)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "rooms: %uz bytes freed, heap trimmed",
                   ngx_http_rooms_freed);

    ngx_http_rooms_freed = 0;

    (void) malloc_trim(0);
}

#endif


/*
 * Queues a frame on a connection (taking a reference) and marks the
 * connection to be flushed by ngx_http_rooms_conn_flush_dirty().  A
 * client whose queue is over its limit is closed with 1008.  Returns the
 * queue entry, or NULL if the frame was not queued: the connection is
 * closing, or failed and is closed by ngx_http_rooms_conn_flush_dirty().
 * The connection is never closed here, whatever happens: callers go on
 * using it.
 */

ngx_http_rooms_out_t *
ngx_http_rooms_conn_queue(ngx_http_rooms_conn_t *conn,
    ngx_http_rooms_frame_t *frame)
{
    ngx_chain_t           *cl;
    ngx_http_rooms_out_t  *out;

    if (conn->close_sent || conn->detached || conn->failed) {
        if (frame->refs == 0) {
            ngx_free(frame);
        }

        return NULL;
    }

    if (conn->out_size + NGX_HTTP_ROOMS_OUT_COST(frame->len)
        > conn->conf->output_queue_size
        && frame->data[0] != (0x80 | NGX_ROOMS_WS_OP_CLOSE))
    {
        ngx_log_error(NGX_LOG_INFO, conn->connection->log, 0,
                      "rooms: client too slow, %uz bytes queued",
                      conn->out_size);

        ngx_http_rooms_count(NGX_HTTP_ROOMS_M_SLOW_KICKS, 1);

        if (frame->refs == 0) {
            ngx_free(frame);
        }

        /* the close frame goes next, not behind what the client lags */

        ngx_http_rooms_conn_drop_unsent(conn);

        ngx_http_rooms_conn_kick(conn, NGX_ROOMS_WS_CLOSE_POLICY,
                                 (u_char *) "slow consumer",
                                 sizeof("slow consumer") - 1);
        return NULL;
    }

    cl = ngx_http_rooms_free_out;

    if (cl) {
        ngx_http_rooms_free_out = cl->next;
        ngx_http_rooms_free_out_n--;
        out = (ngx_http_rooms_out_t *) cl;

    } else {
        out = ngx_alloc(sizeof(ngx_http_rooms_out_t),
                        conn->connection->log);
        if (out == NULL) {
            if (frame->refs == 0) {
                ngx_free(frame);
            }

            ngx_http_rooms_conn_fail(conn);
            return NULL;
        }
    }

    ngx_memzero(&out->buf, sizeof(ngx_buf_t));

    out->buf.pos = frame->data;
    out->buf.last = frame->data + frame->len;
    out->buf.start = out->buf.pos;
    out->buf.end = out->buf.last;
    out->buf.memory = 1;

    /* TLS: ngx_ssl_send_chain() holds unflushed data in its buffer */

    out->buf.flush = 1;

    out->frame = frame;
    out->cl.buf = &out->buf;
    out->cl.next = NULL;

    frame->refs++;

    *conn->last_out = &out->cl;
    conn->last_out = &out->cl.next;
    conn->out_size += NGX_HTTP_ROOMS_OUT_COST(frame->len);

    if (!conn->is_dirty) {
        conn->is_dirty = 1;
        ngx_queue_insert_tail(&ngx_http_rooms_dirty, &conn->dirty);
    }

    return out;
}


/*
 * Writes what was queued since the last call, one send_chain per
 * connection, so that frames queued together leave in one writev.
 */

void
ngx_http_rooms_conn_flush_dirty(void)
{
    ngx_int_t               rc;
    ngx_queue_t            *q;
    ngx_http_rooms_conn_t  *conn;

    if (!ngx_http_rooms_queues_init) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_rooms_dirty)) {

        q = ngx_queue_head(&ngx_http_rooms_dirty);
        ngx_queue_remove(q);

        conn = ngx_queue_data(q, ngx_http_rooms_conn_t, dirty);
        conn->is_dirty = 0;

        rc = conn->failed ? NGX_ERROR : ngx_http_rooms_conn_flush(conn);

        if (rc == NGX_ERROR || rc == NGX_DONE) {
            ngx_http_rooms_conn_finalize(conn);
        }
    }
}


static void
ngx_http_rooms_conn_write_handler(ngx_event_t *wev)
{
    ngx_int_t               rc;
    ngx_connection_t       *c;
    ngx_http_rooms_conn_t  *conn;

    c = wev->data;
    conn = c->data;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "rooms: client timed out reading");
        c->timedout = 1;
        rc = NGX_ERROR;

    } else {
        rc = ngx_http_rooms_conn_flush(conn);
    }

    if (rc == NGX_ERROR || rc == NGX_DONE) {
        ngx_http_rooms_conn_finalize(conn);
    }
}


/*
 * Returns NGX_OK when all is written or the rest waits for the socket,
 * NGX_DONE when the close handshake is done and the connection is to go,
 * and NGX_ERROR on a write error.
 */

static ngx_int_t
ngx_http_rooms_conn_flush(ngx_http_rooms_conn_t *conn)
{
    off_t                  sent;
    ngx_chain_t           *cl, *next;
    ngx_connection_t      *c;
    ngx_http_rooms_out_t  *out;

    if (conn->failed) {
        return NGX_ERROR;
    }

    if (!conn->taken) {
        /* the takeover flushes */
        return NGX_OK;
    }

    c = conn->connection;
    sent = c->sent;

    if (conn->out) {

        cl = c->send_chain(c, conn->out, 0);

        if (cl == NGX_CHAIN_ERROR) {
            c->error = 1;
            return NGX_ERROR;
        }

        ngx_http_rooms_count(NGX_HTTP_ROOMS_M_BYTES_OUT, c->sent - sent);

        while (conn->out != cl) {
            next = conn->out->next;
            out = (ngx_http_rooms_out_t *) conn->out;

            /* a data frame: not the 101, not a control frame */
            if ((out->frame->data[0] & 0x88) == 0x80) {
                conn->messages_out++;
                ngx_http_rooms_count(NGX_HTTP_ROOMS_M_MESSAGES_OUT, 1);
            }

            ngx_http_rooms_conn_unqueue(conn, out);

            conn->out = next;
        }

        if (conn->out == NULL) {
            conn->last_out = &conn->out;
        }
    }

    if (conn->out) {

        /* as nginx's own writers: send_timeout counts from the last write
         * that made progress, not from the first byte left pending */

        if (c->sent > sent || !c->write->timer_set) {
            ngx_add_timer(c->write, conn->send_timeout);
        }

        if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (!conn->close_sent) {
        return NGX_OK;
    }

    /*
     * The close frame is out.  Unless the client's came, wait for it,
     * also in a shutting down worker (the wait is bounded).  After a
     * protocol error, end our side at once (FIN) and read and discard
     * until the client closes: closing with unread input would reset the
     * connection and could destroy the close frame before the client
     * reads it.
     */

    if (conn->close_received) {
        return NGX_DONE;
    }

    if (conn->parser_failed && !conn->close_wait) {
        if (c->ssl
            || ngx_shutdown_socket(c->fd, NGX_WRITE_SHUTDOWN) == -1)
        {
            return NGX_DONE;
        }
    }

    if (!conn->close_wait) {
        conn->close_wait = 1;
        ngx_add_timer(c->read, NGX_HTTP_ROOMS_CLOSE_WAIT);
    }

    return NGX_OK;
}


/*
 * Closes the client connection, and logs and frees its request if it was
 * kept (a limit_conn slot goes back); before the takeover, it only marks it,
 * and the takeover closes it.
 */

static void
ngx_http_rooms_conn_finalize(ngx_http_rooms_conn_t *conn)
{
    ngx_http_rooms_conn_detach(conn);

    if (!conn->taken) {
        conn->doomed = 1;
        return;
    }

    ngx_http_rooms_conn_closing(conn);

    ngx_http_close_connection(conn->connection);
}


/*
 * What is done once as the connection closes: rooms_access_log's line is
 * written, and the request, if it was kept, logged (if kept for that)
 * and freed.
 */

static void
ngx_http_rooms_conn_closing(ngx_http_rooms_conn_t *conn)
{
    ngx_http_request_t  *r;

    if (conn->taken && conn->close_code == 0) {
        conn->close_code = NGX_ROOMS_WS_CLOSE_ABNORMAL;
    }

    ngx_http_rooms_log_close(conn);

    r = conn->request;

    if (r == NULL) {
        return;
    }

    conn->request = NULL;

    ngx_http_free_request(r, 0);
}


/*
 * The worker exits: whatever client is still open goes now, so that no
 * socket is left behind.  After a graceful shutdown none is left; on a
 * fast one (SIGTERM, SIGINT) a client gets 1001 if its socket takes it
 * at once.
 */

void
ngx_http_rooms_conn_exit(void)
{
    ngx_queue_t            *q;
    ngx_connection_t       *c;
    ngx_http_rooms_conn_t  *conn;

    if (!ngx_http_rooms_queues_init) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_rooms_live)) {
        q = ngx_queue_head(&ngx_http_rooms_live);
        conn = ngx_queue_data(q, ngx_http_rooms_conn_t, live);

        c = conn->connection;

        if (conn->taken && !conn->close_sent
            && ngx_http_rooms_conn_going_away(conn) == NGX_OK)
        {
            (void) ngx_http_rooms_conn_flush(conn);
        }

        ngx_http_rooms_conn_detach(conn);

        /* the request: before the takeover, or kept for the WebSocket */

        ngx_http_rooms_conn_closing(conn);

        ngx_http_close_connection(c);
    }
}


/*
 * The drain ends: the shutdown timer of worker_shutdown_timeout calls
 * every connection's read handler with c->close set.  The clients still
 * open are closed with 1001 one by one, the i-th of N at i * spread / N,
 * so that they do not all reconnect at once; each is served until then.
 */

static void
ngx_http_rooms_conn_drain_end(void)
{
    ngx_queue_t                 *q;
    ngx_http_rooms_conn_t       *conn;
    ngx_http_rooms_drain_t      *drain;
    ngx_http_rooms_main_conf_t  *rmcf;

    drain = &ngx_http_rooms_drain;

    if (drain->ending) {
        return;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_rooms_module);

    drain->ending = 1;
    drain->start = ngx_current_msec;
    drain->spread = rmcf->shutdown_spread;

    for (q = ngx_queue_head(&ngx_http_rooms_live);
         q != ngx_queue_sentinel(&ngx_http_rooms_live);
         q = ngx_queue_next(q))
    {
        conn = ngx_queue_data(q, ngx_http_rooms_conn_t, live);

        if (!conn->close_sent) {
            drain->total++;
        }
    }

    ngx_log_error(NGX_LOG_NOTICE, drain->event.log, 0,
                  "rooms: shutdown timeout, closing %ui clients over %Mms",
                  drain->total, drain->spread);

    /* the shutdown timer runs from the timers: this one runs right after */

    if (drain->event.timer_set) {
        ngx_del_timer(&drain->event);
    }

    ngx_add_timer(&drain->event, 0);
}


/*
 * The timer that holds a worker with clients; once the drain is over, it
 * closes every client whose turn has come (the first open one in the
 * order they joined), and waits for the next turn.
 */

static void
ngx_http_rooms_conn_drain_handler(ngx_event_t *ev)
{
    ngx_msec_t               at, elapsed, next;
    ngx_queue_t             *q;
    ngx_http_rooms_conn_t   *conn;
    ngx_http_rooms_drain_t  *drain;

    drain = &ngx_http_rooms_drain;
    next = NGX_HTTP_ROOMS_HOLD;

    while (drain->ending) {

        for (q = ngx_queue_head(&ngx_http_rooms_live);
             q != ngx_queue_sentinel(&ngx_http_rooms_live);
             q = ngx_queue_next(q))
        {
            conn = ngx_queue_data(q, ngx_http_rooms_conn_t, live);

            if (!conn->close_sent) {
                break;
            }
        }

        if (q == ngx_queue_sentinel(&ngx_http_rooms_live)) {
            break;
        }

        /* again: clang's -Wconditional-uninitialized (nginx's) */
        conn = ngx_queue_data(q, ngx_http_rooms_conn_t, live);

        /* a client that joined after the drain ended goes at once */

        if (drain->turn < drain->total) {
            at = (ngx_msec_t) ((uint64_t) drain->spread * drain->turn
                               / drain->total);
            elapsed = ngx_current_msec - drain->start;

            if (at > elapsed) {
                next = at - elapsed;
                break;
            }
        }

        drain->turn++;

        /* the closing ones go last, behind those still waiting */

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&ngx_http_rooms_live, q);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, conn->connection->log, 0,
                       "rooms: client %ui of %ui closed by the drain",
                       drain->turn, drain->total);

        if (ngx_http_rooms_conn_going_away(conn) == NGX_ERROR) {
            ngx_http_rooms_conn_finalize(conn);
        }
    }

    ngx_http_rooms_conn_flush_dirty();

    if (!ngx_queue_empty(&ngx_http_rooms_live)) {
        ngx_add_timer(ev, next);
    }
}


/*
 * Forgets the client everywhere: the sidecar, the room, the dirty list,
 * its output queue and message buffer.  Called once or more; acts once.
 */

static void
ngx_http_rooms_conn_detach(ngx_http_rooms_conn_t *conn)
{
    ngx_chain_t  *cl, *next;

    if (conn->detached) {
        return;
    }

    ngx_http_rooms_link_close(conn);

    conn->detached = 1;

    if (!ngx_queue_empty(&conn->live)) {
        ngx_queue_remove(&conn->live);
        ngx_queue_init(&conn->live);

        ngx_http_rooms_stats->connections--;

        if (!conn->close_sent) {
            ngx_http_rooms_metrics_close(NGX_ROOMS_WS_CLOSE_ABNORMAL);
        }

        /* the last client gone, a shutting down worker may exit */

        if (ngx_queue_empty(&ngx_http_rooms_live)
            && ngx_http_rooms_drain.event.timer_set)
        {
            ngx_del_timer(&ngx_http_rooms_drain.event);
        }
    }

    if (conn->is_dirty) {
        ngx_queue_remove(&conn->dirty);
        conn->is_dirty = 0;
    }

    ngx_http_rooms_memory_freed(conn->out_size);

    for (cl = conn->out; cl; cl = next) {
        next = cl->next;
        ngx_http_rooms_conn_unqueue(conn, (ngx_http_rooms_out_t *) cl);
    }

    conn->out = NULL;
    conn->last_out = &conn->out;
    conn->out_size = 0;

    ngx_http_rooms_conn_drop_parser(conn);
}


/*
 * A ping is answered by a pong, but only the latest one (RFC 6455, 5.5.3):
 * a pong still queued and not started yet takes the new payload, so that
 * a ping flood costs at most one pending pong.
 */

static ngx_int_t
ngx_http_rooms_conn_pong(ngx_http_rooms_conn_t *conn, u_char *data,
    size_t len)
{
    ngx_http_rooms_out_t    *out;
    ngx_http_rooms_frame_t  *frame;

    frame = ngx_http_rooms_frame_create(NGX_ROOMS_WS_OP_PONG, data, len,
                                        conn->connection->log);
    if (frame == NULL) {
        return NGX_ERROR;
    }

    out = conn->pong;

    if (out == NULL || out->buf.pos != out->buf.start) {
        conn->pong = ngx_http_rooms_conn_queue(conn, frame);
        return NGX_OK;
    }

    conn->out_size -= NGX_HTTP_ROOMS_OUT_COST(out->frame->len);
    ngx_http_rooms_frame_release(out->frame);

    frame->refs = 1;

    out->frame = frame;
    out->buf.pos = frame->data;
    out->buf.last = frame->data + frame->len;
    out->buf.start = out->buf.pos;
    out->buf.end = out->buf.last;

    conn->out_size += NGX_HTTP_ROOMS_OUT_COST(frame->len);

    return NGX_OK;
}


/*
 * Marks a connection that cannot go on (no memory for its output): it is
 * closed by ngx_http_rooms_conn_flush_dirty(), at the end of the handler
 * that found it, never by the callee, whose callers may still hold it.
 */

static void
ngx_http_rooms_conn_fail(ngx_http_rooms_conn_t *conn)
{
    conn->failed = 1;

    if (!conn->is_dirty) {
        conn->is_dirty = 1;
        ngx_queue_insert_tail(&ngx_http_rooms_dirty, &conn->dirty);
    }
}


/*
 * A client kicked for being slow gets its close frame at once: the frames
 * it has not started to receive are dropped; one partly written is kept,
 * so that the stream stays whole up to the close frame.
 */

static void
ngx_http_rooms_conn_drop_unsent(ngx_http_rooms_conn_t *conn)
{
    ngx_uint_t             n;
    ngx_chain_t           *cl, *next, **ll;
    ngx_http_rooms_out_t  *out;

    ll = &conn->out;

    if (!conn->taken && *ll) {
        /* the 101 response heads the queue until the takeover writes it */
        ll = &(*ll)->next;
    }

    for ( /* void */ ; *ll; ll = &(*ll)->next) {
        out = (ngx_http_rooms_out_t *) *ll;

        if (out->buf.pos == out->buf.start) {
            break;
        }
    }

    n = 0;

    for (cl = *ll; cl; cl = next) {
        next = cl->next;
        ngx_http_rooms_conn_unqueue(conn, (ngx_http_rooms_out_t *) cl);
        n++;
    }

    *ll = NULL;
    conn->last_out = ll;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, conn->connection->log, 0,
                   "rooms: %ui frames dropped, %uz bytes still queued",
                   n, conn->out_size);
}


/*
 * Takes a written or dropped entry off the connection's accounting and
 * back to the free list, which keeps at most NGX_HTTP_ROOMS_FREE_OUT
 * entries: what a burst needed goes back to the allocator.
 */

static void
ngx_http_rooms_conn_unqueue(ngx_http_rooms_conn_t *conn,
    ngx_http_rooms_out_t *out)
{
    conn->out_size -= NGX_HTTP_ROOMS_OUT_COST(out->frame->len);
    ngx_http_rooms_frame_release(out->frame);

    if (conn->pong == out) {
        conn->pong = NULL;
    }

    if (ngx_http_rooms_free_out_n >= NGX_HTTP_ROOMS_FREE_OUT) {
        ngx_http_rooms_memory_freed(sizeof(ngx_http_rooms_out_t));
        ngx_free(out);
        return;
    }

    out->cl.next = ngx_http_rooms_free_out;
    ngx_http_rooms_free_out = &out->cl;
    ngx_http_rooms_free_out_n++;
}
