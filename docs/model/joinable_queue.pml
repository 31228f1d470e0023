/*
 * jobrun's JoinableQueue protocol, as the code implements it: put (with its
 * put_stage intent), get (get_stage, the kept copy's block allocated before
 * the item leaves), task_done (done_stage, under the queue's lock), the taker
 * entries (taken count and kept copies of a `redeliver` queue; taken.pml),
 * and the repair after a SIGKILL: the next locker's repair on EOWNERDEAD
 * (finishPut, finishGet, finishTaskDone) and the monitor's settle and
 * processDied (redelivery, failTasks). README.md in this folder maps every
 * step to the Swift code and says how to run the check.
 *
 * One queue, one producer, NCONS consumers, the main process (the joiner) and
 * the monitor. The producer and the consumers may be SIGKILLed before any
 * step (at most MAXDEATHS deaths in a run; at least one consumer lives). A
 * step is one store or one atomic read-modify-write of shared memory, as the
 * Swift code does them; private work is folded into the step it feeds.
 *
 * Checked (assertions and end states):
 *   - an item is marked done at most once, and never delivered after it was
 *     marked done (with redeliver: delivered twice only when its taker died
 *     before marking it);
 *   - task_done in a consumer that got an item never finds `unfinished` at 0;
 *   - when join returns, every item put is done, or failed and counted in
 *     failed_tasks (with redeliver: none failed);
 *   - at the end, with redeliver, every item put was marked done exactly
 *     once; `unfinished` == failed_tasks, `count` == 0, every taken count 0,
 *     every kept-copy list empty, no intent left in a record;
 *   - no hang: every run reaches its end (spin reports any other end state).
 *
 * Parameters (spin -DNAME=value ...), defaults below.
 */

#ifndef NITEMS
#define NITEMS 2          /* items the producer puts, 1..NITEMS */
#endif
#ifndef NCONS
#define NCONS 2           /* consumers (1..3) */
#endif
#ifndef MAXDEATHS
#define MAXDEATHS 1       /* SIGKILLs in one run */
#endif
#ifndef REDELIVER
#define REDELIVER 1       /* JoinableQueue{redeliver = true} */
#endif
#ifndef MAXSIZE
#define MAXSIZE 0         /* JoinableQueue{maxsize}: 0 = unbounded */
#endif
#ifndef PRODUCER_DIES
#define PRODUCER_DIES 1   /* the producer may be killed */
#endif
#ifndef CONSUMER_DIES
#define CONSUMER_DIES 1   /* a consumer may be killed */
#endif
#ifndef SLICE
#define SLICE 1           /* futex sleeps end after a slice (SharedQueue.sleepSlice, 1 s) */
#endif
#ifndef LEAKCHECK
#define LEAKCHECK 0       /* at the end, no kept-copy block is left allocated */
#endif

#define NREC   (NCONS + 1)     /* records: consumers 0..NCONS-1, the producer */
#define PROD   NCONS
#define MAIN   (NCONS + 1)     /* index for sleeping[] and the lock owner */
#define MON    (NCONS + 2)
#define RSIZE  (NITEMS + 2)    /* ring slots (one record = one slot) */
#define NODES  3               /* kept-copy blocks per record */

/* futex words */
#define W_ITEMS 1
#define W_SPACE 2
#define W_DONE  3

/* ---- shared memory ---------------------------------------------------- */

/* jr_process_record, the fields the protocol uses */
typedef Rec {
    byte taken;                 /* see taken.pml */
    byte held_head;             /* kept copies (jr_held): node index + 1, 0 = none */
    byte held_tail;
    byte nitem[NODES];          /* jr_held: the item's bytes */
    byte nnext[NODES];          /* jr_held.next */
    bit  nused[NODES];          /* the block is allocated */
    byte get_stage;
    byte get_item_head;
    byte get_item_end;
    byte get_taken;
    byte get_held_tail;
    byte get_held_block;        /* the kept copy's block, allocated before the item leaves */
    byte done_stage;
    byte done_node;
    byte done_count;
    byte done_unfinished;
    byte done_item;             /* ghost: the item the task_done marks */
    byte put_stage;
    byte put_tail;
    byte put_unfinished;
    bit  dead;                  /* SIGKILLed (ghost: what the pidfd tells) */
    bit  handled                /* Monitor.ended has run for it (state EXITED) */
};
Rec rec[NREC];

/* jr_queue */
byte lockOwner;                 /* robust mutex: 0 = free, else owner + 1 */
bit  ownerDied;                 /* the owner died holding it: next lock gets EOWNERDEAD */
byte ring[RSIZE];               /* records: the item id, 0 = none */
byte head;
byte tail;
byte count;
byte unfinished;
byte failed_tasks;
byte items_seq;
byte space_seq;
byte done_seq;
byte get_waiters;
byte put_waiters;
byte join_waiters;

/* the kernel: which futex word each process sleeps on (0 = awake) */
byte sleeping[5];

/* ghost state, for the checks */
bit  committed[NITEMS];         /* the item's record is in the ring (put's commit) */
byte delivered[NITEMS];         /* get returned it */
byte done[NITEMS];              /* task_done's decrement counted it */
byte deaths;
byte cdeaths;                   /* consumers killed */
byte pdeaths;                   /* producers killed */
byte pending;                   /* deaths the monitor has not handled yet */
byte gone;                      /* producer and consumers that ended or were handled */
bit  pdone;                     /* the producer returned */
bit  finished;                  /* join returned: daemon consumers may stop */

#include "taken.pml"

/* ---- building blocks ---------------------------------------------------- */

/* SIGKILL may land here: with `ok` (may this process die?), while deaths remain. */
#define CANDIE(ok) ((ok) && deaths < MAXDEATHS)
#define C_OK (CONSUMER_DIES && cdeaths + 1 < NCONS)
#define P_OK (PRODUCER_DIES)

inline maydie(ok, ctr) {
    if
    :: atomic { CANDIE(ok) -> deaths++; ctr++ }; goto died
    :: skip
    fi
}

/* The kernel ends a killed process: its robust mutex is released with
 * OWNER_DIED, it sleeps no more, and the monitor's pidfd becomes readable. */
inline die(me) {
    atomic {
        rec[me].dead = 1;
        sleeping[me] = 0;
        if
        :: lockOwner == me + 1 -> lockOwner = 0; ownerDied = 1
        :: else -> skip
        fi;
        pending++
    }
}

/* Arena.allocate of a kept-copy block for record `who`: its index + 1 in `blk`. */
inline alloc(who, blk) {
    n = 0;
    do
    :: n < NODES && rec[who].nused[n] -> n++
    :: else -> break
    od;
    assert(n < NODES);               /* the model's pool suffices */
    rec[who].nused[n] = 1;
    blk = n + 1
}

/* SharedQueue.link: writes the kept copy into block `node` and links it
 * last on `who`'s list (its taker entry). Lock held. */
inline link(who, node, item, ok, ctr) {
    d_step { rec[who].nitem[node - 1] = item; rec[who].nnext[node - 1] = 0 }
    maydie(ok, ctr);
    if
    :: rec[who].held_tail != 0 -> rec[who].nnext[rec[who].held_tail - 1] = node
    :: else -> rec[who].held_head = node
    fi;
    maydie(ok, ctr);
    rec[who].held_tail = node
}

/* SharedQueue.repair (lock held, after EOWNERDEAD, or the monitor's settle):
 * finishPut, finishGet and finishTaskDone for every record with an intent on
 * this queue, then recount. Each is one step for the others (lock held), but
 * the repairer itself may die inside it (MAXDEATHS > 1). */
inline repair(ok, ctr) {
    r = 0;
    do
    :: r < NREC ->
        if
        :: rec[r].put_stage != 0 ->                  /* finishPut */
            d_step {
                if
                :: tail != rec[r].put_tail -> unfinished = rec[r].put_unfinished + 1
                :: else -> unfinished = rec[r].put_unfinished
                fi
            }
            maydie(ok, ctr);
            rec[r].put_stage = 0
        :: else -> skip
        fi;
        if
        :: rec[r].get_stage != 0 ->                  /* finishGet */
            if
            :: head >= rec[r].get_item_end ->        /* R1: the item had left the ring */
                if
                :: TAKEN(r) == rec[r].get_taken -> TAKEN_INC(r)
                :: else -> skip
                fi;
                maydie(ok, ctr);
                if                                   /* R2: link its kept copy */
                :: rec[r].get_held_block != 0 && rec[r].held_tail == rec[r].get_held_tail ->
                    k = rec[r].get_held_block;
                    link(r, k, ring[rec[r].get_item_head], ok, ctr)
                :: else -> skip
                fi
            :: else ->
                if
                :: rec[r].get_held_block != 0 -> rec[r].nused[rec[r].get_held_block - 1] = 0
                :: else -> skip
                fi
            fi;
            maydie(ok, ctr);
            rec[r].get_held_block = 0;
            maydie(ok, ctr);
            rec[r].get_stage = 0                     /* R3 */
        :: else -> skip
        fi;
        if
        :: rec[r].done_stage != 0 ->                 /* finishTaskDone */
            k = rec[r].done_node;
            if
            :: k != 0 && rec[r].held_head == k ->
                rec[r].held_head = rec[r].nnext[k - 1];
                maydie(ok, ctr);
                if
                :: rec[r].held_tail == k -> rec[r].held_tail = 0
                :: else -> skip
                fi
            :: else -> skip
            fi;
            maydie(ok, ctr);
            if
            :: TAKEN(r) == rec[r].done_count -> TAKEN_DEC(r)
            :: else -> skip
            fi;
            maydie(ok, ctr);
            if
            :: atomic {
                   unfinished == rec[r].done_unfinished -> unfinished--;
                   assert(done[rec[r].done_item - 1] == 0);
                   done[rec[r].done_item - 1]++
               }
            :: else -> skip
            fi;
            maydie(ok, ctr);
            if
            :: k != 0 && rec[r].nused[k - 1] -> rec[r].nused[k - 1] = 0
            :: else -> skip
            fi;
            maydie(ok, ctr);
            rec[r].done_stage = 0
        :: else -> skip
        fi;
        r++
    :: else -> break
    od;
    count = tail - head                              /* R4: recount the records */
}

/* SharedQueue.lock() = jr_mutex_lock (+ repair on EOWNERDEAD). A process
 * blocked here may be killed. */
inline lock(me, ok, ctr) {
    if
    :: atomic { lockOwner == 0 -> lockOwner = me + 1; wasDead = ownerDied; ownerDied = 0 }
    :: atomic { CANDIE(ok) -> deaths++; ctr++ }; goto died
    fi;
    if
    :: wasDead -> wasDead = 0; repair(ok, ctr)
    :: else -> skip
    fi
}

/* The sleep of waitLocked (jr_futex_wait on `word`, expected `seq`): returns
 * at once when the word has moved; else sleeps until a futex wake, or until
 * the slice runs out (modelled only when the re-check will then succeed:
 * `ready`; a slice that finds nothing changes nothing). */
inline futex_wait(me, w, word, seq, ready, ok, ctr, canstop) {
    atomic {
        if
        :: word == seq -> sleeping[me] = w
        :: else -> skip
        fi
    }
    if
    :: sleeping[me] == 0 -> skip
    :: SLICE && (ready) -> sleeping[me] = 0
    :: (canstop) && finished -> sleeping[me] = 0; goto out
    :: atomic { CANDIE(ok) -> deaths++; ctr++ }; goto died
    fi
}

/* jr_futex_wake(word, 1): wakes one sleeper, any of them. */
inline futex_wake_one(w) {
    atomic {
        if
        :: sleeping[0] == w -> sleeping[0] = 0
        :: sleeping[1] == w -> sleeping[1] = 0
        :: sleeping[2] == w -> sleeping[2] = 0
        :: sleeping[3] == w -> sleeping[3] = 0
        :: sleeping[4] == w -> sleeping[4] = 0
        :: else -> skip
        fi
    }
}

/* jr_futex_wake(word, Int32.max) */
inline futex_wake_all(w) {
    d_step {
        k = 0;
        do
        :: k < 5 ->
            if
            :: sleeping[k] == w -> sleeping[k] = 0
            :: else -> skip
            fi;
            k++
        :: else -> break
        od
    }
}

/* ---- the processes -------------------------------------------------------- */

/* A producer: q:put(i) for i = 1..NITEMS (SharedQueue.enqueue). */
proctype producer() {
    byte i = 1, seq, r, n, k;
    bit wasDead, wake;
    do
    :: i <= NITEMS ->
        maydie(P_OK, pdeaths);
        atomic {                                      /* under the queue's lock */
        lock(PROD, P_OK, pdeaths);                    /* P1 */
        do
        :: MAXSIZE > 0 && count >= MAXSIZE ->         /* P2: full, waitLocked(space_seq) */
            d_step { seq = space_seq; put_waiters++; lockOwner = 0 }
            maydie(P_OK, pdeaths);
            futex_wait(PROD, W_SPACE, space_seq, seq, count < MAXSIZE, P_OK, pdeaths, 0);
            lock(PROD, P_OK, pdeaths);
            put_waiters--
        :: else -> break
        od;
        maydie(P_OK, pdeaths);
        d_step {                                      /* P3: the intent */
            rec[PROD].put_tail = tail;
            rec[PROD].put_unfinished = unfinished;
            rec[PROD].put_stage = 1
        }
        maydie(P_OK, pdeaths);
        ring[tail] = i;                               /* P4: fill the record */
        maydie(P_OK, pdeaths);
        unfinished++;                                 /* P5 */
        maydie(P_OK, pdeaths);
        d_step { assert(tail < RSIZE - 1); tail++; committed[i - 1] = 1 }   /* P6: commit */
        maydie(P_OK, pdeaths);
        count++;                                      /* P7 */
        maydie(P_OK, pdeaths);
        rec[PROD].put_stage = 0;                      /* P8 */
        maydie(P_OK, pdeaths);
        d_step {                                      /* P9: unlock */
            wake = (get_waiters > 0);
            if
            :: wake -> items_seq++
            :: else -> skip
            fi;
            lockOwner = 0
        }
        }
        maydie(P_OK, pdeaths);
        if                                            /* P10 */
        :: wake -> futex_wake_one(W_ITEMS)
        :: else -> skip
        fi;
        d_step { i++; seq = 0; wake = 0; r = 0; n = 0; k = 0 }
    :: else -> break
    od;
    atomic { pdone = 1; gone++ };
    goto out;
died:
    die(PROD);
out:
    skip
}

/* A consumer: `for item in q:items()`, i.e. get then task_done, until the
 * main process is done (it is a daemon). */
proctype consumer(byte me) {
    byte it, cur, seq, r, n, k, blk;
    bit wasDead, wake;
    do
    :: finished -> break
    :: else ->
        /* ---- get (SharedQueue.get, take) ---- */
        maydie(C_OK, cdeaths);
        atomic {                                      /* under the queue's lock */
        lock(me, C_OK, cdeaths);                      /* G0 */
        do
        :: count == 0 ->                              /* waitLocked(items_seq) */
            d_step { seq = items_seq; get_waiters++; lockOwner = 0 }
            maydie(C_OK, cdeaths);
            futex_wait(me, W_ITEMS, items_seq, seq, count > 0, C_OK, cdeaths, 1);
            lock(me, C_OK, cdeaths);
            get_waiters--
        :: else -> break
        od;
        if
        :: REDELIVER ->                               /* G1: the kept copy's block first */
            maydie(C_OK, cdeaths);
            d_step { rec[me].get_held_block = 0; rec[me].get_item_end = 255; rec[me].get_stage = 1 }
            maydie(C_OK, cdeaths);
            d_step { alloc(me, blk); rec[me].get_held_block = blk }
        :: else -> skip
        fi;
        maydie(C_OK, cdeaths);
        d_step {                                      /* G2: the intent */
            rec[me].get_item_head = head;
            rec[me].get_item_end = head + 1;
            rec[me].get_taken = TAKEN(me);
            rec[me].get_held_tail = rec[me].held_tail;
            rec[me].get_stage = 1
        }
        maydie(C_OK, cdeaths);
        it = ring[head];                              /* G3: copy out (scratch) */
        maydie(C_OK, cdeaths);
        head++;                                       /* G4: the item leaves the ring */
        maydie(C_OK, cdeaths);
        count--;                                      /* G5 */
        maydie(C_OK, cdeaths);
        rec[me].get_stage = 2;                        /* G6 */
        maydie(C_OK, cdeaths);
        TAKEN_INC(me);                                /* G7: countTaken */
        if                                            /* G8: link the kept copy */
        :: rec[me].get_held_block != 0 ->
            maydie(C_OK, cdeaths);
            k = rec[me].get_held_block;
            link(me, k, it, C_OK, cdeaths)
        :: else -> skip
        fi;
        maydie(C_OK, cdeaths);
        rec[me].get_held_block = 0;                   /* G9 */
        maydie(C_OK, cdeaths);
        rec[me].get_stage = 0;                        /* G10 */
        maydie(C_OK, cdeaths);
        d_step {                                      /* G11: unlock */
            wake = (put_waiters > 0);
            if
            :: wake -> space_seq++
            :: else -> skip
            fi;
            lockOwner = 0
        }
        }
        maydie(C_OK, cdeaths);
        if                                            /* G12 */
        :: wake -> futex_wake_one(W_SPACE)
        :: else -> skip
        fi;
        d_step {                                      /* G13: the item is the script's */
            assert(it >= 1 && it <= NITEMS);
            assert(done[it - 1] == 0);                /* never delivered after it was done */
            assert(REDELIVER || delivered[it - 1] == 0);
            delivered[it - 1]++
        }
        maydie(C_OK, cdeaths);

        /* ---- task_done (SharedQueue.taskDone), its own item ---- */
        atomic {
        lock(me, C_OK, cdeaths);                      /* T0 */
        assert(unfinished != 0);                      /* "called too many times" */
        maydie(C_OK, cdeaths);
        d_step {                                      /* T1: the intent */
            cur = rec[me].held_head;
            assert(!REDELIVER || (cur != 0 && rec[me].nitem[cur - 1] == it));
            rec[me].done_node = cur;
            rec[me].done_count = TAKEN(me);
            rec[me].done_unfinished = unfinished;
            rec[me].done_item = it;
            rec[me].done_stage = 1
        }
        if
        :: cur != 0 ->
            maydie(C_OK, cdeaths);
            rec[me].held_head = rec[me].nnext[cur - 1];   /* T2 */
            maydie(C_OK, cdeaths);
            if                                        /* T3 */
            :: rec[me].held_tail == cur -> rec[me].held_tail = 0
            :: else -> skip
            fi
        :: else -> skip
        fi;
        maydie(C_OK, cdeaths);
        TAKEN_DEC(me);                                /* T4 */
        maydie(C_OK, cdeaths);
        d_step {                                      /* T5: marked done */
            unfinished--;
            assert(done[it - 1] == 0);
            done[it - 1]++
        }
        if
        :: cur != 0 ->
            maydie(C_OK, cdeaths);
            rec[me].nused[cur - 1] = 0                /* T6: Arena.free(node, clearing:) */
        :: else -> skip
        fi;
        maydie(C_OK, cdeaths);
        rec[me].done_stage = 0;                       /* T7 */
        maydie(C_OK, cdeaths);
        d_step {                                      /* T8: unlock */
            wake = (unfinished <= failed_tasks);
            if
            :: wake -> done_seq++; wake = (join_waiters > 0)
            :: else -> skip
            fi;
            lockOwner = 0
        }
        }
        maydie(C_OK, cdeaths);
        if                                            /* T9: wake the joiners */
        :: wake -> futex_wake_all(W_DONE)
        :: else -> skip
        fi;
        d_step { it = 0; cur = 0; seq = 0; wake = 0; r = 0; n = 0; k = 0; blk = 0 }
    od;
out:
    gone++;
    goto fin;
died:
    die(me);
fin:
    skip
}

/* The monitor: Monitor.State.ended for each death. */
proctype monitor() {
    byte c, r, n, k, j, cnt, live;
    bit wasDead;
    byte items[NODES];
    byte tmp[RSIZE];
end_watch:
    do
    :: pending > 0 ->
        d_step {                                      /* a pidfd became readable */
            c = 0;
            do
            :: c < NREC && !(rec[c].dead && !rec[c].handled) -> c++
            :: else -> break
            od;
            assert(c < NREC)
        }
        if                                            /* M1: settle its intents */
        :: rec[c].done_stage != 0 || rec[c].get_stage != 0 || rec[c].put_stage != 0 ->
            lock(MON, 0, deaths); lockOwner = 0
        :: else -> skip
        fi;
        if                                            /* M2: processDied (a taker entry) */
        :: c < NCONS ->
            lock(MON, 0, deaths);
            d_step {                                  /* the kept copies, in order */
                cnt = 0;
                j = rec[c].held_head;
                do
                :: j != 0 -> assert(cnt < NODES); items[cnt] = rec[c].nitem[j - 1]; cnt++; j = rec[c].nnext[j - 1]
                :: else -> break
                od
            }
            if
            :: cnt > 0 ->
                d_step {                              /* M3: requeueFrontLocked */
                    live = tail - head;
                    assert(cnt + live <= RSIZE - 1);
                    k = 0;
                    do
                    :: k < cnt -> tmp[k] = items[k]; k++
                    :: else -> break
                    od;
                    k = 0;
                    do
                    :: k < live -> tmp[cnt + k] = ring[head + k]; k++
                    :: else -> break
                    od;
                    k = 0;
                    do
                    :: k < RSIZE -> if :: k < cnt + live -> ring[k] = tmp[k] :: else -> ring[k] = 0 fi; k++
                    :: else -> break
                    od;
                    head = 0;
                    tail = cnt + live;
                    count = count + cnt;
                    items_seq++
                }
                futex_wake_all(W_ITEMS);
                TAKEN_SUB(c, cnt)
            :: else -> skip
            fi;
            d_step {                                  /* free the listed blocks */
                j = rec[c].held_head;
                do
                :: j != 0 -> rec[c].nused[j - 1] = 0; j = rec[c].nnext[j - 1]
                :: else -> break
                od;
                rec[c].held_head = 0;
                rec[c].held_tail = 0
            }
            if                                        /* M4: failTasksLocked */
            :: TAKEN(c) > 0 ->
                d_step { failed_tasks = failed_tasks + TAKEN(c); done_seq++ }
                futex_wake_all(W_DONE);
                TAKEN_CLEAR(c)
            :: else -> skip
            fi;
            lockOwner = 0
        :: else -> skip
        fi;
        d_step {                                      /* M5: state EXITED */
            rec[c].handled = 1; pending--; gone++;
            c = 0; cnt = 0; j = 0; k = 0; live = 0; r = 0; n = 0;
            do
            :: k < NODES -> items[k] = 0; k++
            :: else -> break
            od;
            k = 0;
            do
            :: k < RSIZE -> tmp[k] = 0; k++
            :: else -> break
            od;
            k = 0
        }
    od;
died:
    skip
}

/* The main process: p:join() for the producer, then q:join() (SharedQueue.join). */
proctype joiner() {
    byte seq, r, n, k, i, nd;
    bit wasDead;
    (pdone || rec[PROD].dead);
    lock(MAIN, 0, deaths);                            /* J0 */
    do
    :: unfinished > failed_tasks ->                   /* J1: waitLocked(done_seq) */
        d_step { seq = done_seq; join_waiters++; lockOwner = 0 }
        futex_wait(MAIN, W_DONE, done_seq, seq, unfinished <= failed_tasks, 0, deaths, 0);
        lock(MAIN, 0, deaths);
        join_waiters--
    :: else -> break
    od;
    atomic {                                          /* J2: join returns */
        nd = 0;
        i = 0;
        do
        :: i < NITEMS ->
            if
            :: committed[i] && done[i] == 0 -> nd++
            :: else -> skip
            fi;
            i++
        :: else -> break
        od;
        assert(nd <= failed_tasks);                   /* no item put is still in flight */
        assert(!REDELIVER || failed_tasks == 0);        /* with redeliver, none failed */
        lockOwner = 0;
        finished = 1
    }
    gone == NREC;                                     /* every consumer gone, every death handled */
    d_step {                                          /* the counts are exact */
        i = 0;
        do
        :: i < NITEMS ->
            assert(done[i] <= 1);
            assert(!committed[i] || done[i] == 1 || !REDELIVER);
            assert(committed[i] || (done[i] == 0 && delivered[i] == 0));
            i++
        :: else -> break
        od;
        assert(count == 0 && head == tail);
        assert(unfinished == failed_tasks);
        assert(pending == 0);
        r = 0;
        do
        :: r < NREC ->
            assert(TAKEN(r) == 0);
            assert(rec[r].held_head == 0 && rec[r].held_tail == 0);
            assert(rec[r].get_stage == 0 && rec[r].done_stage == 0);
            k = 0;
            do
            :: LEAKCHECK && k < NODES -> assert(!rec[r].nused[k]); k++
            :: else -> break
            od;
            r++
        :: else -> break
        od
    }
    goto fin;
died:
out:
    skip;
fin:
    skip
}

init {
    byte c;
    atomic {
        run monitor();
        run producer();
        c = 0;
        do
        :: c < NCONS -> run consumer(c); c++
        :: else -> break
        od;
        run joiner()
    }
}
