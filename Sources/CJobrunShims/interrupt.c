#define _GNU_SOURCE
#include "jobrun_shims.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

// The command line's main process and Ctrl-C / SIGTERM (Host.runMain,
// Monitor.interrupted). The main process may be anywhere when the signal
// comes: in the user's Lua code, asleep in a futex, holding a queue's lock.
// So the handler does only what is async-signal-safe: it writes the main
// process's own figures (CPU time, peak memory, end, "signal N") into its
// ledger record, asks the monitor (a process of its own, which reads
// everything else from the arena) to stop the workers and write --stats and
// --stats-json, waits for it (bounded), and then dies of the same signal, so
// the shell sees 130 or 143 as for any program Ctrl-C stops.

static jr_process_record *volatile jr_int_record;
static volatile int jr_int_notify_fd = -1;   // write end: main -> monitor
static volatile int jr_int_answer_fd = -1;   // read end: monitor -> main
static volatile sig_atomic_t jr_int_taken;
static volatile int jr_int_wait_ms = 10000;
static volatile pid_t jr_int_main_pid;

static void jr_die_of(int sig) {
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    raise(sig);                                  // pending: blocked in its handler
    sigprocmask(SIG_UNBLOCK, &set, NULL);        // delivered here
    _exit(128 + sig);                            // not reached
}

uint64_t jr_own_peak_rss_kib(uint64_t fallback) {
    int fd;
    do { fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC); } while (fd < 0 && errno == EINTR);
    if (fd < 0) return fallback;
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        have += (size_t)n;
        if (have == sizeof buf - 1) break;
    }
    close(fd);
    buf[have] = 0;
    static const char key[] = "\nVmHWM:";
    for (size_t i = 0; i + sizeof key - 1 <= have; i++) {
        if (memcmp(buf + i, key, sizeof key - 1) != 0) continue;
        const char *p = buf + i + sizeof key - 1;
        while (*p == ' ' || *p == '\t') p++;
        if (*p < '0' || *p > '9') return fallback;
        uint64_t kib = 0;
        while (*p >= '0' && *p <= '9') kib = kib * 10 + (uint64_t)(*p++ - '0');
        return kib;
    }
    return fallback;
}

void jr_salvage_stdout(void) {
    // glibc's FILE: [_IO_write_base, _IO_write_ptr) is written but not yet
    // flushed. A line fwrite was copying when the signal came is cut at the
    // last newline, so only whole lines go out.
    FILE *f = stdout;
    char *base = f->_IO_write_base, *end = f->_IO_write_ptr;
    if (base == NULL || end == NULL || end <= base) return;
    while (end > base && end[-1] != '\n') end--;
    while (base < end) {
        ssize_t w = write(STDOUT_FILENO, base, (size_t)(end - base));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        base += w;
    }
    f->_IO_write_ptr = f->_IO_write_base;       // (the process dies next; nothing twice)
}

int jr_lua_file_ready(lua_State *L, int idx) {
    // (the main process's input, beside its output: see jr_salvage_stdout)
    luaL_Stream *p = (luaL_Stream *)luaL_testudata(L, idx, LUA_FILEHANDLE);
    if (p == NULL || p->closef == NULL || p->f == NULL) return -1;
    FILE *f = p->f;
    if (f->_IO_read_ptr < f->_IO_read_end) return 1;   // glibc: bytes read ahead
    struct pollfd pfd = {.fd = fileno(f), .events = POLLIN};
    int n;
    do { n = poll(&pfd, 1, 0); } while (n < 0 && errno == EINTR);
    return n != 0 ? 1 : 0;                     // (an error: the read will say what it is)
}

static void jr_on_interrupt(int sig, siginfo_t *info, void *context) {
    (void)info; (void)context;
    // A child forked a moment ago, signalled before it reset its handlers
    // (jr_interrupt_forget): it is a worker, and dies as one.
    if (getpid() != jr_int_main_pid) jr_die_of(sig);
    if (jr_int_taken) jr_die_of(sig);           // a second signal: at once
    jr_int_taken = 1;
    int saved = errno;
    jr_process_record *r = jr_int_record;
    if (r != NULL) {
        struct rusage u;
        if (getrusage(RUSAGE_SELF, &u) == 0) {
            r->user_us = (uint64_t)u.ru_utime.tv_sec * 1000000u + (uint64_t)u.ru_utime.tv_usec;
            r->system_us = (uint64_t)u.ru_stime.tv_sec * 1000000u + (uint64_t)u.ru_stime.tv_usec;
            r->max_rss_kib = jr_own_peak_rss_kib(u.ru_maxrss > 0 ? (uint64_t)u.ru_maxrss : 0);
            r->has_usage = 1;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r->end_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        r->exit_code = -sig;
        __atomic_store_n(&r->has_exit_code, 1, __ATOMIC_RELEASE);
    }
    jr_salvage_stdout();                         // before the monitor's --stats on stderr
    int notify = jr_int_notify_fd, answer = jr_int_answer_fd;
    if (notify >= 0 && answer >= 0) {
        unsigned char byte = (unsigned char)(JR_INTERRUPT_BYTE | (sig & 0x3f));
        // A monitor that died leaves a pipe with no reader: the write fails
        // with EPIPE, and the SIGPIPE stays blocked (this process dies of `sig`).
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        sigprocmask(SIG_BLOCK, &pipe_set, NULL);
        ssize_t w;
        do { w = write(notify, &byte, 1); } while (w < 0 && errno == EINTR);
        if (w == 1) {
            // Until the monitor answers or closes its end (it died), bounded.
            struct timespec start, now;
            clock_gettime(CLOCK_MONOTONIC, &start);
            for (;;) {
                clock_gettime(CLOCK_MONOTONIC, &now);
                long left = jr_int_wait_ms - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
                if (left <= 0) break;
                struct pollfd p = {.fd = answer, .events = POLLIN};
                int n = poll(&p, 1, (int)left);
                if (n > 0 || (n < 0 && errno != EINTR)) break;
            }
        }
    }
    errno = saved;
    jr_die_of(sig);
}

void jr_interrupt_install(jr_process_record *record, int notify_fd, int answer_fd, int wait_ms) {
    jr_int_main_pid = getpid();
    jr_int_record = record;
    jr_int_notify_fd = notify_fd;
    jr_int_answer_fd = answer_fd;
    jr_int_wait_ms = wait_ms;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = jr_on_interrupt;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);              // one handler at a time
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void jr_interrupt_update(int notify_fd, int answer_fd) {
    jr_int_notify_fd = notify_fd;
    jr_int_answer_fd = answer_fd;
}

void jr_interrupt_hold(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
}

void jr_interrupt_forget(void) {
    if (jr_int_record == NULL && jr_int_notify_fd < 0) return;
    jr_int_record = NULL;
    jr_int_notify_fd = -1;
    jr_int_answer_fd = -1;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
}

// MARK: - SIGWINCH for the monitor's status line

static volatile sig_atomic_t jr_winch_seen;

static void jr_on_winch(int sig) {
    (void)sig;
    jr_winch_seen = 1;
}

void jr_winch_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = jr_on_winch;
    sa.sa_flags = 0;                             // interrupts the monitor's poll: it redraws at once
    sigemptyset(&sa.sa_mask);
    sigaction(SIGWINCH, &sa, NULL);
}

int jr_winch_take(void) {
    if (!jr_winch_seen) return 0;
    jr_winch_seen = 0;
    return 1;
}

int jr_terminal_columns(int fd) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 0;
}

// MARK: - The process title

// What `ps` shows in its args column is the process's argv area
// (/proc/<pid>/cmdline): a forked worker would show its parent's command
// line. As setproctitle(3) does: the environment strings that follow argv in
// the same block are copied to the heap once, and the whole block is then
// free for the title. comm (PR_SET_NAME, 15 bytes) is left alone, so
// `pgrep jobrun` still finds every process of a run.

static char *jr_title_start;
static size_t jr_title_room;
static int jr_title_ready;

extern char **environ;

static void jr_title_setup(int argc, char **argv) {
    if (argc <= 0 || argv == NULL || argv[0] == NULL) return;
    char *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc; i++) {
        if (argv[i] != end) break;               // not contiguous: stop here
        end = argv[i] + strlen(argv[i]) + 1;
    }
    jr_title_start = argv[0];
    jr_title_room = (size_t)(end - argv[0]);
}

/// Saves where argv lies (glibc passes main's arguments to constructors).
__attribute__((constructor))
static void jr_title_constructor(int argc, char **argv, char **envp) {
    (void)envp;
    jr_title_setup(argc, argv);
}

int jr_set_process_title(const char *title) {
    if (jr_title_start == NULL || jr_title_room < 2) return -1;
    if (!jr_title_ready) {
        jr_title_ready = 1;
        // Take the environment strings that follow argv, if they do.
        char *end = jr_title_start + jr_title_room;
        size_t n = 0;
        while (environ != NULL && environ[n] != NULL) n++;
        if (n > 0 && environ[0] == end) {
            char **copy = malloc((n + 1) * sizeof *copy);
            if (copy != NULL) {
                size_t i;
                for (i = 0; i < n; i++) {
                    if (environ[i] != end) break;
                    copy[i] = strdup(environ[i]);
                    if (copy[i] == NULL) break;
                    end = environ[i] + strlen(environ[i]) + 1;
                }
                if (i == n) {
                    environ = copy;
                    copy[n] = NULL;
                    jr_title_room = (size_t)(end - jr_title_start);
                } else {
                    for (size_t k = 0; k < i; k++) free(copy[k]);
                    free(copy);
                }
            }
        }
    }
    size_t len = strlen(title);
    if (len > jr_title_room - 1) len = jr_title_room - 1;
    memcpy(jr_title_start, title, len);
    memset(jr_title_start + len, 0, jr_title_room - len);
    return 0;
}
