#define _GNU_SOURCE
#include "jobrun_shims.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

void *jr_process_hot_part = 0;
void *jr_foreign_context = 0;

// The only place jobrun raises a Lua error: Swift functions return -1 with the
// error value on the stack, and we raise it here, after Swift has returned, so
// the longjmp never crosses a Swift frame.
int jr_swift_depth;

static int jr_trampoline(lua_State *L) {
    jr_swift_fn fn = (jr_swift_fn)lua_touserdata(L, lua_upvalueindex(1));
    jr_swift_depth++;
    int n = fn(L);
    jr_swift_depth--;
    if (n < 0) {
        return lua_error(L);
    }
    return n;
}

void jr_push_swift_function(lua_State *L, jr_swift_fn fn) {
    lua_pushlightuserdata(L, (void *)fn);
    lua_pushcclosure(L, jr_trampoline, 1);
}

// MARK: Lua's allocator

static size_t jr_lua_allocated;
static size_t jr_lua_limit;     // 0: none

/// Out of line: the allocator below is on every Lua allocation, and its
/// common path must stay as short as Lua's own (no frame for this buffer).
__attribute__((noinline, cold))
static void jr_out_of_memory_in_swift(size_t bytes) {
    char msg[128];
    int n = snprintf(msg, sizeof msg, "jobrun: out of memory (Lua asked for %zu bytes while jobrun was working on its behalf)\n", bytes);
    if (n > 0) { ssize_t w = write(2, msg, (size_t)n); (void)w; }
    _exit(1);
}

/// Lua's allocator when no limit is set: Lua's own (realloc/free) but for
/// the failure while Swift runs.
static void *jr_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud; (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (__builtin_expect(p == NULL, 0) && jr_swift_depth != 0) jr_out_of_memory_in_swift(nsize);
    return p;
}

/// With JOBRUN_TEST_LUA_LIMIT: counts Lua's bytes and fails a growth past
/// the limit, except while Swift runs.
static void *jr_lua_alloc_limited(void *ud, void *ptr, size_t osize, size_t nsize) {
    size_t old = ptr ? osize : 0;   // without ptr, osize is the kind of object
    if (nsize == 0) {
        free(ptr);
        jr_lua_allocated -= old;
        return NULL;
    }
    if (jr_swift_depth == 0 && nsize > old && jr_lua_allocated - old + nsize > jr_lua_limit) {
        return NULL;                // Lua collects and tries again, or raises
    }
    void *p = jr_lua_alloc(ud, ptr, osize, nsize);
    if (p) jr_lua_allocated = jr_lua_allocated - old + nsize;
    return p;
}

lua_State *jr_lua_newstate(void) {
    const char *limit = getenv("JOBRUN_TEST_LUA_LIMIT");
    if (limit && *limit) jr_lua_limit = (size_t)strtoull(limit, NULL, 10);
    lua_State *L = luaL_newstate();     // its panic and warning functions, then our allocator
    if (!L) return NULL;
    // Blocks allocated so far were realloc'ed, as ours are: counted from here.
    jr_lua_allocated += (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, jr_lua_limit ? jr_lua_alloc_limited : jr_lua_alloc, NULL);
    return L;
}

// MARK: Lua's allocator with a budget per state (plug-in workers)

typedef struct { size_t allocated, limit; } jr_lua_budget;

static void *jr_lua_alloc_budgeted(void *ud, void *ptr, size_t osize, size_t nsize) {
    jr_lua_budget *b = ud;
    size_t old = ptr ? osize : 0;   // without ptr, osize is the kind of object
    if (nsize == 0) {
        free(ptr);
        b->allocated -= old;
        return NULL;
    }
    if (b->limit && jr_swift_depth == 0 && nsize > old && b->allocated - old + nsize > b->limit) {
        return NULL;                // Lua collects and tries again, or raises
    }
    void *p = realloc(ptr, nsize);
    if (__builtin_expect(p == NULL, 0) && jr_swift_depth != 0) jr_out_of_memory_in_swift(nsize);
    if (p) b->allocated = b->allocated - old + nsize;
    return p;
}

lua_State *jr_lua_newstate_budgeted(size_t limit) {
    jr_lua_budget *b = malloc(sizeof *b);
    if (!b) return NULL;
    lua_State *L = luaL_newstate();
    if (!L) { free(b); return NULL; }
    // Blocks allocated so far were realloc'ed, as ours are: counted from here.
    b->allocated = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    b->limit = limit;
    lua_setallocf(L, jr_lua_alloc_budgeted, b);
    return L;
}

static jr_lua_budget *jr_lua_budget_of(lua_State *L) {
    void *ud = NULL;
    return lua_getallocf(L, &ud) == jr_lua_alloc_budgeted ? ud : NULL;
}

int jr_lua_set_limit(lua_State *L, size_t limit) {
    jr_lua_budget *b = jr_lua_budget_of(L);
    if (!b) return 0;
    b->limit = limit;
    return 1;
}

size_t jr_lua_allocated_bytes(lua_State *L) {
    jr_lua_budget *b = jr_lua_budget_of(L);
    return b ? b->allocated : 0;
}

void jr_lua_close_budgeted(lua_State *L) {
    jr_lua_budget *b = jr_lua_budget_of(L);
    lua_close(L);
    free(b);
}

typedef struct { char *data; size_t len, cap; } jr_dump_buffer;

static int jr_dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
    (void)L;
    jr_dump_buffer *b = ud;
    if (b->len + sz > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + sz) cap *= 2;
        char *n = realloc(b->data, cap);
        if (!n) return 1;
        b->data = n;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, sz);
    b->len += sz;
    return 0;
}

char *jr_lua_dump(lua_State *L, int strip, size_t *len) {
    jr_dump_buffer b = {0};
    if (lua_dump(L, jr_dump_writer, &b, strip) != 0) {
        free(b.data);
        *len = 0;
        return NULL;
    }
    *len = b.len;
    return b.data;
}

// As lua.c's msghandler: non-string errors use __tostring when they have one.
int jr_traceback_handler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
            msg = lua_tostring(L, -1);
        } else {
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int jr_openlibs_protected(lua_State *L) {
    luaL_openlibs(L);
    return 0;
}

int jr_openlibs(lua_State *L) {
    lua_pushcfunction(L, jr_openlibs_protected);
    return lua_pcall(L, 0, 0, 0);
}

int jr_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        tsp = &ts;
    }
    // Shared (not FUTEX_PRIVATE) because the word lives in memory mapped by
    // several processes.
    long r = syscall(SYS_futex, addr, FUTEX_WAIT, expected, tsp, NULL, 0);
    return r == 0 ? 0 : -errno;
}

int jr_futex_wake(uint32_t *addr, int count) {
    long r = syscall(SYS_futex, addr, FUTEX_WAKE, count, NULL, NULL, 0);
    return r >= 0 ? (int)r : -errno;
}

int jr_memfd_create(const char *name) {
    return (int)syscall(SYS_memfd_create, name, 0);
}

int jr_pidfd_send_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int jr_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int jr_set_pdeathsig(int sig) {
    return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0);
}

int jr_set_child_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

int jr_set_cloexec(int fd, int on) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -1;
    flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, flags);
}

int jr_dup_cloexec(int fd, int minfd) {
    return fcntl(fd, F_DUPFD_CLOEXEC, minfd);
}

void jr_stdout_linebuffered(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
}

void jr_flush_and_exit(int code) {
    fflush(NULL);
    _exit(code);
}

int jr_punch_hole(int fd, uint64_t offset, uint64_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

int jr_fallocate(int fd, uint64_t offset, uint64_t length) {
    return fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

int jr_errno(void) { return errno; }

void jr_reset_signals(void) {
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) signal(sigs[i], SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

void jr_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

int jr_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

const char *jr_signal_abbrev(int sig) {
    return sigabbrev_np(sig);
}

int jr_mutex_init(pthread_mutex_t *m) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return -r;
}

int jr_mutex_lock(pthread_mutex_t *m) {
    // Critical sections here are a few hundred instructions: spinning on
    // trylock for about as long beats a futex sleep and wake (robust mutexes
    // do not spin on their own).
    // Test before test-and-set: read the lock word (glibc's __data.__lock)
    // and try only when it looks free, so spinners do not bounce the cache
    // line with writes.
    int r;
    for (int i = 0; i < 200; i++) {
        if (__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED) == 0) {
            r = pthread_mutex_trylock(m);
            if (r == 0) return 0;
            if (r == EOWNERDEAD) return JR_OWNER_DIED;
        }
        // Past a short spin the holder is likely not running (more busy
        // processes than cores): give it the CPU before sleeping.
        if (i >= 100 && (i & 15) == 0) sched_yield(); else jr_cpu_relax();
    }
    r = pthread_mutex_lock(m);
    if (r == EOWNERDEAD) return JR_OWNER_DIED;
    return -r;
}

void jr_mutex_unlock(pthread_mutex_t *m) {
    pthread_mutex_unlock(m);
}

void jr_mutex_consistent(pthread_mutex_t *m) {
    pthread_mutex_consistent(m);
}

long jr_getrandom(void *buf, unsigned long length) {
    return (long)syscall(SYS_getrandom, buf, length, 0);
}

int jr_spawn_addclosefrom(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}

// MARK: - SIGCHLD for Pool's caller

static volatile uint32_t jr_chld_count;
static uint32_t *volatile jr_chld_word;

static void jr_on_sigchld(int sig) {
    (void)sig;
    int saved = errno;
    __atomic_add_fetch(&jr_chld_count, 1, __ATOMIC_SEQ_CST);
    uint32_t *w = __atomic_load_n(&jr_chld_word, __ATOMIC_SEQ_CST);
    if (w) {
        __atomic_add_fetch(w, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, w, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
    }
    errno = saved;
}

void jr_sigchld_install(void) {
    static int installed;
    if (installed) return;
    installed = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = jr_on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
}

uint32_t jr_sigchld_count(void) { return __atomic_load_n(&jr_chld_count, __ATOMIC_SEQ_CST); }

void jr_sigchld_word(uint32_t *word) { __atomic_store_n(&jr_chld_word, word, __ATOMIC_SEQ_CST); }

int jr_mutex_trylock(pthread_mutex_t *m) {
    int r = pthread_mutex_trylock(m);
    if (r == 0) return 0;
    if (r == EOWNERDEAD) return JR_OWNER_DIED;
    return -r;
}

void jr_lua_user_where(lua_State *L, int level, char *out, size_t size) {
    lua_Debug ar;
    if (size) out[0] = 0;
    for (int l = level; lua_getstack(L, l, &ar); l++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0) continue;
        if (strncmp(ar.source, "@jobrun/prelude/", 16) == 0) continue;
        snprintf(out, size, "%s:%d", ar.short_src, ar.currentline);
        return;
    }
}

int jr_set_process_name(const char *name) {
    return prctl(PR_SET_NAME, name, 0, 0, 0);
}

long jr_raise_nofile_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = rl;
        up.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1L << 30 ? 1L << 30 : (long)rl.rlim_cur;
}

// MARK: a Swift host's runtime

#include <sys/epoll.h>
#include <sys/eventfd.h>

int jr_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int jr_epoll_add(int ep, int fd) {
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int jr_epoll_del(int ep, int fd) { return epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); }

int jr_epoll_wait(int ep, int *fds, int max, int timeout_ms) {
    struct epoll_event ev[64];
    if (max > 64) max = 64;
    int n = epoll_wait(ep, ev, max, timeout_ms);
    for (int i = 0; i < n; i++) fds[i] = ev[i].data.fd;
    return n;
}

int jr_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }

int jr_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

#include <sys/signalfd.h>

int jr_term_signalfd(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0) sigprocmask(SIG_UNBLOCK, &set, NULL);
    return fd;
}

int jr_term_signalfd_drain(int fd) {
    struct signalfd_siginfo info;
    int n = 0;
    while (read(fd, &info, sizeof info) == (ssize_t)sizeof info) n++;
    return n;
}
