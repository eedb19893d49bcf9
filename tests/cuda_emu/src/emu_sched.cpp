/* emu_sched.cpp (kvzap CUDA emulator): runs kernel launches. Blocks run one
 * after another on the calling OS thread; the CUDA threads of a block are
 * fibers (emu_fiber.h) that switch only at __syncthreads, __syncwarp and warp
 * collectives, so a launch is deterministic. Each block starts at thread
 * (block % threads) and alternates forward/reverse order, so code that needs a
 * missing barrier sees stale or poisoned shared memory (KVZ_CUDA_EMU_ORDER_SALT=N
 * shifts that order, to try other interleavings). Static __shared__
 * arrays (section kvz_emu_shared) and the dynamic shared buffer are filled
 * with 0xff before every block; a guard after the dynamic buffer catches
 * overruns. Divergent barriers, warp collectives with exited or partial
 * lanes, and lanes that disagree on the collective are faults
 * (cudaErrorLaunchFailure / cudaErrorIllegalInstruction, sticky). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "emu_fiber.h"
#include "emu_internal.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

extern "C" char __start_kvz_emu_shared[] __attribute__((weak));
extern "C" char __stop_kvz_emu_shared[] __attribute__((weak));

namespace kvz_emu {
namespace {

enum fiber_state { F_READY, F_AT_BLOCK, F_AT_WARP, F_DONE, F_FAULTED };
/* DYN_ALIGN: the dynamic shared buffer starts on a 256-byte boundary, as on
 * a GPU (wmma's 32-byte pointer checks in include/mma.h rely on it). */
enum { STACK_BYTES = 256 * 1024, PAGE = 4096, DYN_GUARD = 64, DYN_ALIGN = 256, WARP = 32 };
static const unsigned char DYN_GUARD_BYTE = 0xa5;

struct fiber {
    emu_context ctx;
    fiber_state state;
    uint3 tid;
    unsigned linear, shfl_gen;
    const char *warp_what;
    unsigned warp_mask;
};

struct scheduler {
    std::vector<fiber> fibers;
    emu_context main_ctx;
    fiber *cur = nullptr;
    char *stacks = nullptr;
    size_t stack_slots = 0;
    void (*body)(void *) = nullptr;
    void *closure = nullptr;
    std::vector<uint64_t> slots[2];
    unsigned n = 0;
    std::vector<unsigned char> dyn; /* backing store of the dynamic shared buffer */
    unsigned char *dyn_base = nullptr; /* the buffer: dyn's first DYN_ALIGN-aligned byte */
    size_t dyn_bytes = 0;
    const launch_config *cfg = nullptr;
    bool faulted = false;
    cudaError_t fault_code = cudaSuccess;
    std::string fault_msg;
} S;

void fault_in_block(cudaError_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fault_in_block(cudaError_t code, const char *fmt, ...)
{
    if (S.faulted)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char where[160];
    snprintf(where, sizeof where, "kernel '%s' block (%u,%u,%u): ", S.cfg ? S.cfg->name : "?",
             blockIdx.x, blockIdx.y, blockIdx.z);
    S.faulted = true;
    S.fault_code = code;
    S.fault_msg = std::string(where) + msg;
}

bool ensure_stacks(size_t slots)
{
    if (slots <= S.stack_slots)
        return true;
    if (S.stacks)
        munmap(S.stacks, S.stack_slots * (STACK_BYTES + PAGE));
    S.stack_slots = 0;
    size_t bytes = slots * (STACK_BYTES + PAGE);
    void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        S.stacks = nullptr;
        return false;
    }
    S.stacks = (char *)p;
    for (size_t i = 0; i < slots; i++) /* a no-access page below each stack */
        mprotect(S.stacks + i * (STACK_BYTES + PAGE), PAGE, PROT_NONE);
    S.stack_slots = slots;
    return true;
}

void fiber_entry()
{
    S.body(S.closure);
    fiber *f = S.cur;
    f->state = F_DONE;
    fiber_switch(&f->ctx, &S.main_ctx); /* never resumed */
    abort();
}

void poison_shared()
{
    char *begin = __start_kvz_emu_shared, *end = __stop_kvz_emu_shared;
    if (begin && end && end > begin) {
        memset(begin, 0xff, (size_t)(end - begin));
        VALGRIND_MAKE_MEM_UNDEFINED(begin, (size_t)(end - begin));
    }
    if (!S.dyn.empty()) {
        memset(S.dyn_base, 0xff, S.dyn_bytes);
        VALGRIND_MAKE_MEM_UNDEFINED(S.dyn_base, S.dyn_bytes);
        memset(S.dyn_base + S.dyn_bytes, DYN_GUARD_BYTE, DYN_GUARD);
    }
}

bool dyn_guard_intact()
{
    for (size_t i = 0; i < DYN_GUARD; i++)
        if (S.dyn_base[S.dyn_bytes + i] != DYN_GUARD_BYTE)
            return false;
    return true;
}

void start_fibers(unsigned block_linear)
{
    const dim3 b = S.cfg->block;
    for (unsigned t = 0; t < S.n; t++) {
        fiber &f = S.fibers[t];
        f.state = F_READY;
        f.linear = t;
        f.tid = uint3{t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
        f.shfl_gen = 0;
        f.warp_what = nullptr;
        fiber_prepare(&f.ctx, S.stacks + (size_t)t * (STACK_BYTES + PAGE) + PAGE, STACK_BYTES,
                      fiber_entry);
    }
    (void)block_linear;
}

/* Runs every READY fiber once, in this block's rotating order. */
unsigned order_salt()
{
    static int salt = -1;
    if (salt < 0) {
        const char *e = getenv("KVZ_CUDA_EMU_ORDER_SALT");
        salt = e ? atoi(e) & 0xffff : 0;
    }
    return (unsigned)salt;
}

void run_round(unsigned block_linear)
{
    unsigned salted = block_linear + order_salt();
    unsigned start = salted % S.n;
    bool reverse = (salted & 1u) != 0;
    for (unsigned k = 0; k < S.n && !S.faulted; k++) {
        unsigned t = reverse ? (start + S.n - k) % S.n : (start + k) % S.n;
        fiber &f = S.fibers[t];
        if (f.state != F_READY)
            continue;
        S.cur = &f;
        threadIdx = f.tid;
        fiber_switch(&S.main_ctx, &f.ctx);
    }
    S.cur = nullptr;
}

/* Releases warps whose live lanes all wait at the same warp collective. */
bool release_warps()
{
    bool progressed = false;
    for (unsigned w0 = 0; w0 < S.n && !S.faulted; w0 += WARP) {
        unsigned w1 = w0 + WARP < S.n ? w0 + WARP : S.n, at_warp = 0, done = 0, at_block = 0;
        for (unsigned t = w0; t < w1; t++) {
            fiber_state st = S.fibers[t].state;
            at_warp += st == F_AT_WARP;
            done += st == F_DONE;
            at_block += st == F_AT_BLOCK;
        }
        if (at_warp == 0)
            continue;
        const fiber *first = nullptr;
        for (unsigned t = w0; t < w1; t++)
            if (S.fibers[t].state == F_AT_WARP && !first)
                first = &S.fibers[t];
        if (done || at_block) {
            fault_in_block(cudaErrorIllegalInstruction,
                           "warp %u: %u lane(s) wait at %s while %u lane(s) exited and %u wait at "
                           "__syncthreads (divergent warp collective)",
                           w0 / WARP, at_warp, first->warp_what, done, at_block);
            return false;
        }
        for (unsigned t = w0; t < w1; t++)
            if (S.fibers[t].warp_what != first->warp_what) {
                fault_in_block(cudaErrorIllegalInstruction,
                               "warp %u: lane %u is at %s but lane %u at %s", w0 / WARP,
                               first->linear % WARP, first->warp_what, t - w0,
                               S.fibers[t].warp_what);
                return false;
            }
        for (unsigned t = w0; t < w1; t++)
            S.fibers[t].state = F_READY;
        progressed = true;
    }
    return progressed;
}

/* Releases __syncthreads once every thread is there; false when the block
 * is finished or faulted. */
bool release_block()
{
    unsigned at_block = 0, done = 0;
    for (unsigned t = 0; t < S.n; t++) {
        at_block += S.fibers[t].state == F_AT_BLOCK;
        done += S.fibers[t].state == F_DONE;
    }
    if (done == S.n)
        return false;
    if (at_block + done == S.n && done == 0) {
        for (unsigned t = 0; t < S.n; t++)
            S.fibers[t].state = F_READY;
        return true;
    }
    fault_in_block(cudaErrorLaunchFailure,
                   "__syncthreads reached by %u of %u threads; %u thread(s) already returned "
                   "(barrier in divergent code)",
                   at_block, S.n, done);
    return false;
}

void run_block(unsigned block_linear)
{
    poison_shared();
    start_fibers(block_linear);
    for (;;) {
        run_round(block_linear);
        if (S.faulted)
            break;
        if (release_warps())
            continue;
        if (S.faulted || !release_block())
            break;
    }
    if (!S.faulted && !S.dyn.empty() && !dyn_guard_intact())
        fault_in_block(cudaErrorIllegalAddress,
                       "wrote past the end of its %zu bytes of dynamic shared memory",
                       S.dyn_bytes);
}

fiber *current(const char *what)
{
    if (!S.cur) {
        fprintf(stderr, "kvzap CUDA emulator: %s called outside a kernel\n", what);
        abort();
    }
    return S.cur;
}

/* Parks the current fiber in `state` until the scheduler resumes it. */
void park(fiber *f, fiber_state state)
{
    f->state = state;
    fiber_switch(&f->ctx, &S.main_ctx);
}

void check_warp_call(fiber *f, unsigned mask, const char *what)
{
    unsigned w0 = f->linear - f->linear % WARP;
    if (mask != 0xffffffffu) {
        fault_in_block(cudaErrorIllegalInstruction,
                       "thread %u: %s with mask 0x%08x; the emulated subset needs the full mask",
                       f->linear, what, mask);
        park(f, F_FAULTED);
    }
    if (w0 + WARP > S.n) {
        fault_in_block(cudaErrorIllegalInstruction,
                       "thread %u: %s with a full mask in a partial warp (%u threads per block)",
                       f->linear, what, S.n);
        park(f, F_FAULTED);
    }
}

} // namespace

cudaError_t launch_validate(const launch_config &cfg)
{
    std::lock_guard<std::recursive_mutex> lock(api_lock());
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "kernel '%s' not launched", cfg.name);
    const dim3 g = cfg.grid, b = cfg.block;
    unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
    if (!b.x || !b.y || !b.z || b.x > 1024 || b.y > 1024 || b.z > 64 || threads > 1024)
        return set_error(cudaErrorInvalidConfiguration,
                         "kernel '%s': block (%u,%u,%u): each dimension >= 1, x,y <= 1024, "
                         "z <= 64, at most 1024 threads",
                         cfg.name, b.x, b.y, b.z);
    if (!g.x || !g.y || !g.z || g.x > 2147483647u || g.y > 65535 || g.z > 65535)
        return set_error(cudaErrorInvalidConfiguration,
                         "kernel '%s': grid (%u,%u,%u): x in 1..2^31-1, y and z in 1..65535",
                         cfg.name, g.x, g.y, g.z);
    if (!stream_valid(cfg.stream))
        return set_error(cudaErrorInvalidResourceHandle, "kernel '%s': unknown stream %p",
                         cfg.name, (void *)cfg.stream);
    size_t limit = func_smem_limit(cfg.func);
    if (cfg.smem > limit)
        return set_error(cudaErrorInvalidValue,
                         "kernel '%s': %zu bytes of dynamic shared memory; the limit for this "
                         "kernel is %zu (cudaFuncSetAttribute "
                         "cudaFuncAttributeMaxDynamicSharedMemorySize raises it up to %d)",
                         cfg.name, cfg.smem, limit, (int)EMU_SMEM_OPTIN);
    return cudaSuccess;
}

bool launch_check_pointer(const launch_config &cfg, unsigned index, const void *p)
{
    std::lock_guard<std::recursive_mutex> lock(api_lock());
    if (!p || is_device_accessible(p))
        return true;
    set_fault(cudaErrorIllegalAddress,
              "kernel '%s': pointer argument %u (%p) is not in any device allocation (a host "
              "pointer, or freed memory)",
              cfg.name, index, p);
    return false;
}

void launch_run(const launch_config &cfg, void (*body)(void *), void *closure)
{
    std::lock_guard<std::recursive_mutex> lock(api_lock());
    S.cfg = &cfg;
    S.body = body;
    S.closure = closure;
    S.n = cfg.block.x * cfg.block.y * cfg.block.z;
    S.faulted = false;
    if (!ensure_stacks(S.n)) {
        set_error(cudaErrorLaunchOutOfResources, "kernel '%s': no memory for %u fiber stacks",
                  cfg.name, S.n);
        return;
    }
    if (S.fibers.size() < S.n)
        S.fibers.resize(S.n);
    for (auto &s : S.slots)
        if (s.size() < (size_t)S.n + WARP)
            s.resize((size_t)S.n + WARP);
    S.dyn_bytes = cfg.smem;
    S.dyn.assign(cfg.smem + DYN_GUARD + DYN_ALIGN, 0);
    S.dyn_base = S.dyn.data() + (DYN_ALIGN - (uintptr_t)S.dyn.data() % DYN_ALIGN) % DYN_ALIGN;
    blockDim = cfg.block;
    gridDim = cfg.grid;
    unsigned long long linear = 0;
    for (unsigned z = 0; z < cfg.grid.z && !S.faulted; z++)
        for (unsigned y = 0; y < cfg.grid.y && !S.faulted; y++)
            for (unsigned x = 0; x < cfg.grid.x && !S.faulted; x++, linear++) {
                blockIdx = uint3{x, y, z};
                run_block((unsigned)linear);
            }
    if (S.faulted)
        set_fault(S.fault_code, "%s", S.fault_msg.c_str());
    else {
        char who[160];
        snprintf(who, sizeof who, "kernel '%s'", cfg.name);
        check_guards(who);
    }
    S.cfg = nullptr;
    S.dyn.clear();
    S.dyn_base = nullptr;
}

} // namespace kvz_emu

using namespace kvz_emu;

extern "C" void kvz_emu_syncthreads(void)
{
    park(current("__syncthreads"), F_AT_BLOCK);
}

extern "C" void kvz_emu_syncwarp(unsigned mask)
{
    fiber *f = current("__syncwarp");
    check_warp_call(f, mask, "__syncwarp");
    f->warp_what = "__syncwarp";
    park(f, F_AT_WARP);
}

extern "C" uint64_t kvz_emu_warp_exchange(unsigned mask, uint64_t mine, unsigned src,
                                          const char *what)
{
    fiber *f = current(what);
    check_warp_call(f, mask, what);
    unsigned buf = f->shfl_gen & 1u, w0 = f->linear - f->linear % WARP;
    S.slots[buf][f->linear] = mine;
    f->shfl_gen++;
    f->warp_what = what;
    park(f, F_AT_WARP);
    return S.slots[buf][w0 + (src % WARP)];
}

extern "C" unsigned kvz_emu_warp_ballot(unsigned mask, int predicate, const char *what)
{
    fiber *f = current(what);
    check_warp_call(f, mask, what);
    unsigned buf = f->shfl_gen & 1u, w0 = f->linear - f->linear % WARP;
    S.slots[buf][f->linear] = predicate != 0;
    f->shfl_gen++;
    f->warp_what = what;
    park(f, F_AT_WARP);
    unsigned bits = 0;
    for (unsigned l = 0; l < WARP; l++)
        bits |= (unsigned)(S.slots[buf][w0 + l] & 1u) << l;
    return bits;
}

extern "C" unsigned kvz_emu_lane_id(void)
{
    return current("a warp intrinsic")->linear % WARP;
}

extern "C" void *kvz_emu_dynamic_smem(void)
{
    current("extern __shared__");
    return S.dyn_base;
}

extern "C" void kvz_emu_trap(const char *what)
{
    fiber *f = current(what);
    fault_in_block(cudaErrorLaunchFailure, "thread %u: %s", f->linear, what);
    park(f, F_FAULTED);
    abort(); /* never resumed */
}
