/* task_done by another process than the taker, under SIGKILL
 * (SharedQueue.taskDone, repaired by SharedQueue.finishTaskDone; the taker's
 * death settled by SharedQueue.processDied). Taker A got both items of a
 * redeliver JoinableQueue: its entry counts 2 and holds kept copies n1, n2.
 * B, which took nothing, marks one done (so it settles the oldest taker's,
 * A's) and may die between any two steps while holding the queue's lock;
 * the next locker rolls each step forward. Then A dies and the monitor puts
 * its remaining copies back and fails its remaining tasks.
 * Checked: once B's intent is written its task_done takes effect (a death
 * before that leaves it undone); the item marked done is not delivered
 * again, the other is, exactly once; `unfinished` counts the items not
 * done; no kept copy leaks or is freed twice.
 * Before the queue kept its takers, B's task_done only lowered `unfinished`
 * and A's death delivered both copies again: the last assertion fails.
 *   spin -a task_done.pml && cc -o pan pan.c && ./pan -a   (no errors) */

bool allocated[3];          /* kept copies n1 (1) and n2 (2) */
byte next[3];               /* list links: n1 -> n2 -> 0 */
byte held_head = 1;         /* A's entry in the queue's taker table */
byte held_tail = 2;
byte count = 2;
byte unfinished = 2;
byte queued = 0;            /* items in the queue (redelivered) */
byte failed = 0;            /* tasks failed (WorkerDied) */

/* B's record: the intent */
byte done_stage = 0;
byte done_node = 0;
byte done_count = 0;
byte done_unfinished = 0;

bool died = false;
bool finished = false;
bool noted = false;         /* ghost: B's intent was written, so it takes effect */

inline free(n) {
    assert(allocated[n]);
    allocated[n] = false
}

proctype B() {
    {
        done_node = held_head;
        done_count = count;
        done_unfinished = unfinished;
        atomic { done_stage = 1; noted = true };
        /* task-done-noted */
        held_head = next[done_node];
        if
        :: held_tail == done_node -> held_tail = 0
        :: else -> skip
        fi;
        count--;
        /* task-done-counted */
        unfinished--;
        atomic { free(done_node); done_stage = 0 };
        finished = true
    } unless { died }
}

proctype killer() {
    if
    :: died = true
    :: skip
    fi
}

proctype monitor() {
    (died || finished);
    /* the next locker of the queue: finishTaskDone */
    if
    :: done_stage != 0 ->
        if
        :: held_head == done_node ->
            held_head = next[done_node];
            if
            :: held_tail == done_node -> held_tail = 0
            :: else -> skip
            fi
        :: else -> skip
        fi;
        if
        :: count == done_count -> count--
        :: else -> skip
        fi;
        if
        :: unfinished == done_unfinished -> unfinished--
        :: else -> skip
        fi;
        if
        :: allocated[done_node] -> free(done_node)
        :: else -> skip
        fi;
        done_stage = 0
    :: else -> skip
    fi;
    /* A dies: processDied puts its copies back and fails the rest */
    do
    :: held_head != 0 ->
        queued++; count--;
        byte n = held_head;
        held_head = next[n];
        free(n)
    :: else -> break
    od;
    held_tail = 0;
    failed = failed + count;
    count = 0;
    /* once noted, B's task_done took effect: that item is not delivered
     * again and the other is, once; before, both are */
    assert(noted -> (unfinished == 1) : (unfinished == 2));
    assert(failed == 0);
    assert(queued == unfinished);
    assert(!allocated[1] && !allocated[2])
}

init {
    atomic {
        allocated[1] = true; allocated[2] = true;
        next[1] = 2; next[2] = 0;
        run B(); run killer(); run monitor()
    }
}
