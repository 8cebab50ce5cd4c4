/*
 * fleetgate: the worker's subscribers indexed by room.
 *
 * Rooms live only in the worker that holds their members; they appear
 * with the first member and go with the last.  Every worker hears every
 * event from PostgreSQL and looks up the rooms it concerns here, so a
 * worker with no member in a room does no work for it.
 */

#include "ngx_fleet_rooms.h"


static void ngx_fleet_room_free(ngx_fleet_room_t *room);


static ngx_rbtree_t       ngx_fleet_rooms;
static ngx_rbtree_node_t  ngx_fleet_rooms_sentinel;
static ngx_uint_t         ngx_fleet_rooms_ready;


static void
ngx_fleet_rooms_init(void)
{
    if (!ngx_fleet_rooms_ready) {
        ngx_rbtree_init(&ngx_fleet_rooms, &ngx_fleet_rooms_sentinel,
                        ngx_str_rbtree_insert_value);
        ngx_fleet_rooms_ready = 1;
    }
}


ngx_fleet_room_t *
ngx_fleet_room_find(u_char *name, size_t len)
{
    ngx_str_t  key;

    if (!ngx_fleet_rooms_ready) {
        return NULL;
    }

    key.data = name;
    key.len = len;

    return (ngx_fleet_room_t *) ngx_str_rbtree_lookup(&ngx_fleet_rooms, &key,
                                                      ngx_crc32_short(name,
                                                                      len));
}


ngx_int_t
ngx_fleet_room_join(ngx_fleet_room_member_t *m, u_char *name, size_t len)
{
    ngx_fleet_room_t  *room;

    ngx_fleet_rooms_init();

    room = ngx_fleet_room_find(name, len);

    if (room == NULL) {
        room = ngx_calloc(sizeof(ngx_fleet_room_t) + len, ngx_cycle->log);
        if (room == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(room->name, name, len);
        room->sn.str.data = room->name;
        room->sn.str.len = len;
        room->sn.node.key = ngx_crc32_short(name, len);
        ngx_queue_init(&room->members);

        ngx_rbtree_insert(&ngx_fleet_rooms, &room->sn.node);
    }

    ngx_queue_insert_tail(&room->members, &m->queue);
    m->room = room;
    room->count++;

    return NGX_OK;
}


void
ngx_fleet_room_leave(ngx_fleet_room_member_t *m)
{
    ngx_fleet_room_t  *room;

    room = m->room;

    if (room == NULL) {
        return;
    }

    ngx_queue_remove(&m->queue);
    m->room = NULL;
    room->count--;

    if (room->count == 0 && room->iterating == 0) {
        ngx_fleet_room_free(room);
    }
}


/*
 * Calls fn for each member.  fn may make members leave, its own included
 * (a send that finds the client gone): the walk keeps the next member
 * before calling fn, and a member leaving is the current one.  The room
 * stays until the walk ends.
 */

void
ngx_fleet_room_each(ngx_fleet_room_t *room, ngx_fleet_room_pt fn, void *arg)
{
    ngx_queue_t              *q, *next, *last;
    ngx_fleet_room_member_t  *m;

    room->iterating++;

    /* members joining meanwhile are not visited */
    last = ngx_queue_last(&room->members);

    for (q = ngx_queue_head(&room->members);
         q != ngx_queue_sentinel(&room->members);
         q = next)
    {
        next = ngx_queue_next(q);
        m = ngx_queue_data(q, ngx_fleet_room_member_t, queue);

        fn(m, arg);

        if (q == last) {
            break;
        }
    }

    if (--room->iterating == 0 && room->count == 0) {
        ngx_fleet_room_free(room);
    }
}


static void
ngx_fleet_room_free(ngx_fleet_room_t *room)
{
    ngx_rbtree_delete(&ngx_fleet_rooms, &room->sn.node);
    ngx_free(room);
}
