/* task_done by another process than the taker, of the taker's only kept
 * copy (SharedQueue.taskDone, repaired by SharedQueue.finishTaskDone): as
 * task_done.pml, but taker A holds one item, so its list's head and tail are
 * both n1. B marks it done and may die between any two steps; then A lives
 * on, gets another item (SharedQueue.link puts its copy n2 last on A's list)
 * and dies, and the monitor puts its copies back (processDied).
 * Checked: A's list never names a freed block; once B's intent is written
 * n1 is not delivered again and n2 is, else both are; nothing is failed.
 * A death between taskDone's `held_head = next` and its `held_tail = 0`
 * leaves the tail on n1 with the head moved on: the repair checks the tail
 * apart from the head. (It once fixed the tail only while the head still
 * named the node; then A's next link wrote into the freed n1, n2 was on no
 * list, and A's death failed its task instead of delivering it again.)
 *   spin -a task_done_tail.pml && cc -o pan pan.c && ./pan -a */
bool allocated[3];
byte next[3];
byte held_head = 1;
byte held_tail = 1;
byte count = 1;
byte unfinished = 2;
byte queued = 0;
byte failed = 0;
byte done_stage = 0;
byte done_node = 0;
byte done_count = 0;
byte done_unfinished = 0;
bool died = false;
bool finished = false;
bool noted = false;

inline free(n) { assert(allocated[n]); allocated[n] = false }

proctype B() {
    {
        done_node = held_head;
        done_count = count;
        done_unfinished = unfinished;
        atomic { done_stage = 1; noted = true };
        held_head = next[done_node];
        if
        :: held_tail == done_node -> held_tail = 0
        :: else -> skip
        fi;
        count--;
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
    if
    :: done_stage != 0 ->
        if
        :: held_head == done_node -> held_head = next[done_node]
        :: else -> skip
        fi;
        if
        :: held_tail == done_node -> held_tail = 0
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
    /* A gets its second item: take() links the kept copy n2 (SharedQueue.link) */
    allocated[2] = true; next[2] = 0; count++;
    if
    :: held_tail != 0 -> assert(allocated[held_tail]); next[held_tail] = 2
    :: else -> held_head = 2
    fi;
    held_tail = 2;
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
    assert(failed == 0);
    assert(noted -> (queued == 1) : (queued == 2));
    assert(!allocated[1] && !allocated[2])
}

init {
    atomic {
        allocated[1] = true;
        next[1] = 0;
        run B(); run killer(); run monitor()
    }
}
