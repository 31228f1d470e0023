// Thin C wrappers for what Swift cannot call or see: Lua's macros, the
// variadic syscall(2)/prctl(2)/fcntl(2), the one place that raises a Lua error
// (lua_error longjmps, which must never cross a Swift frame), and the layout of
// the structures shared between processes. Every symbol is prefixed `jr_`.
// No policy lives here: Swift decides, C only wraps.
#ifndef JOBRUN_SHIMS_H
#define JOBRUN_SHIMS_H

// Lua's headers as Sources/CLua/shim.h finds them (no pkg-config: see there).
#if __has_include(<lua5.4/lua.h>)
#include <lua5.4/lua.h>
#include <lua5.4/lauxlib.h>
#include <lua5.4/lualib.h>
#else
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>
#include <pthread.h>
#include <sys/types.h>

// MARK: - Lua macros

static inline void jr_lua_pop(lua_State *L, int n) { lua_pop(L, n); }
static inline int jr_registryindex(void) { return LUA_REGISTRYINDEX; }
static inline int jr_upvalueindex(int i) { return lua_upvalueindex(i); }
/// The process context (ProcessContext.swift), kept in the state's extra
/// space: one load from any bound function, copied into every coroutine.
/// Set only in lua5.4 with the module (JobrunCore Lua/ForeignState.swift):
/// the context of its one state. lua5.4 never initialises a state's extra
/// space, so a coroutine made before `require "jobrun"` holds garbage there.
extern void *jr_foreign_context;
static inline void *jr_lua_context(lua_State *L) {
    void *c = jr_foreign_context;
    return c ? c : *(void **)lua_getextraspace(L);
}
static inline void jr_set_foreign_context(void *c) { jr_foreign_context = c; }
static inline void jr_lua_set_context(lua_State *L, void *c) { *(void **)lua_getextraspace(L) = c; }
/// The per-item part of this process's context (ProcessContext.Hot), for
/// code with no Lua state at hand (the arena, the ledger, kill points): a
/// plain load, where a Swift `static let` costs a swift_once call per read.
/// Set once, when the process makes its context.
extern void *jr_process_hot_part;
static inline void *jr_process_hot(void) { return jr_process_hot_part; }
static inline void jr_set_process_hot(void *p) { jr_process_hot_part = p; }
/// fflush(stdout): Swift 6 refuses C's `stdout`, a mutable global.
static inline void jr_fflush_stdout(void) { fflush(stdout); }
static inline void jr_lua_newtable(lua_State *L) { lua_newtable(L); }
static inline const char *jr_lua_tostring(lua_State *L, int i, size_t *len) { return lua_tolstring(L, i, len); }
/// How many Swift functions (jr_trampoline) are running now, counted by
/// jr_trampoline and set aside by jr_lua_pcall: while it is non-zero a Lua
/// memory error would longjmp across Swift frames, so the allocator
/// (jr_lua_newstate) does not fail then. Per process; Lua runs on one thread.
extern int jr_swift_depth;
/// lua_pcall from Swift: an error inside it unwinds to this call only, never
/// across a Swift frame, so Lua's allocator may fail again while it runs.
static inline int jr_lua_pcall(lua_State *L, int nargs, int nresults, int msgh) {
    int depth = jr_swift_depth;
    jr_swift_depth = 0;
    int r = lua_pcall(L, nargs, nresults, msgh);
    jr_swift_depth = depth;
    return r;
}
/// Swift code that works on a state outside any bound function (a plug-in
/// worker's request handling) counts itself as a bound function would, so
/// that Lua's allocator does not fail under it.
static inline void jr_swift_enter(void) { jr_swift_depth++; }
static inline void jr_swift_leave(void) { jr_swift_depth--; }
static inline void jr_lua_pushglobaltable(lua_State *L) { lua_pushglobaltable(L); }
static inline int jr_lua_isnoneornil(lua_State *L, int i) { return lua_isnoneornil(L, i); }
static inline lua_Integer jr_lua_tointegerx(lua_State *L, int i, int *isnum) { return lua_tointegerx(L, i, isnum); }
static inline lua_Number jr_lua_tonumberx(lua_State *L, int i, int *isnum) { return lua_tonumberx(L, i, isnum); }
static inline void *jr_lua_newuserdata(lua_State *L, size_t size) { return lua_newuserdatauv(L, size, 1); }
static inline int jr_luaL_getmetatable(lua_State *L, const char *name) { return luaL_getmetatable(L, name); }
static inline void jr_lua_insert(lua_State *L, int i) { lua_insert(L, i); }
static inline void jr_lua_remove(lua_State *L, int i) { lua_remove(L, i); }
static inline void jr_lua_replace(lua_State *L, int i) { lua_replace(L, i); }
/// A full garbage collection (lua_gc is variadic). Errors in finalizers
/// become warnings in Lua 5.4: nothing is raised.
static inline void jr_lua_collect(lua_State *L) { (void)lua_gc(L, LUA_GCCOLLECT, 0); }
static inline int jr_lua_upvalue_is_env(const char *name) { return name && name[0] == '_' && name[1] == 'E' && name[2] == 'N' && name[3] == 'V' && name[4] == 0; }

/// A Lua-callable Swift function: returns the number of results, or -1 after
/// pushing an error value, which `jr_trampoline` then raises once Swift has
/// returned.
typedef int (*jr_swift_fn)(lua_State *L);

/// Pushes a C closure that calls `fn` and raises its error if it returns -1.
void jr_push_swift_function(lua_State *L, jr_swift_fn fn);

/// luaL_newstate with jobrun's allocator: realloc/free, as Lua's own (it counts Lua's bytes only under a limit).
/// An allocation Lua makes while a Swift function runs (jr_swift_depth) never
/// fails with a Lua memory error, which would longjmp across the Swift frames
/// (and leak what they hold, such as a queue item's block): it may go past
/// the limit, and if the system itself has no memory left the process ends
/// with a message (its supervisor repairs what it held, as after any death).
/// Everywhere else a failed allocation is Lua's ordinary "not enough memory"
/// error. The limit is for tests only (JOBRUN_TEST_LUA_LIMIT=<bytes>): none
/// otherwise.
lua_State *jr_lua_newstate(void);

/// A state whose Lua memory is capped per state, not per process (a plug-in
/// worker's, PluginWorker): its allocator counts the state's bytes in a
/// budget of its own (the allocator's `ud`) and fails a growth past `limit`
/// (0: no limit, bytes still counted) with Lua's "not enough memory" error,
/// except while Swift runs (jr_swift_depth), as jr_lua_newstate's does.
/// Close it with jr_lua_close_budgeted, which frees the budget.
lua_State *jr_lua_newstate_budgeted(size_t limit);
/// Changes a budgeted state's limit (0: none); false if `L` has no budget.
int jr_lua_set_limit(lua_State *L, size_t limit);
/// Bytes a budgeted state holds now (0 if it has no budget).
size_t jr_lua_allocated_bytes(lua_State *L);
/// lua_close, then frees the state's budget if it has one.
void jr_lua_close_budgeted(lua_State *L);

/// Runs `lua_dump` into a growing buffer; returns a malloc'ed copy (free with free()).
char *jr_lua_dump(lua_State *L, int strip, size_t *len);

/// `luaL_traceback` plus the message-handler logic used by lua.c: turns the
/// error at the top into `tostring(err)` + traceback. Used as a pcall handler.
int jr_traceback_handler(lua_State *L);

/// Opens all standard libraries (luaL_openlibs) under a protected call.
int jr_openlibs(lua_State *L);

// MARK: - Linux system calls

int jr_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns);
int jr_futex_wake(uint32_t *addr, int count);
int jr_memfd_create(const char *name);
int jr_pidfd_open(pid_t pid);
/// Signals the process a pidfd refers to (never a later process with a reused pid).
int jr_pidfd_send_signal(int pidfd, int sig);
int jr_set_pdeathsig(int sig);
/// prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to us.
int jr_set_child_subreaper(void);
int jr_set_cloexec(int fd, int on);
/// fcntl(F_DUPFD_CLOEXEC): a copy of `fd` numbered at least `minfd`.
int jr_dup_cloexec(int fd, int minfd);
/// Sets stdout line-buffered so lines of several processes never interleave mid-line.
void jr_stdout_linebuffered(void);
/// fflush(NULL) then _exit(code): a forked worker must not run the parent's atexit handlers.
void jr_flush_and_exit(int code) __attribute__((noreturn));
int jr_punch_hole(int fd, uint64_t offset, uint64_t length);
int jr_fallocate(int fd, uint64_t offset, uint64_t length);
int jr_errno(void);
/// Unblocks every signal and restores the default action of the ones that
/// stop a process: a launcher may hand us an inherited mask or ignored
/// SIGTERM, and `terminate()` must work all the same.
void jr_reset_signals(void);
void jr_cpu_relax(void);
/// glibc's sigabbrev_np ("KILL" for 9; NULL for a number it has no name
/// for), a _GNU_SOURCE name Swift does not see.
const char *jr_signal_abbrev(int sig);
int jr_cpu_count(void);

// MARK: - Robust process-shared mutex

/// Initialises a process-shared, robust mutex in shared memory.
int jr_mutex_init(pthread_mutex_t *m);
/// jr_mutex_lock's answer when the previous owner died holding the mutex.
#define JR_OWNER_DIED 1
/// Locks; returns 0, or JR_OWNER_DIED when the previous owner died holding
/// it (the caller then holds it, still inconsistent: it repairs what the
/// dead owner left and calls jr_mutex_consistent before unlocking; Swift
/// does both through RobustMutex.lock), or -errno.
int jr_mutex_lock(pthread_mutex_t *m);
void jr_mutex_unlock(pthread_mutex_t *m);
/// pthread_mutex_consistent: the state the dead owner left is whole again.
/// A holder that unlocks without it makes the mutex unusable for good.
void jr_mutex_consistent(pthread_mutex_t *m);
/// Locks only if free: 0 (held now), JR_OWNER_DIED (held now, inconsistent,
/// as jr_mutex_lock), or -EBUSY. For the monitor, which must never wait on
/// a lock that a stopped process may hold.
int jr_mutex_trylock(pthread_mutex_t *m);

// MARK: - The monitor's own needs

/// prctl(PR_SET_NAME): the name `ps`, `pgrep` and /proc/<pid>/comm show.
int jr_set_process_name(const char *name);

/// Blocks SIGTERM and returns a non-blocking signalfd that reads it (-1 on
/// failure: SIGTERM is then left as it was).
int jr_term_signalfd(void);

/// Reads every signal pending on a jr_term_signalfd; the count read.
int jr_term_signalfd_drain(int fd);
/// "file:line" of the innermost Lua function at or above stack `level`
/// that is the script's, not jobrun's prelude (`@jobrun/prelude/...`),
/// into `out`; "" when there is none. Raises nothing.
void jr_lua_user_where(lua_State *L, int level, char *out, size_t size);
/// Raises the soft limit on open descriptors to the hard limit; returns the
/// soft limit then in force (-1 when unknown).
long jr_raise_nofile_limit(void);

// MARK: - Shared-memory layout
//
// The arena is one memfd mapped MAP_SHARED by every process of a run, at any
// address: everything in it refers to everything else by offset from its start.

#define JR_ARENA_MAGIC 0x6a6f6272756e3031ULL /* "jobrun01" */
#define JR_NCLASSES 40   /* block size classes: 2^5 ... 2^39 bytes */
#define JR_MAX_PROCESSES 4096

/// The object table: chunks of 2047 entries of 32 bytes (a 64 KiB block
/// each), at most 2048 chunks: about 4.2 million objects alive at once.
#define JR_OBJECT_CHUNK_ENTRIES 2047
#define JR_OBJECT_CHUNKS 2048

#define JR_HELD_INLINE 30   /* objects a process record lists inline (jr_process_record.held) */

#define JR_QUEUE_FAILED_PIDS 8
#define JR_MESSAGE_BYTES 4096

/// One record per process of the run, the supervisor's view of it. The
/// process itself claims the slot (under `proc_lock`) and writes its wait
/// fields; its parent writes `exit_code` when it reaps it; the monitor writes
/// `state` once the process has ended.
typedef struct jr_process_record {
    int32_t pid;            // 0 = free slot
    int32_t parent_pid;
    int32_t exit_code;      // n, or -signal; valid when has_exit_code
    uint32_t has_exit_code;
    uint32_t state;         // JR_PROC_*
    uint32_t wait_kind;     // JR_WAIT_*: 0 while running Lua code (or sleeping)
    uint32_t wait_timed;    // the wait has a deadline, so it cannot deadlock
    uint32_t reserved;
    uint64_t wait_object;   // arena offset of the object waited on
    uint64_t wait_word;     // arena offset of the futex word it sleeps on
    uint64_t wait_gen;      // bumped at every wait: "still the same wait" for the monitor
    char name[64];
    // For --stats and the progress line. The process counts its own items;
    // whoever reaps it (wait4) writes its resource usage; the first to see it
    // end (monitor or reaper) writes `end_ns`.
    uint64_t items_put;
    uint64_t items_got;
    int64_t start_ns;       // CLOCK_MONOTONIC, when the record was claimed: with `pid`,
                            // the process's identity (a reused pid has a later one)
    int64_t end_ns;         // 0 while running
    uint64_t user_us;       // CPU time, valid when has_usage
    uint64_t system_us;
    uint64_t max_rss_kib;   // peak resident memory
    uint32_t has_usage;
    // A task_done in progress under the queue's lock (done_stage 1), for
    // the repair to roll forward: the queue, the kept copy it frees (0 if
    // none), and done_entry/done_count/done_unfinished below.
    uint32_t done_stage;
    uint64_t done_queue;
    uint64_t done_node;
    // A get from a JoinableQueue (or of a large item) in progress under the
    // queue's lock: 1 = the item at get_item_head..get_item_end may be
    // leaving the ring, 2 = it has (head moved past it); the taker entry's
    // count and kept copy (get_held_block) are then added. The next locker's
    // repair finishes or drops it (SharedQueue.finishGet).
    uint32_t get_stage;
    uint32_t reserved3;
    uint64_t get_queue;
    uint64_t get_item_head;
    uint64_t get_item_end;
    uint64_t get_taken;     // this process's taker entry's count before
    uint64_t get_held_tail; // its held_tail before
    // The monitor's verdict on this process's wait (Monitor.declare): 0
    // none, 1 Deadlock, 2 WorkerDied. The process raises it once and clears
    // it (ProcessRegistry.takeVerdict); `verdict_token` is the `wait_token`
    // of the sleep it was judged on, so a verdict that arrives after that
    // sleep ended is dropped, never raised in a later wait.
    uint32_t verdict;
    uint32_t wait_value;    // the value of the futex word when the process went to sleep on it
    uint64_t wait_token;    // bumped by the process before every sleep
    uint64_t verdict_token;
    // For the exit status (Host.endOfRun): the script was told how this
    // process ended (a WorkerDied about it, p:join(), p.exitcode), and the
    // script sent it its signal (p:terminate(), p:kill(), the end of the run).
    uint32_t reported;
    uint32_t signalled;
    // The intents of the data operations below (SharedQueue), each written
    // before the step it describes, so whoever repairs after a SIGKILL (the
    // next locker of the queue on EOWNERDEAD, or the monitor) rolls forward
    // or back exactly.
    // A ring or taker-table growth, under the queue's lock: 1 = growing.
    // The allocator records the new block in grow_new (under alloc_lock);
    // the queue's own field (ring_off, takers_off) equal to grow_new says it
    // was published; freeing the old block clears grow_stage (under alloc_lock).
    uint32_t grow_stage;
    uint32_t grow_kind;     // JR_GROW_*
    uint64_t grow_queue;
    uint64_t grow_old;
    uint64_t grow_new;
    uint64_t grow_cap;      // the new capacity (ring bytes, or taker entries)
    uint64_t grow_tail;     // ring: bytes copied into the new ring (its tail)
    // A large put's own item block, from its allocation (recorded by the
    // allocator) until its record is in the ring; put_stage 1 = writing the
    // record under the queue's lock, whose tail was put_tail before.
    uint64_t put_queue;
    uint64_t put_block;
    uint64_t put_tail;
    uint32_t put_stage;
    uint32_t space_waiting; // counted in jr_arena_header.space_waiters (under alloc_lock)
    uint64_t get_held_block;// a get from a redeliver queue: the block for its kept copy
    // task_done under the queue's lock (done_stage 1, done_queue, done_node
    // above): which taker entry it settles (index + 1; 0: none), and that
    // entry's count and the queue's `unfinished` before.
    uint64_t done_entry;
    uint64_t done_count;
    uint64_t done_unfinished;
    uint64_t put_unfinished;// a put to a JoinableQueue: its `unfinished` before (put_stage 1)
    uint64_t get_block;     // a large item's own block, the getter's once it left the ring, until freed
    uint64_t pipe_ends;     // arena offset of its jr_pipe_ends list (0: holds no Pipe end)
    // The objects it holds a reference to (ObjectTable.swift, "the list the
    // monitor reads"): slot + 1 per entry, 0 when free; the first
    // JR_HELD_INLINE here, the rest in a jr_obj_holdings block (0: none).
    // Only the process writes them, one store per change; the monitor
    // drops what is listed once it is dead.
    uint64_t obj_holdings;
    uint32_t held[JR_HELD_INLINE];
    // A forked worker that failed on a global its copy of the parent's
    // state lacks ("attempt to call a nil value (global 'f')") writes the
    // name here; its parent, told of its end, hints that `f` was defined
    // after the worker started if its own globals have it (process.lua).
    char missing_global[48];
} jr_process_record;

enum { JR_GROW_RING = 0, JR_GROW_TAKERS = 1 };

/// Who holds a JoinableQueue's items (taken, not yet marked done): one
/// entry per process that took from it, in a block of the queue's own
/// (jr_queue.takers_off), read and written under the queue's lock.
typedef struct jr_taker {
    uint32_t slot;          // process record index + 1 (0: free entry)
    int32_t pid;
    uint64_t count;         // items taken and not marked done
    uint64_t since;         // jr_queue.take_seq when count rose from 0: the oldest taker has the least
    uint64_t held_head;     // redeliver: kept copies (jr_held), oldest first
    uint64_t held_tail;
} jr_taker;

/// A copy of an item taken from a `redeliver` queue and not yet marked
/// done; the monitor puts it back at the front if its taker dies.
typedef struct jr_held {
    uint64_t next;
    uint64_t queue;
    uint64_t length;        // the encoded item's bytes follow
} jr_held;

// STARTING: written by the parent before fork/spawn (pid 0 until the fork
// returns); the child takes the record over and makes it RUNNING.
enum { JR_PROC_FREE = 0, JR_PROC_RUNNING = 1, JR_PROC_EXITED = 2, JR_PROC_STARTING = 3 };
enum {
    JR_WAIT_NONE = 0, JR_WAIT_GET = 1, JR_WAIT_PUT = 2, JR_WAIT_JOIN = 3, JR_WAIT_LOCK = 4,
    JR_WAIT_SEMAPHORE = 5, JR_WAIT_EVENT = 6, JR_WAIT_BARRIER = 7, JR_WAIT_CONDITION = 8,
    JR_WAIT_RECV = 9, JR_WAIT_PROCESS = 10, JR_WAIT_MEMORY = 11,
    JR_WAIT_POOL = 12,      // a Pool's caller waiting for results, or its idle worker for a task
};

/// A script's own counter, `jobrun.progress(name, done [, total])`.
#define JR_MAX_COUNTERS 16
typedef struct jr_progress_counter {
    char name[48];          // empty: a free slot
    uint64_t done;
    uint64_t total;         // 0: unknown
    int64_t first_ns;       // when it was first reported, for the rate and ETA
} jr_progress_counter;

/// Freed queues of one kind, made at one place under one name (--stats).
#define JR_RETIRED_QUEUES 32
typedef struct jr_retired_queue {
    char site[80];
    char label[48];
    uint32_t flags;         // jr_queue.flags of the first
    uint32_t count;         // queues freed (0: a free entry)
    uint64_t put, got, done, bytes, peak, put_wait_ns, get_wait_ns;
} jr_retired_queue;

/// The arena's first page. `alloc_lock` guards `top`, `in_use` and the free
/// lists; `space_seq` is bumped (under the lock) whenever memory is freed so a
/// producer waiting for memory can sleep on it.
typedef struct jr_arena_header {
    uint64_t magic;
    uint64_t size;          // bytes of address space mapped
    uint64_t limit;         // most bytes that may be in use at once
    uint64_t top;           // bump pointer: first never-used offset
    uint64_t in_use;        // bytes in allocated blocks
    uint64_t peak;          // highest in_use seen
    uint64_t free_heads[JR_NCLASSES];     // free blocks whose pages are still there
    uint64_t punched_heads[JR_NCLASSES];  // free blocks whose pages were given back
    uint32_t free_resident[JR_NCLASSES];  // free blocks of a class kept with their pages
    pthread_mutex_t alloc_lock;
    uint32_t space_seq;
    uint32_t space_waiters;
    uint32_t next_object_id;
    uint32_t next_process_number;  // for default names "Process-<n>"
    pthread_mutex_t proc_lock;     // guards claiming process slots (the monitor alone writes `failure`)
    uint32_t process_slots;        // high-water mark of used slots
    uint32_t failed;               // the kind of the monitor's last verdict (jr_process_record.verdict)
    char failure[JR_MESSAGE_BYTES]; // its text: rewritten only when no live process has a verdict to take
    jr_process_record processes[JR_MAX_PROCESSES];
    int64_t run_start_ns;   // CLOCK_MONOTONIC when the run began
    // The progress line: `progress_state` is JR_PROGRESS_*; the monitor draws
    // only in ON and under `progress_lock`, which the main process takes to
    // switch it OFF (and wipe the line) before it writes its last words.
    pthread_mutex_t progress_lock;
    uint32_t progress_state;
    uint32_t progress_drawn; // a status line is on the screen now
    jr_progress_counter counters[JR_MAX_COUNTERS];
    // Once every record has been used, a new process takes the record of one
    // that has ended and been reaped (under proc_lock, from `recycle_next`
    // on); what those did is summed here for --stats.
    uint32_t recycle_next;
    uint32_t recycled;
    uint64_t recycled_got;
    uint64_t recycled_put;
    uint64_t recycled_cpu_us;
    // The monitor's pid (0 while there is none): the main process starts a
    // new one when it finds this one dead.
    int32_t monitor_pid;
    uint32_t reserved_monitor;
    // The allocator's intent, written under alloc_lock before a free list,
    // `top` or `in_use` changes (Arena.swift, "Dying under alloc_lock"):
    // the next locker after the holder's death rolls an allocation back and
    // a free forward from these values, which were read under the lock.
    uint32_t alloc_op;      // JR_ALLOC_NONE / _ALLOCATE / _FREE, stored last
    uint32_t alloc_class;   // the block's size class
    uint64_t alloc_block;   // the block's offset (its jr_block header)
    uint64_t alloc_source;  // allocate: 0 from free_heads, 1 from punched_heads, 2 from top; free: 0/1, the list it joins
    uint64_t alloc_link;    // allocate: the block's `next` before; free: the head it goes in front of
    uint64_t alloc_word;    // allocate: the block's `size_class` before; free: the one it gets
    uint64_t alloc_in_use;  // in_use before
    uint64_t alloc_top;     // top before
    uint64_t alloc_dest;    // arena offset of the caller's u64 field set to the payload (allocate) or zeroed (free); 0: none
    uint64_t alloc_dest32;  // free: arena offset of the caller's u32 field (a stage) zeroed with it; 0: none
    // Random at creation; a `script` worker is handed it (--worker-token) and
    // attaches only to the arena that carries it.
    uint8_t token[16];
    // Unseen failures (ProcessRegistry.unseenFailures) whose records were
    // reused, under proc_lock: the run's summary counts them ("and N more").
    uint64_t recycled_unseen;
    // The object table (ObjectTable.swift): every shared object the script
    // can hold a handle to, in chunks of JR_OBJECT_CHUNK_ENTRIES entries
    // allocated as needed (`object_chunks`, set by the allocator under its
    // lock). `objects_lock` guards the entries' refs/state, `objects_used`
    // (slots ever taken) and the free list (`objects_free`: slot + 1).
    pthread_mutex_t objects_lock;
    uint32_t objects_used;
    uint32_t objects_free;
    uint64_t object_chunks[JR_OBJECT_CHUNKS];
    // Listed queues freed during the run, summed by where they were made
    // and their name, for --stats (under objects_lock; the last entry takes
    // whatever finds no other).
    jr_retired_queue retired[JR_RETIRED_QUEUES];
    // The one word a Swift host's waiter thread sleeps on (Runtime+Waits.swift)
    // for all of its waits at once: bumped (atomically) and woken by any
    // process whose change to a queue may end one (a queue counts them in
    // host_get_waiters/host_join_waiters), by the host itself when a wait is
    // added or cancelled, and by the monitor with a verdict.
    uint32_t host_seq;
    uint32_t host_reserved;
} jr_arena_header;

enum { JR_ALLOC_NONE = 0, JR_ALLOC_ALLOCATE = 1, JR_ALLOC_FREE = 2 };

enum { JR_PROGRESS_DISABLED = 0, JR_PROGRESS_ON = 1, JR_PROGRESS_OFF = 2 };

/// Every allocated block starts with this header; the payload follows.
typedef struct jr_block {
    uint64_t size_class;    // log2 of the block's total size
    uint64_t next;          // free-list link while free; magic while allocated
} jr_block;
_Static_assert(sizeof(jr_block) == 16, "block header must stay 16 bytes");

/// Every shared object (queue, lock, ...) starts with this header.
typedef struct jr_object_header {
    uint32_t type;          // JR_OBJ_*
    uint32_t id;            // run-unique, for messages ("Queue#3")
    uint32_t slot;          // its entry in the object table (a Pipe: end 0's)
    uint32_t held_handles;  // 1 once an item or value holding a handle was stored in it
                            // (by the storing process, a plain store; never cleared):
                            // a reference dropped looks for a cycle through it
} jr_object_header;

/// One entry of the object table. A handle names an object as (slot,
/// generation): the decoder accepts it only if the entry is LIVE, of the
/// handle's type and of its generation, so a stale or forged handle is an
/// error, never a pointer into freed memory. `refs` counts one reference per
/// process holding handles to it (ProcessContext.objects.holdings), one per encoded copy
/// of a handle in shared memory (a queued item, a Dict value, a kept copy, a
/// worker's arguments) and one per object that links it (a Condition's lock,
/// a Dict's update lock, a Pool's queues). Written under objects_lock.
typedef struct jr_object_entry {
    uint32_t type;          // JR_OBJ_*
    uint32_t generation;    // bumped when the object is freed: its handles go stale
    uint64_t offset;        // the object's block (payload offset); 0 once freed
    uint64_t refs;
    uint32_t state;         // JR_SLOT_*
    uint32_t next_free;     // FREE: the next free slot + 1 (0: none)
} jr_object_entry;
_Static_assert(sizeof(jr_object_entry) == 32, "object table entry must stay 32 bytes");

enum { JR_SLOT_FREE = 0, JR_SLOT_LIVE = 1, JR_SLOT_DYING = 2 };

enum {
    JR_OBJ_QUEUE = 1,
    JR_OBJ_JOINABLE_QUEUE = 2,
    JR_OBJ_LOCK = 3,
    JR_OBJ_RLOCK = 4,
    JR_OBJ_SEMAPHORE = 5,
    JR_OBJ_BOUNDED_SEMAPHORE = 6,
    JR_OBJ_EVENT = 7,
    JR_OBJ_BARRIER = 8,
    JR_OBJ_CONDITION = 9,
    JR_OBJ_VALUE = 10,
    JR_OBJ_DICT = 11,
    JR_OBJ_PIPE_END0 = 12,  // the two ends of one jr_pipe: the type names the end
    JR_OBJ_PIPE_END1 = 13,
    JR_OBJ_POOL = 14,
};

/// A Pipe: end i sends on queue[i] and receives from queue[1 - i] (for a
/// one-way pipe, end 0 only receives and end 1 only sends, on queue[1]).
/// Which processes hold which end is in their jr_pipe_ends lists: once no
/// live process holds an end, both queues are closed, so the other end reads
/// what is left and then gets EOF, and its sends fail.
typedef struct jr_pipe {
    jr_object_header hdr;
    uint64_t queue[2];
    uint32_t duplex;
    uint32_t end0_generation; // end 0's entry is hdr.slot: it owns the block, end 1's holds a reference to it
    char label[48];         // the `name` option, or empty
} jr_pipe;

/// The objects a process holds a reference to past the JR_HELD_INLINE of
/// its record (ProcessContext.objects.holdings), so that the monitor drops them when
/// the process is killed. Only the process writes it, one store per change:
/// an entry is slot + 1, or 0. An entry is written after the reference is
/// taken and cleared before it is dropped, so a death in between leaks it,
/// never drops it twice.
typedef struct jr_obj_holdings {
    uint32_t capacity;
    uint32_t reserved;
    uint32_t entries[];     // `capacity` of them
} jr_obj_holdings;

/// One Pipe end a process has a copy of.
typedef struct jr_pipe_hold {
    uint64_t pipe;          // arena offset of the jr_pipe
    uint32_t end;           // 0 or 1
    uint32_t held;          // 1 while the process holds it; 0 once it closed its copy (the entry may then be reused)
    uint32_t slot;          // end 0's entry in the object table, and its generation:
    uint32_t generation;    // the pipe is touched only while that entry is live (a reference taken)
} jr_pipe_hold;

/// The Pipe ends a process holds (jr_process_record.pipe_ends). Only its
/// process appends to it or clears `held`; anyone reads it. A parent fills a
/// list for a child before it starts (the ends it inherits) and chains it
/// from its own `children`: while `pending`, that list counts for the child
/// (pid 0: being started), until the child adopts it as its own.
typedef struct jr_pipe_ends {
    uint32_t count;         // entries written (never removed; one not held may be reused)
    uint32_t capacity;
    int32_t pid;            // a list filled for a child: the child's pid
    uint32_t pending;       // 1 while filled for a child that has not adopted it
    uint64_t children;      // lists this process filled for its children, newest first
    uint64_t sibling;       // next list in the parent's `children` chain
    jr_pipe_hold entries[]; // `capacity` of them
} jr_pipe_ends;

/// A shared dictionary: open addressing over `slots` (a power of two), each
/// slot pointing at an entry block [u32 key length][u32 0][u64 value length]
/// [encoded key][encoded value]. Everything is read and written under
/// `lock`, entry blocks and tables are allocated and freed under it too.
/// `update_lock` is the offset of a jr_sync Lock that serialises
/// `update(k, fn)` calls. The `pending_*` fields are the intent of the
/// change in progress (SharedDict.swift, "Dying under the lock"): blocks
/// the holder allocated or is about to free; the allocator sets and clears
/// them under its own lock, so a block is named there exactly while it is
/// the holder's to publish or free.
typedef struct jr_dict {
    jr_object_header hdr;
    pthread_mutex_t lock;
    uint64_t slots_off;
    uint64_t capacity;
    uint64_t count;
    uint64_t used;          // count + tombstones
    uint64_t update_lock;
    uint64_t pending_entry;    // a new entry, until a slot holds it
    uint64_t pending_old;      // an entry replaced or deleted, until freed
    uint64_t pending_table;    // a new slot table, until published and the intent cleared
    uint64_t pending_capacity; // its capacity
    uint64_t old_table;        // the table it replaces, until freed
} jr_dict;

typedef struct jr_dict_slot {
    uint64_t hash;          // 0 empty, 1 deleted; real hashes are >= 2
    uint64_t entry;         // offset of the entry block
} jr_dict_slot;
_Static_assert(sizeof(jr_dict_slot) == 16, "dict slot must stay 16 bytes");

/// Every synchronisation object (Lock, RLock, Semaphore, BoundedSemaphore,
/// Event, Barrier, Condition) is one of these. All fields are written under
/// `lock`, held only for a few instructions, never while the caller waits:
/// waiting is a futex sleep on `seq`, which is bumped (under `lock`) by every
/// change that may let a waiter proceed.
typedef struct jr_sync {
    jr_object_header hdr;
    pthread_mutex_t lock;
    int64_t value;          // Lock/RLock: 1 held; Semaphore: count; Event: 0/1; Barrier: arrived
    int64_t bound;          // BoundedSemaphore: most value; Barrier: parties
    int32_t owner;          // Lock/RLock: pid of the holder (0: none)
    uint32_t depth;         // RLock: acquisitions by the owner
    uint32_t seq;           // futex word
    uint32_t waiters;       // sleepers on seq: wake only when non-zero
    uint64_t generation;    // Barrier: bumped each time the barrier opens
    uint32_t broken;        // Barrier: a wait timed out; later waits fail
    uint32_t reserved;
    uint64_t link;          // Condition: offset of its Lock or RLock
    uint64_t owner_start;   // the holder's record start_ns: `owner` alone may be a reused pid
    char label[48];         // the `name` option, or empty
} jr_sync;

/// A shared number (`jobrun.Value`): an integer or a float, under `lock`.
/// `integer` and `number` are separate fields so that a write fills the
/// payload first and then switches `is_float` with one store: a writer
/// killed at any point leaves the old value or the new one.
typedef struct jr_value {
    jr_object_header hdr;
    pthread_mutex_t lock;
    uint32_t is_float;
    uint32_t reserved;
    int64_t integer;
    double number;
} jr_value;

/// A ring position: `h % cap`. A ring's capacity fills its block's size
/// class (2^k less the block header), so it is not a power of two and the
/// position is a true remainder; a 64-bit division costs ~40 cycles, and the
/// two of each item were 8% of a one-process put/get loop. Lemire's fastmod
/// (Lemire, Kaser, Kurz 2019) multiplies by a 128-bit reciprocal instead,
/// computed once per capacity and kept per thread (the monitor's repair
/// threads read rings too): every queue starts with the same capacity, so it
/// is seldom recomputed. (Keeping the reciprocal in jr_queue beside ring_cap
/// measured slower: it moves the hot fields.)
static inline uint64_t jr_ring_pos(uint64_t h, uint64_t cap) {
    static _Thread_local uint64_t cached_cap = 0;
    static _Thread_local __uint128_t cached_m = 0;
    if (cap != cached_cap) {
        cached_m = ((__uint128_t)0 - 1) / cap + 1;   // 0 for cap 1: remainders are 0
        cached_cap = cap;
    }
    __uint128_t low = cached_m * h;
    __uint128_t bottom = ((low & UINT64_MAX) * cap) >> 64;
    __uint128_t top = (low >> 64) * cap;
    return (uint64_t)((bottom + top) >> 64);
}

/// A queue: a byte ring of length-prefixed records, guarded by `lock`.
/// Producers write records at `tail`, consumers read at `head` (both
/// monotonically increasing byte counts; position = value % ring_cap).
/// Items too large for the ring live in their own arena block and the ring
/// holds a reference. Futex words: `items_seq` is bumped when an item arrives
/// or the queue closes, `space_seq` when an item leaves, `done_seq` when
/// `unfinished` reaches zero; each is bumped under `lock` and woken only when
/// its waiter count is non-zero.
typedef struct jr_queue {
    jr_object_header hdr;
    // Seldom written: they share the header's cache line, so that the lock
    // starts the next one, as it did before the object header grew. glibc
    // writes a robust mutex's list links at every lock and unlock, and a
    // mutex straddling two lines cost a producer and a consumer handing
    // items over ~4% (scripts/bench, 1 -> 1 small items).
    int64_t maxsize;        // <= 0: unbounded (by item count)
    uint64_t ring_off;      // offset of the ring's bytes
    uint64_t ring_cap;      // its block's size class less the block header (a multiple of 8)
    uint32_t closed;
    uint32_t flags;         // JR_QUEUE_*
    pthread_mutex_t lock;
    uint64_t count;         // items in the queue (read without lock for spinning)
    uint64_t unfinished;    // JoinableQueue: put and not yet marked done
    uint64_t head;
    uint64_t tail;
    uint32_t items_seq;
    uint32_t space_seq;
    uint32_t done_seq;
    uint32_t get_waiters;
    uint32_t put_waiters;
    uint32_t join_waiters;
    uint64_t total_put;
    uint64_t total_got;
    uint64_t failed_tasks;  // taken by processes that died before task_done
    int32_t failed_pid;     // the last such process, for the message
    int32_t failed_code;
    char failed_name[64];
    // For --stats and the progress line; written under `lock`.
    uint64_t total_bytes;   // encoded bytes put
    uint64_t peak_count;    // most items queued at once
    uint64_t put_wait_ns;   // time producers spent waiting on a full queue
    uint64_t get_wait_ns;   // time consumers spent waiting on an empty one
    char label[48];         // the `name` option, or empty
    char site[80];          // where it was made: "pipeline.lua:12"
    // Every process whose tasks were failed (failTasks), in order, for
    // join's WorkerDied: the first JR_QUEUE_FAILED_PIDS are listed.
    uint32_t failed_pid_count;
    int32_t failed_pids[JR_QUEUE_FAILED_PIDS];
    // JoinableQueue: its takers (jr_taker[takers_cap]), 0 until the first get.
    uint64_t takers_off;
    uint64_t takers_cap;
    uint64_t take_seq;
    // The pids past the first JR_QUEUE_FAILED_PIDS (int32_t[failed_more_cap],
    // 0 until needed): a join's WorkerDied marks every one as reported.
    uint64_t failed_more_off;
    uint64_t failed_more_cap;
    // Of `get_waiters`/`join_waiters`, those that are a Swift host's waits
    // (Runtime+Waits.swift), counted by the host under `lock`: they sleep on
    // the arena's `host_seq`, not on this queue's words, so a change that
    // wakes them bumps and wakes that word too (and the queue's own word
    // only when someone else sleeps on it). Read only in the branch that
    // wakes, so a put with no waiter never looks here.
    uint32_t host_get_waiters;
    uint32_t host_join_waiters;
} jr_queue;

// LISTED: shown in the progress line and --stats (the run's queues are
// found in the object table, SharedQueue.all).
enum { JR_QUEUE_JOINABLE = 1, JR_QUEUE_REDELIVER = 2, JR_QUEUE_LISTED = 4 };

/// A record in a queue's ring: header then payload, padded to 8 bytes.
typedef struct jr_record {
    uint32_t length;        // payload bytes (inline) or 16 (external reference)
    uint32_t kind;          // JR_REC_*
} jr_record;
_Static_assert(sizeof(jr_record) == 8, "record header must stay 8 bytes");

enum { JR_REC_INLINE = 1, JR_REC_EXTERNAL = 2, JR_REC_WRAP = 3 };

/// Fills buf with `length` bytes from the kernel's random source (getrandom,
/// not imported by Swift's Glibc module); the count, or -1.
long jr_getrandom(void *buf, unsigned long length);

/// posix_spawn file action closing every descriptor >= `from` in the child
/// (glibc >= 2.34, a _GNU_SOURCE name Swift does not see); 0 or an errno.
int jr_spawn_addclosefrom(void *actions, int from);

/// What one Pool worker holds (jr_pool.slots_off). Only the worker writes
/// its slot, except after its death (the next locker of jr_pool.lock, or the
/// pool's caller, finishes or undoes a take it interrupted).
typedef struct jr_pool_slot {
    int32_t pid;            // the worker using the slot (0: none)
    uint32_t stage;         // JR_POOL_*
    uint64_t mark;          // TAKING: items taken from the task queue before this take
    uint64_t task;          // HOLDING: the task's number, its place in the task queue (from 1)
    // The item the worker is on, written only for a task with a per-item
    // timeout (Pool `timeout`), read by the caller to know when it is due:
    // the worker stores started_ns = 0, then task/item, then started_ns
    // (release); the caller reads started_ns, the two, started_ns again and
    // trusts them only when both reads agree and are non-zero.
    uint64_t item_task;     // the task's id (pool.lua's, its place in the task queue)
    uint64_t item;          // the item's place in the task's chunk (from 1)
    uint64_t started_ns;    // monotonic clock when the item started (0: being written)
} jr_pool_slot;

/// A Pool's shared state. A worker takes a task under `lock`: it notes the
/// intent (stage TAKING, `mark`) before the get and the task after it, so a
/// death at any point leaves an exact answer to "which task did it hold".
/// `result_seq` is the caller's futex word (bumped after every result),
/// `work_seq` the idle workers' (bumped after every task put); each is woken
/// only when its waiter count is non-zero.
typedef struct jr_pool {
    jr_object_header hdr;
    pthread_mutex_t lock;
    uint64_t task_queue;    // offsets of the pool's two queues
    uint64_t result_queue;
    uint64_t slots_off;     // nslots jr_pool_slot
    uint32_t nslots;
    uint32_t result_seq;
    uint32_t result_waiters;
    uint32_t work_seq;
    uint32_t work_waiters;
    uint32_t reserved;
} jr_pool;

enum { JR_POOL_IDLE = 0, JR_POOL_TAKING = 1, JR_POOL_HOLDING = 2 };

/// SIGCHLD: counts child ends and, while `word` is set, bumps and wakes
/// that futex word, so a wait on it ends when a child ends (Pool's caller).
/// Installed once, with SA_RESTART | SA_NOCLDSTOP.
void jr_sigchld_install(void);
uint32_t jr_sigchld_count(void);
void jr_sigchld_word(uint32_t *word);

// MARK: - What the code relies on in the shared layout
//
// Every process of a run (forked or a `script` worker, the same binary)
// reads these structures at the same offsets, from Swift (through the
// imported layout) and from C. What the code assumes of them beyond C's
// own rules is checked here, at build time:
// - a field read or written atomically (Swift's `atomic` views over arena
//   words, IPC/SharedWord.swift), or used as a futex word, is a naturally
//   aligned word of that width (4 or 8 bytes; a futex word exactly 4), never
//   split across cache lines or torn;
// - a struct stored in an arena block needs no more than the 16-byte
//   alignment a block's payload has (a jr_block header of 16 bytes before
//   blocks aligned to at least 32), and one kept in an array is a whole
//   number of 8-byte words, so every element keeps its fields aligned;
// - every shared object starts with its jr_object_header (the decoder and
//   ObjectHandle read the type there);
// - the fixed text fields have the sizes the Swift side cuts names to.

#define JR_FIELD_SIZE(T, f) sizeof(((T *)0)->f)
#define JR_ASSERT_WORD(T, f) \
    _Static_assert((JR_FIELD_SIZE(T, f) == 4 || JR_FIELD_SIZE(T, f) == 8) && offsetof(T, f) % JR_FIELD_SIZE(T, f) == 0, \
                   #T "." #f " is accessed atomically: a naturally aligned 4- or 8-byte word")
#define JR_ASSERT_FUTEX(T, f) \
    _Static_assert(JR_FIELD_SIZE(T, f) == 4 && offsetof(T, f) % 4 == 0, #T "." #f " is a futex word: 4 aligned bytes")
#define JR_ASSERT_IN_BLOCK(T) \
    _Static_assert(_Alignof(T) <= 16 && sizeof(T) % 8 == 0, #T " lives in arena blocks (16-byte aligned) and arrays")
#define JR_ASSERT_OBJECT(T) \
    _Static_assert(offsetof(T, hdr) == 0 && sizeof(((T *)0)->hdr) == 16, #T " starts with its jr_object_header")

_Static_assert(sizeof(jr_object_header) == 16, "object header must stay 16 bytes");
_Static_assert(_Alignof(pthread_mutex_t) <= 8, "a robust mutex in a shared struct keeps 8-byte alignment");

JR_ASSERT_IN_BLOCK(jr_process_record);
JR_ASSERT_WORD(jr_process_record, pid);
JR_ASSERT_WORD(jr_process_record, state);
JR_ASSERT_WORD(jr_process_record, has_exit_code);
JR_ASSERT_WORD(jr_process_record, wait_kind);
JR_ASSERT_WORD(jr_process_record, wait_token);
JR_ASSERT_WORD(jr_process_record, verdict);
JR_ASSERT_WORD(jr_process_record, reported);
JR_ASSERT_WORD(jr_process_record, signalled);
JR_ASSERT_WORD(jr_process_record, done_stage);
JR_ASSERT_WORD(jr_process_record, get_stage);
JR_ASSERT_WORD(jr_process_record, grow_stage);
JR_ASSERT_WORD(jr_process_record, grow_new);
JR_ASSERT_WORD(jr_process_record, grow_tail);
JR_ASSERT_WORD(jr_process_record, put_stage);
JR_ASSERT_WORD(jr_process_record, put_block);
JR_ASSERT_WORD(jr_process_record, get_block);
JR_ASSERT_WORD(jr_process_record, pipe_ends);
JR_ASSERT_WORD(jr_process_record, items_put);
JR_ASSERT_WORD(jr_process_record, items_got);
_Static_assert(JR_FIELD_SIZE(jr_process_record, name) == 64, "process names are cut to 63 bytes");

JR_ASSERT_IN_BLOCK(jr_taker);
JR_ASSERT_WORD(jr_taker, count);
_Static_assert(sizeof(jr_held) == 24, "a kept copy's encoded bytes follow its 24-byte jr_held");
JR_ASSERT_IN_BLOCK(jr_progress_counter);
JR_ASSERT_WORD(jr_progress_counter, first_ns);
JR_ASSERT_WORD(jr_progress_counter, done);
JR_ASSERT_WORD(jr_progress_counter, total);

_Static_assert(offsetof(jr_arena_header, magic) == 0, "the magic is the arena's first word (a worker checks it first)");
_Static_assert(sizeof(jr_arena_header) <= (64u << 20), "the arena header fits the smallest arena (256 MiB) with room to spare");
_Static_assert(JR_FIELD_SIZE(jr_arena_header, token) == 16, "the run's token is 16 bytes (32 hex digits)");
_Static_assert(offsetof(jr_arena_header, processes) % 8 == 0, "process records keep their 8-byte words aligned");
JR_ASSERT_WORD(jr_arena_header, in_use);
JR_ASSERT_WORD(jr_arena_header, alloc_op);
JR_ASSERT_FUTEX(jr_arena_header, space_seq);
JR_ASSERT_WORD(jr_arena_header, space_waiters);
JR_ASSERT_WORD(jr_arena_header, next_object_id);
JR_ASSERT_WORD(jr_arena_header, next_process_number);
JR_ASSERT_WORD(jr_arena_header, process_slots);
JR_ASSERT_WORD(jr_arena_header, recycle_next);
JR_ASSERT_WORD(jr_arena_header, failed);
JR_ASSERT_WORD(jr_arena_header, objects_used);
JR_ASSERT_WORD(jr_arena_header, objects_free);
_Static_assert(offsetof(jr_arena_header, object_chunks) % 8 == 0, "the object table's chunk offsets are 8-byte words");
JR_ASSERT_IN_BLOCK(jr_object_entry);
JR_ASSERT_WORD(jr_object_entry, state);
JR_ASSERT_WORD(jr_object_entry, offset);
JR_ASSERT_WORD(jr_object_entry, refs);
_Static_assert(JR_OBJECT_CHUNK_ENTRIES * sizeof(jr_object_entry) + 16 <= (64u << 10), "an object table chunk fits a 64 KiB block");
_Static_assert(offsetof(jr_arena_header, retired) % 8 == 0 && sizeof(jr_retired_queue) % 8 == 0,
               "freed queues' figures keep their 8-byte words aligned");
JR_ASSERT_WORD(jr_process_record, obj_holdings);
_Static_assert(offsetof(jr_process_record, held) % 4 == 0 && JR_FIELD_SIZE(jr_process_record, held) == 4 * JR_HELD_INLINE,
               "a process's inline list of held objects is 4-byte words");
_Static_assert(offsetof(jr_obj_holdings, entries) == sizeof(jr_obj_holdings) && sizeof(jr_obj_holdings) % 8 == 0,
               "a jr_obj_holdings list's entries follow its header");
JR_ASSERT_WORD(jr_arena_header, progress_state);
JR_ASSERT_WORD(jr_arena_header, monitor_pid);
JR_ASSERT_FUTEX(jr_arena_header, host_seq);

JR_ASSERT_OBJECT(jr_pipe);
JR_ASSERT_IN_BLOCK(jr_pipe);
_Static_assert(JR_FIELD_SIZE(jr_pipe, label) == 48, "names are at most 47 bytes (Lua.optName)");
JR_ASSERT_IN_BLOCK(jr_pipe_hold);
JR_ASSERT_WORD(jr_pipe_hold, held);
_Static_assert(offsetof(jr_pipe_ends, entries) == sizeof(jr_pipe_ends) && sizeof(jr_pipe_ends) % 8 == 0,
               "a jr_pipe_ends list's entries follow its header");
JR_ASSERT_WORD(jr_pipe_ends, count);
JR_ASSERT_WORD(jr_pipe_ends, pending);
JR_ASSERT_WORD(jr_pipe_ends, pid);
JR_ASSERT_WORD(jr_pipe_ends, children);
JR_ASSERT_WORD(jr_pipe_ends, sibling);

JR_ASSERT_OBJECT(jr_dict);
JR_ASSERT_IN_BLOCK(jr_dict);
JR_ASSERT_WORD(jr_dict, count);
JR_ASSERT_WORD(jr_dict, pending_entry);
JR_ASSERT_WORD(jr_dict, pending_old);
JR_ASSERT_WORD(jr_dict, pending_table);
JR_ASSERT_WORD(jr_dict, old_table);
JR_ASSERT_WORD(jr_dict, slots_off);
JR_ASSERT_WORD(jr_dict_slot, hash);
JR_ASSERT_WORD(jr_dict_slot, entry);

JR_ASSERT_OBJECT(jr_sync);
JR_ASSERT_IN_BLOCK(jr_sync);
JR_ASSERT_FUTEX(jr_sync, seq);
JR_ASSERT_WORD(jr_sync, waiters);
_Static_assert(JR_FIELD_SIZE(jr_sync, label) == 48, "names are at most 47 bytes (Lua.optName)");

JR_ASSERT_OBJECT(jr_value);
JR_ASSERT_IN_BLOCK(jr_value);
JR_ASSERT_WORD(jr_value, is_float);
JR_ASSERT_WORD(jr_value, integer);
JR_ASSERT_WORD(jr_value, number);

JR_ASSERT_OBJECT(jr_queue);
_Static_assert((sizeof(jr_block) + offsetof(jr_queue, lock)) % 64 == 0,
               "a queue's lock starts a cache line (its block is aligned to its size, past 64)");
_Static_assert(sizeof(jr_block) + sizeof(jr_queue) <= 512, "a queue takes a 512-byte block");
JR_ASSERT_IN_BLOCK(jr_queue);
JR_ASSERT_WORD(jr_queue, count);
JR_ASSERT_WORD(jr_queue, unfinished);
JR_ASSERT_WORD(jr_queue, ring_off);
JR_ASSERT_WORD(jr_queue, head);
JR_ASSERT_WORD(jr_queue, tail);
JR_ASSERT_WORD(jr_queue, closed);
JR_ASSERT_FUTEX(jr_queue, items_seq);
JR_ASSERT_FUTEX(jr_queue, space_seq);
JR_ASSERT_FUTEX(jr_queue, done_seq);
JR_ASSERT_WORD(jr_queue, get_waiters);
JR_ASSERT_WORD(jr_queue, put_waiters);
JR_ASSERT_WORD(jr_queue, join_waiters);
JR_ASSERT_WORD(jr_queue, total_put);
JR_ASSERT_WORD(jr_queue, total_got);
JR_ASSERT_WORD(jr_queue, total_bytes);
JR_ASSERT_WORD(jr_queue, peak_count);
JR_ASSERT_WORD(jr_queue, put_wait_ns);
JR_ASSERT_WORD(jr_queue, get_wait_ns);
JR_ASSERT_WORD(jr_queue, takers_off);
JR_ASSERT_WORD(jr_queue, failed_more_off);
JR_ASSERT_WORD(jr_queue, host_get_waiters);
JR_ASSERT_WORD(jr_queue, host_join_waiters);
_Static_assert(JR_FIELD_SIZE(jr_queue, label) == 48, "names are at most 47 bytes (Lua.optName)");
_Static_assert(sizeof(jr_record) % 8 == 0, "ring records stay 8-byte aligned");

JR_ASSERT_IN_BLOCK(jr_pool_slot);
JR_ASSERT_WORD(jr_pool_slot, pid);
JR_ASSERT_WORD(jr_pool_slot, stage);
JR_ASSERT_WORD(jr_pool_slot, task);
JR_ASSERT_WORD(jr_pool_slot, item_task);
JR_ASSERT_WORD(jr_pool_slot, item);
JR_ASSERT_WORD(jr_pool_slot, started_ns);
JR_ASSERT_OBJECT(jr_pool);
JR_ASSERT_IN_BLOCK(jr_pool);
JR_ASSERT_FUTEX(jr_pool, result_seq);
JR_ASSERT_FUTEX(jr_pool, work_seq);
JR_ASSERT_WORD(jr_pool, result_waiters);
JR_ASSERT_WORD(jr_pool, work_waiters);
JR_ASSERT_WORD(jr_pool, slots_off);

// MARK: a Swift host's runtime (Process/Runtime.swift): its reaper thread
// waits on the children's pidfds with epoll (headers Glibc's module lacks).

/// epoll_create1(EPOLL_CLOEXEC); -1 and errno on failure.
int jr_epoll_create(void);
/// Watches `fd` for readability (a pidfd is readable once its process ended).
int jr_epoll_add(int ep, int fd);
int jr_epoll_del(int ep, int fd);
/// epoll_wait: the descriptors that are ready, in `fds` (at most `max`).
int jr_epoll_wait(int ep, int *fds, int max, int timeout_ms);
/// eventfd(0, EFD_CLOEXEC).
int jr_eventfd(void);
/// pipe2(fds, O_CLOEXEC).
int jr_pipe_cloexec(int fds[2]);

// MARK: - Ctrl-C and SIGTERM in the command line's main process (interrupt.c)

/// The byte the main process's handler writes to the monitor: this bit, the
/// signal number in the low six bits. The byte of a normal end (Monitor.stop) is 1.
#define JR_INTERRUPT_BYTE 0x80
/// Catches SIGINT and SIGTERM in the main process: the handler writes the
/// process's own figures into `record`, writes the interrupt byte to
/// `notify_fd`, waits up to `wait_ms` for `answer_fd` to become readable (the
/// monitor's "done", or its end), then dies of the signal.
void jr_interrupt_install(jr_process_record *record, int notify_fd, int answer_fd, int wait_ms);
/// This process's own peak resident memory in KiB: VmHWM of
/// /proc/self/status, or `fallback` (getrusage's ru_maxrss) when it cannot
/// be read. Not ru_maxrss itself: for a process started by exec the kernel
/// keeps there the peak of the program it replaced (a Python parent's 100
/// MiB, in a fork that then ran jobrun). Async-signal-safe.
uint64_t jr_own_peak_rss_kib(uint64_t fallback);
/// Ctrl-C in the main process: writes out the complete lines still in
/// stdout's buffer (a fully buffered stdout: `jobrun map`), up to its last
/// newline, with write(2). Async-signal-safe (reads glibc's buffer pointers).
void jr_salvage_stdout(void);
/// `jobrun map`'s input: 1 when reading the Lua file (io.open, io.stdin) at
/// `idx` would not sleep (bytes in its FILE buffer, or its descriptor
/// readable or at its end), 0 when it would, -1 when it is not an open Lua
/// file. Never raises.
int jr_lua_file_ready(lua_State *L, int idx);
/// A new monitor: its pipes.
void jr_interrupt_update(int notify_fd, int answer_fd);
/// The end of the run has begun (Host.endOfRun): SIGINT and SIGTERM are
/// held (blocked) from now on, so its report is not cut short.
void jr_interrupt_hold(void);
/// A forked child: SIGINT and SIGTERM back to their defaults (a worker's
/// terminate() must end it), the main process's pipes forgotten.
void jr_interrupt_forget(void);
/// The monitor: SIGWINCH sets a flag (and interrupts its poll); taken once.
void jr_winch_install(void);
int jr_winch_take(void);
/// The columns of the terminal on `fd`; 0 when it is not one or says 0.
int jr_terminal_columns(int fd);
/// Writes `title` over this process's argv area (what `ps` shows as its
/// command line), cut to the room there is; -1 when argv is unknown.
int jr_set_process_title(const char *title);

#endif
