/*
 * bridge.h - the event loops of embd serve (libuv driving libmicrohttpd).
 */
#ifndef SRV_BRIDGE_H
#define SRV_BRIDGE_H

#include "srv.h"

/* Listens on cfg->listen_host:listen_port with cfg->loops loops and serves until shutdown has
 * drained every loop. Returns 0 after a clean shutdown, -1 when it could not start (logged). */
int srv_bridge_run(const srv_config *cfg);

/* Starts the graceful shutdown (as SIGTERM does). Any thread. */
void srv_bridge_shutdown(void);

#endif
