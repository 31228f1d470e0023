/*
 * The taken counts of jobrun's JoinableQueue: each taker's entry in the
 * queue's taker table (jr_taker.count, with its kept-copy list), written
 * under the queue's lock by SharedQueue.countTaken (get), taskDone,
 * finishGet / finishTaskDone (repair) and processDied (the monitor). The
 * model keeps one entry per process, in its record (rec[p].taken,
 * held_head, held_tail): which process marks an item done, and an entry's
 * table moving as it grows, are left to task_done.pml and ring_growth.pml.
 * Replace these definitions if the counts move again.
 *
 * `p` is a record index (rec[p]); there is one queue in the model.
 */
#define TAKEN(p)            rec[p].taken
/* SharedQueue.countTaken: one more item taken. */
inline TAKEN_INC(p)         { rec[p].taken++ }
/* taskDone / finishTaskDone: `e.count -= 1` (the caller checked it). */
inline TAKEN_DEC(p)         { if :: rec[p].taken > 0 -> rec[p].taken-- :: else -> skip fi }
/* processDied: `e.count -= min(e.count, items.count)`. */
inline TAKEN_SUB(p, m)      { if :: rec[p].taken > m -> rec[p].taken = rec[p].taken - m :: else -> rec[p].taken = 0 fi }
/* processDied, after failTasksLocked: `e.count = 0`. */
inline TAKEN_CLEAR(p)       { rec[p].taken = 0 }
