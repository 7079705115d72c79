/*
 * bev_direct: writing a plaintext socket bufferevent's output straight to its socket,
 * asking the event loop for writability only when the kernel did not take everything
 * (as nginx and most servers do).
 *
 * Why: a socket bufferevent with EV_WRITE enabled adds write interest for its fd when
 * something is added to its output (an epoll_ctl) and removes it once the output has
 * drained (another epoll_ctl): two system calls per reply or command batch, on top of
 * the writev itself. Its owner instead keeps EV_WRITE disabled (bev_direct_start), adds
 * to the output, and writes it with bev_direct_flush once per callback; only when the
 * socket buffer is full does libevent's ordinary write path take over (EV_WRITE is
 * enabled, with its write timeout) until the output has drained, when the owner's write
 * callback calls bev_direct_drained to go back to direct writes.
 *
 * For socket bufferevents only: an OpenSSL bufferevent must write through OpenSSL.
 * Nothing here owns anything: the bufferevent stays the caller's.
 */
#ifndef DR_BEV_DIRECT_H
#define DR_BEV_DIRECT_H

#include <stdbool.h>

struct bufferevent;

enum bev_direct_result {
	BEV_DIRECT_DRAINED, /* the output is empty: all of it left */
	BEV_DIRECT_PENDING, /* the kernel took part of it: EV_WRITE is enabled for the rest */
	BEV_DIRECT_ERROR,   /* the write failed (errno set): the connection is unusable */
};

/* Switches bev to direct writes: EV_WRITE off (bufferevent_socket_new turns it on). */
void bev_direct_start(struct bufferevent *bev);

/*
 * Writes bev's output to its socket now. When part of it is left (EAGAIN or a short
 * write), enables EV_WRITE so that libevent writes the rest when the socket is
 * writable, and calls the write callback once it has.
 */
enum bev_direct_result bev_direct_flush(struct bufferevent *bev);

/*
 * From the write callback: once the output is empty, back to direct writes (EV_WRITE
 * off; libevent already removed the write interest when the output drained). Below a
 * low-water mark with bytes still queued, libevent goes on writing them.
 */
void bev_direct_drained(struct bufferevent *bev);

/* libevent is finishing a partial write (EV_WRITE on): it writes what is added too. */
bool bev_direct_pending(struct bufferevent *bev);

#endif
