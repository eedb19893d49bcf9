/* kvz_failalloc: an LD_PRELOAD shim that makes exactly one allocation fail,
 * for the out-of-memory injection test (tests/test_oom_injection.sh,
 * docs/fault-injection.md).
 *
 * It interposes malloc, calloc, realloc, posix_memalign, aligned_alloc,
 * memalign, valloc, strdup and strndup (glibc routes its own internal calls
 * through an interposed malloc), forwards every call to the next definition
 * (dlsym(RTLD_NEXT)) and counts the calls made after main() has been entered
 * (__libc_start_main is wrapped, so static initialisers of the libraries
 * never count). Call number $KVZ_FAIL_ALLOC_AT (1-based) returns NULL with
 * errno = ENOMEM; every other call succeeds.
 *
 * Environment (read, then removed from the environment, when main() starts,
 * so child processes such as gnuplot are not affected):
 *   KVZ_FAIL_ALLOC_AT=N      fail the N-th counted call (unset or 0: none)
 *   KVZ_FAIL_ALLOC_SCOPE=S   own (default): count only calls made directly by
 *                            the main executable's code (the return address
 *                            lies in its segments: libkvzap is linked
 *                            statically into it), so the failure lands in
 *                            kvzap's own error paths; strdup/strndup count
 *                            as one allocation of their caller.
 *                            all: count every call from any library
 *                            (libhdf5, libyaml, jansson, libc's stdio, ...).
 *   KVZ_FAIL_ALLOC_EXCLUDE=L  with scope all: comma-separated substrings of
 *                            shared-object paths (e.g. "libhdf5"); a call
 *                            with a frame of such an object on its stack
 *                            (backtrace()) neither counts nor fails, so a
 *                            library that cannot survive a failed
 *                            allocation is left out of the experiment.
 *   KVZ_ALLOC_COUNT_FILE=F   at exit write to F: "count N", "fired 0|1" and,
 *                            when fired, "caller 0x..." (the return address
 *                            as an offset into the object that made the call,
 *                            for addr2line) and "object PATH".
 *   KVZ_FAIL_ALLOC_VERBOSE=1 also print one line to stderr when it fires;
 *                            =2 also a backtrace (backtrace_symbols_fd:
 *                            "kvzap(+0x...)" frames, for addr2line -e kvzap).
 *   KVZ_FAIL_ALLOC_PROGRAM=P only a program whose argv[0] has basename P
 *                            reads (and removes) the variables above; any
 *                            other (timeout, a shell) passes them on untouched.
 *
 * Only async-signal-safe, allocation-free calls are made from inside the
 * allocator functions. A few calls made while dlsym resolves the real
 * functions are served from a static bootstrap arena. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KVZ_EXPORT __attribute__((visibility("default")))

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void (*free_fn)(void *);
typedef int (*posix_memalign_fn)(void **, size_t, size_t);
typedef void *(*aligned_fn)(size_t, size_t);
typedef char *(*strdup_fn)(const char *);
typedef char *(*strndup_fn)(const char *, size_t);
typedef int (*main_fn)(int, char **, char **);
typedef int (*lsm_fn)(main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);

static malloc_fn real_malloc;
static calloc_fn real_calloc;
static realloc_fn real_realloc;
static free_fn real_free;
static posix_memalign_fn real_posix_memalign;
static aligned_fn real_aligned_alloc;
static aligned_fn real_memalign;
static malloc_fn real_valloc;
static strdup_fn real_strdup;
static strndup_fn real_strndup;

/* ---- the bootstrap arena (calls made while dlsym runs) ---- */
static _Alignas(64) unsigned char arena[1 << 16];
static size_t arena_used;
static int resolving;

static int in_arena(const void *p)
{
    return (const unsigned char *)p >= arena && (const unsigned char *)p < arena + sizeof arena;
}

/* 16-byte header holding the size, so realloc can copy out of the arena */
static void *arena_alloc(size_t n, size_t align)
{
    if (align < 16)
        align = 16;
    size_t start = (arena_used + 16 + align - 1) & ~(align - 1);
    if (n > sizeof arena || start + n > sizeof arena)
        return NULL;
    arena_used = start + n;
    memcpy(arena + start - sizeof(size_t), &n, sizeof n);
    return arena + start;
}

static size_t arena_size(const void *p)
{
    size_t n;
    memcpy(&n, (const unsigned char *)p - sizeof n, sizeof n);
    return n;
}

static void resolve(void)
{
    if (real_malloc || resolving)
        return;
    resolving = 1;
    real_calloc = (calloc_fn)dlsym(RTLD_NEXT, "calloc");
    real_realloc = (realloc_fn)dlsym(RTLD_NEXT, "realloc");
    real_free = (free_fn)dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (posix_memalign_fn)dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (aligned_fn)dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (aligned_fn)dlsym(RTLD_NEXT, "memalign");
    real_valloc = (malloc_fn)dlsym(RTLD_NEXT, "valloc");
    real_strdup = (strdup_fn)dlsym(RTLD_NEXT, "strdup");
    real_strndup = (strndup_fn)dlsym(RTLD_NEXT, "strndup");
    malloc_fn m = (malloc_fn)dlsym(RTLD_NEXT, "malloc");
    __atomic_store_n(&real_malloc, m, __ATOMIC_RELEASE);
    resolving = 0;
}

/* ---- the counter ---- */
enum { SCOPE_OWN, SCOPE_ALL };
static int armed;           /* set when main() starts */
static int scope = SCOPE_OWN;
static uint64_t fail_at;    /* 0: never */
static uint64_t counter;
static int fired;
static uintptr_t fired_caller;
static int verbose;
static char count_file[4096];

#define MAX_RANGES 8
static uintptr_t range_lo[MAX_RANGES], range_hi[MAX_RANGES];
static int n_ranges;

#define MAX_EXCL 32
static uintptr_t excl_lo[MAX_EXCL], excl_hi[MAX_EXCL];
static int n_excl;
static __thread int in_backtrace;

static int excluded_stack(void)
{
    if (!n_excl || in_backtrace)
        return 0;
    in_backtrace = 1;
    void *frames[64];
    int nf = backtrace(frames, 64);
    in_backtrace = 0;
    for (int f = 0; f < nf; f++)
        for (int i = 0; i < n_excl; i++)
            if ((uintptr_t)frames[f] >= excl_lo[i] && (uintptr_t)frames[f] < excl_hi[i])
                return 1;
    return 0;
}

static int own_caller(uintptr_t ra)
{
    for (int i = 0; i < n_ranges; i++)
        if (ra >= range_lo[i] && ra < range_hi[i])
            return 1;
    return 0;
}

/* 1 when this call must fail. caller: the return address of the call. */
static int should_fail(void *caller)
{
    if (!__atomic_load_n(&armed, __ATOMIC_ACQUIRE))
        return 0;
    if (scope == SCOPE_OWN && !own_caller((uintptr_t)caller))
        return 0;
    if (in_backtrace)
        return 0;
    if (scope == SCOPE_ALL && excluded_stack())
        return 0;
    uint64_t c = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    if (c != fail_at)
        return 0;
    fired = 1;
    fired_caller = (uintptr_t)caller;
    if (verbose) {
        char line[128];
        int len = snprintf(line, sizeof line, "kvz_failalloc: failing allocation %llu (caller %p)\n",
                           (unsigned long long)c, caller);
        if (len > 0 && write(2, line, (size_t)len) < 0)
            len = 0;
        if (verbose >= 2) {
            void *frames[48];
            int nf = backtrace(frames, 48);
            backtrace_symbols_fd(frames, nf, 2);
        }
    }
    errno = ENOMEM;
    return 1;
}

/* ---- the interposed functions ---- */
KVZ_EXPORT void *malloc(size_t n)
{
    if (!real_malloc) {
        resolve();
        if (!real_malloc)
            return arena_alloc(n, 16);
    }
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    return real_malloc(n);
}

KVZ_EXPORT void *calloc(size_t n, size_t size)
{
    if (!real_malloc) {
        resolve();
        if (!real_malloc) {
            if (size && n > SIZE_MAX / size)
                return NULL;
            void *p = arena_alloc(n * size, 16);
            if (p)
                memset(p, 0, n * size);
            return p;
        }
    }
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    return real_calloc(n, size);
}

KVZ_EXPORT void *realloc(void *p, size_t n)
{
    if (!real_malloc)
        resolve();
    if (p && in_arena(p)) {
        void *q = real_malloc ? real_malloc(n) : arena_alloc(n, 16);
        if (q) {
            size_t old = arena_size(p);
            memcpy(q, p, old < n ? old : n);
        }
        return q;
    }
    if (!real_malloc)
        return arena_alloc(n, 16);
    if ((n > 0 || !p) && should_fail(__builtin_return_address(0)))
        return NULL;
    return real_realloc(p, n);
}

KVZ_EXPORT void free(void *p)
{
    if (!p || in_arena(p))
        return;
    if (!real_free)
        resolve();
    if (real_free)
        real_free(p);
}

KVZ_EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
    if (!real_malloc) {
        resolve();
        if (!real_malloc) {
            *out = arena_alloc(n, align);
            return *out ? 0 : ENOMEM;
        }
    }
    if (should_fail(__builtin_return_address(0)))
        return ENOMEM;
    return real_posix_memalign(out, align, n);
}

KVZ_EXPORT void *aligned_alloc(size_t align, size_t n)
{
    if (!real_malloc) {
        resolve();
        if (!real_malloc)
            return arena_alloc(n, align);
    }
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    return real_aligned_alloc(align, n);
}

KVZ_EXPORT void *memalign(size_t align, size_t n)
{
    if (!real_malloc) {
        resolve();
        if (!real_malloc)
            return arena_alloc(n, align);
    }
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    return real_memalign(align, n);
}

KVZ_EXPORT void *valloc(size_t n)
{
    if (!real_malloc) {
        resolve();
        if (!real_malloc)
            return arena_alloc(n, 4096);
    }
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    return real_valloc(n);
}

/* strdup/strndup: one allocation of their caller in the "own" scope (libc's
 * strdup calls malloc from libc, which that scope does not count); in the
 * "all" scope only that inner malloc counts. */
KVZ_EXPORT char *strdup(const char *s)
{
    if (!real_malloc)
        resolve();
    if (!real_strdup) {
        size_t n = strlen(s) + 1;
        char *p = arena_alloc(n, 16);
        return p ? memcpy(p, s, n) : NULL;
    }
    if (scope == SCOPE_OWN && should_fail(__builtin_return_address(0)))
        return NULL;
    return real_strdup(s);
}

KVZ_EXPORT char *strndup(const char *s, size_t max)
{
    if (!real_malloc)
        resolve();
    if (!real_strndup) {
        size_t n = strnlen(s, max);
        char *p = arena_alloc(n + 1, 16);
        if (p) {
            memcpy(p, s, n);
            p[n] = 0;
        }
        return p;
    }
    if (scope == SCOPE_OWN && should_fail(__builtin_return_address(0)))
        return NULL;
    return real_strndup(s, max);
}

/* ---- start and exit ---- */
static uintptr_t main_base;

static int collect_ranges(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    /* the first object is the main program */
    main_base = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum && n_ranges < MAX_RANGES; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        range_lo[n_ranges] = info->dlpi_addr + ph->p_vaddr;
        range_hi[n_ranges] = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
        n_ranges++;
    }
    return 1; /* stop after the main program */
}

static char exclude[1024];

static int collect_excluded(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    const char *name = info->dlpi_name;
    if (!name || !*name)
        return 0;
    int match = 0;
    for (const char *p = exclude; *p && !match;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len) {
            char pat[256];
            if (len >= sizeof pat)
                len = sizeof pat - 1;
            memcpy(pat, p, len);
            pat[len] = 0;
            match = strstr(name, pat) != NULL;
        }
        p += len + (end ? 1 : 0);
        if (!end)
            break;
    }
    if (!match)
        return 0;
    for (int i = 0; i < info->dlpi_phnum && n_excl < MAX_EXCL; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        excl_lo[n_excl] = info->dlpi_addr + ph->p_vaddr;
        excl_hi[n_excl] = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
        n_excl++;
    }
    return 0;
}

static void write_count_file(void)
{
    if (!count_file[0])
        return;
    int fd = open(count_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char buf[4096 + 256];
    int len = snprintf(buf, sizeof buf, "count %llu\nfired %d\n",
                       (unsigned long long)__atomic_load_n(&counter, __ATOMIC_RELAXED), fired);
    if (fired && len > 0 && (size_t)len < sizeof buf) {
        Dl_info di;
        memset(&di, 0, sizeof di);
        uintptr_t base = 0;
        const char *obj = "?";
        if (own_caller(fired_caller)) {
            base = main_base;
            obj = "main";
        } else if (dladdr((void *)fired_caller, &di) && di.dli_fbase) {
            base = (uintptr_t)di.dli_fbase;
            obj = di.dli_fname ? di.dli_fname : "?";
        }
        /* fired_caller - 1: the call instruction, not the one after it */
        len += snprintf(buf + len, sizeof buf - (size_t)len, "caller 0x%llx\nobject %s\n",
                        (unsigned long long)(fired_caller - 1 - base), obj);
    }
    if (len > 0) {
        size_t n = (size_t)len < sizeof buf ? (size_t)len : sizeof buf - 1;
        if (write(fd, buf, n) < 0)
            n = 0;
    }
    close(fd);
}

__attribute__((destructor)) static void failalloc_fini(void)
{
    __atomic_store_n(&armed, 0, __ATOMIC_RELEASE);
    write_count_file();
}

static main_fn real_main;

static int wrapped_main(int argc, char **argv, char **envp)
{
    const char *prog = getenv("KVZ_FAIL_ALLOC_PROGRAM");
    if (prog && *prog) {
        const char *name = argc > 0 && argv[0] ? strrchr(argv[0], '/') : NULL;
        name = name ? name + 1 : argc > 0 && argv[0] ? argv[0] : "";
        if (strcmp(name, prog))
            return real_main(argc, argv, envp);
    }
    const char *at = getenv("KVZ_FAIL_ALLOC_AT");
    const char *sc = getenv("KVZ_FAIL_ALLOC_SCOPE");
    const char *cf = getenv("KVZ_ALLOC_COUNT_FILE");
    const char *vb = getenv("KVZ_FAIL_ALLOC_VERBOSE");
    const char *ex = getenv("KVZ_FAIL_ALLOC_EXCLUDE");
    fail_at = at ? strtoull(at, NULL, 10) : 0;
    if (sc && !strcmp(sc, "all"))
        scope = SCOPE_ALL;
    else if (sc && *sc && strcmp(sc, "own")) {
        static const char msg[] = "kvz_failalloc: KVZ_FAIL_ALLOC_SCOPE must be own or all\n";
        if (write(2, msg, sizeof msg - 1) < 0)
            return 2;
        return 2;
    }
    if (cf && strlen(cf) < sizeof count_file)
        strcpy(count_file, cf);
    verbose = vb ? atoi(vb) : 0;
    if (scope == SCOPE_ALL && ex && *ex && strlen(ex) < sizeof exclude) {
        strcpy(exclude, ex);
        dl_iterate_phdr(collect_excluded, NULL);
    }
    if (verbose >= 2 || n_excl) { /* loads libgcc_s now, not inside an allocation */
        void *frames[4];
        backtrace(frames, 4);
    }
    /* child processes (gnuplot, a re-exec) inherit none of it */
    unsetenv("KVZ_FAIL_ALLOC_AT");
    unsetenv("KVZ_FAIL_ALLOC_SCOPE");
    unsetenv("KVZ_ALLOC_COUNT_FILE");
    unsetenv("KVZ_FAIL_ALLOC_VERBOSE");
    unsetenv("KVZ_FAIL_ALLOC_PROGRAM");
    unsetenv("KVZ_FAIL_ALLOC_EXCLUDE");
    dl_iterate_phdr(collect_ranges, NULL);
    __atomic_store_n(&armed, 1, __ATOMIC_RELEASE);
    return real_main(argc, argv, envp);
}

KVZ_EXPORT int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void),
                                 void (*fini)(void), void (*rtld_fini)(void), void *stack_end)
{
    lsm_fn next = (lsm_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    real_main = main;
    return next(wrapped_main, argc, argv, init, fini, rtld_fini, stack_end);
}
