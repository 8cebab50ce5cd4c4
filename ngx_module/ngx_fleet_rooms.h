/*
 * fleetgate: per-worker index of stream subscribers by room.
 */

#ifndef _NGX_FLEET_ROOMS_H_INCLUDED_
#define _NGX_FLEET_ROOMS_H_INCLUDED_


#include "ngx_fleet_module.h"


typedef struct ngx_fleet_room_s  ngx_fleet_room_t;


/* embedded in a subscriber, one per room it is in */
typedef struct {
    ngx_queue_t                 queue;
    ngx_fleet_room_t           *room;
    void                       *data;
} ngx_fleet_room_member_t;


struct ngx_fleet_room_s {
    ngx_str_node_t              sn;
    ngx_queue_t                 members;
    ngx_uint_t                  count;
    ngx_uint_t                  iterating;
    u_char                      name[1];
};


typedef void (*ngx_fleet_room_pt)(ngx_fleet_room_member_t *m, void *arg);


ngx_fleet_room_t *ngx_fleet_room_find(u_char *name, size_t len);
ngx_int_t ngx_fleet_room_join(ngx_fleet_room_member_t *m, u_char *name,
    size_t len);
void ngx_fleet_room_leave(ngx_fleet_room_member_t *m);
void ngx_fleet_room_each(ngx_fleet_room_t *room, ngx_fleet_room_pt fn,
    void *arg);


#endif /* _NGX_FLEET_ROOMS_H_INCLUDED_ */
