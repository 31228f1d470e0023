/* Ring growth under SIGKILL (SharedQueue.growRing, repaired by
 * SharedQueue.finishGrow). A producer holding the queue's lock grows the
 * ring from block OLD to block NEW and may die between any two steps (the
 * killer sets `died`; `unless` stops the producer at once). Whoever locks
 * next (EOWNERDEAD) runs the repair. Checked: the queue always ends on an
 * allocated ring holding every item, described by matching metadata, with
 * exactly one ring block allocated (none leaked, none freed twice).
 *   spin -a ring_growth.pml && cc -o pan pan.c && ./pan -a   (no errors)
 * Step names match the kill points of the Swift code. The old order (free
 * the old ring, then publish the new one) fails the first assertion: a
 * death between the two leaves the queue on a freed block. */

#define NONE 0
#define OLD 1
#define NEW 2
#define ITEMS 3

bool allocated[3];          /* blocks of the arena */
byte data[3];               /* items held by each block */
byte ring_off = OLD;        /* the queue's published ring */
byte meta = OLD;            /* cap/head/tail describe this block */

/* the producer's record: the intent */
byte grow_stage = 0;
byte grow_old = NONE;
byte grow_new = NONE;

bool died = false;
bool finished = false;

inline free(b) {
    assert(allocated[b]);   /* never freed twice */
    allocated[b] = false;
    data[b] = 0             /* a freed block may be reused: its bytes are gone */
}

proctype producer() {
    {
        grow_old = ring_off;
        grow_new = NONE;
        grow_stage = 1;
        /* Arena.allocate(recordingIn: grow_new): under alloc_lock */
        atomic { allocated[NEW] = true; grow_new = NEW };
        /* ring-grow-allocated: copy the records, one by one */
        do
        :: data[NEW] < data[OLD] -> data[NEW]++
        :: else -> break
        od;
        /* ring-grow-copied: publish in one store */
        ring_off = NEW;
        /* ring-grow-published */
        meta = NEW;
        /* Arena.free(old, clearing: grow_stage): under alloc_lock */
        atomic { free(OLD); grow_stage = 0 };
        finished = true
    } unless { died }
}

proctype killer() {
    if
    :: died = true
    :: skip
    fi
}

proctype repairer() {
    (died || finished);
    /* SharedQueue.finishGrow, run by the next locker */
    if
    :: grow_stage != 0 ->
        if
        :: grow_new != NONE && ring_off == grow_new ->
            meta = ring_off;
            if
            :: allocated[grow_old] -> free(grow_old)
            :: else -> skip
            fi
        :: grow_new != NONE && ring_off != grow_new -> free(grow_new)
        :: else -> skip
        fi;
        grow_stage = 0
    :: else -> skip
    fi;
    assert(allocated[ring_off]);
    assert(meta == ring_off);
    assert(data[ring_off] == ITEMS);
    assert(allocated[OLD] + allocated[NEW] == 1)
}

init {
    atomic {
        allocated[OLD] = true; data[OLD] = ITEMS;
        run producer(); run killer(); run repairer()
    }
}
