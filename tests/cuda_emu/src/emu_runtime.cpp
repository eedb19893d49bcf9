/* emu_runtime.cpp (kvzap CUDA emulator): the CUDA runtime API subset on the
 * CPU: one device ("kvzap CUDA emulator (CPU)", cc 9.0, 132 SMs, 80 GiB
 * budget, KVZ_CUDA_EMU_DEVICES=0 hides it, KVZ_CUDA_EMU_MEMORY_MB sets the
 * budget), device memory as separate malloc blocks filled with 0xff and
 * fenced by guard bytes (checked after every kernel and cuBLAS call, at
 * cudaFree and at every synchronization), copies that verify both sides of
 * the copy are what `kind` says, host-synchronous streams and events with
 * real timestamps, per-thread last errors and sticky faults whose detail
 * cudaGetErrorString appends. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <map>
#include <set>
#include <string>

#include "emu_internal.h"

namespace kvz_emu {
namespace {

enum { GUARD_FRONT = 256, GUARD_BACK = 256, ALIGN = 256 };
static const unsigned char GUARD_BYTE = 0xcd;

struct allocation {
    size_t size;
    mem_kind kind;
    char *raw; /* malloc'ed block: [guard front][data][guard back] */
};

struct event_rec {
    bool recorded;
    unsigned flags;
    double ms;
};

struct device_state {
    std::map<uintptr_t, allocation> allocs; /* by data address */
    size_t used = 0;
    std::set<cudaStream_t> streams;
    std::map<cudaEvent_t, event_rec> events;
    std::map<const void *, size_t> smem_limits;
    cudaError_t sticky = cudaSuccess;
    std::string sticky_detail;
} D;

thread_local cudaError_t t_last = cudaSuccess;
thread_local cudaError_t t_detail_code = cudaSuccess;
thread_local std::string t_detail;
thread_local std::string t_message;

int device_count()
{
    const char *e = getenv("KVZ_CUDA_EMU_DEVICES");
    return e && e[0] == '0' && e[1] == '\0' ? 0 : 1;
}

size_t memory_budget()
{
    const char *e = getenv("KVZ_CUDA_EMU_MEMORY_MB");
    if (e && *e) {
        char *end = nullptr;
        unsigned long long mb = strtoull(e, &end, 10);
        if (end && *end == '\0' && mb > 0)
            return (size_t)mb << 20;
    }
    return (size_t)80 << 30;
}

double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

std::string vformat(const char *fmt, va_list ap)
{
    char buf[768];
    vsnprintf(buf, sizeof buf, fmt, ap);
    return buf;
}

void guards_accessible(const allocation &a, bool accessible)
{
    char *back = a.raw + GUARD_FRONT + a.size;
    if (accessible) {
        VALGRIND_MAKE_MEM_DEFINED(a.raw, GUARD_FRONT);
        VALGRIND_MAKE_MEM_DEFINED(back, GUARD_BACK);
    } else {
        VALGRIND_MAKE_MEM_NOACCESS(a.raw, GUARD_FRONT);
        VALGRIND_MAKE_MEM_NOACCESS(back, GUARD_BACK);
    }
}

bool guard_intact(const allocation &a)
{
    guards_accessible(a, true);
    bool ok = true;
    for (size_t i = 0; i < GUARD_FRONT && ok; i++)
        ok = (unsigned char)a.raw[i] == GUARD_BYTE;
    const char *back = a.raw + GUARD_FRONT + a.size;
    for (size_t i = 0; i < GUARD_BACK && ok; i++)
        ok = (unsigned char)back[i] == GUARD_BYTE;
    guards_accessible(a, false);
    return ok;
}

const allocation *find(const void *p, uintptr_t *base)
{
    uintptr_t a = (uintptr_t)p;
    auto it = D.allocs.upper_bound(a);
    if (it == D.allocs.begin())
        return nullptr;
    --it;
    if (a > it->first + it->second.size)
        return nullptr;
    *base = it->first;
    return &it->second;
}

cudaError_t register_alloc(void **out, size_t size, mem_kind kind, const char *what)
{
    if (!out)
        return set_error(cudaErrorInvalidValue, "%s: NULL output pointer", what);
    *out = nullptr;
    if (size == 0)
        return cudaSuccess; /* as the real runtime: success, NULL */
    if (kind == MEM_DEVICE && size > memory_budget() - D.used)
        return set_error(cudaErrorMemoryAllocation,
                         "%s: %zu bytes requested, %zu of the emulated device's %zu bytes free",
                         what, size, memory_budget() - D.used, memory_budget());
    size_t total = GUARD_FRONT + size + GUARD_BACK;
    total = (total + ALIGN - 1) / ALIGN * ALIGN;
    char *raw = (char *)aligned_alloc(ALIGN, total);
    if (!raw)
        return set_error(cudaErrorMemoryAllocation, "%s: %zu bytes: host malloc failed", what,
                         size);
    memset(raw, GUARD_BYTE, GUARD_FRONT);
    memset(raw + GUARD_FRONT, 0xff, size); /* unwritten memory reads as NaN */
    memset(raw + GUARD_FRONT + size, GUARD_BYTE, GUARD_BACK);
    allocation a{size, kind, raw};
    guards_accessible(a, false);
    VALGRIND_MAKE_MEM_UNDEFINED(raw + GUARD_FRONT, size);
    D.allocs[(uintptr_t)(raw + GUARD_FRONT)] = a;
    if (kind == MEM_DEVICE)
        D.used += size;
    *out = raw + GUARD_FRONT;
    return cudaSuccess;
}

cudaError_t release_alloc(void *p, mem_kind kind, const char *what)
{
    if (!p)
        return cudaSuccess;
    auto it = D.allocs.find((uintptr_t)p);
    if (it == D.allocs.end() || it->second.kind != kind)
        return set_error(cudaErrorInvalidValue,
                         "%s(%p): not the start of a live %s allocation", what, p,
                         kind == MEM_DEVICE ? "cudaMalloc" : "cudaHostAlloc/cudaMallocHost");
    allocation a = it->second;
    bool intact = guard_intact(a);
    D.allocs.erase(it);
    if (kind == MEM_DEVICE)
        D.used -= a.size;
    guards_accessible(a, true);
    free(a.raw);
    if (!intact)
        return set_fault(cudaErrorIllegalAddress,
                         "%s(%p): the guard bytes around this %zu-byte allocation were "
                         "overwritten (something wrote out of its bounds)",
                         what, p, a.size);
    return cudaSuccess;
}

/* Checks that [p, p + n) is what the copy direction says. */
cudaError_t check_side(const void *p, size_t n, bool device_side, const char *what,
                       const char *side)
{
    mem_kind k = lookup(p, n);
    if (device_side && k == MEM_NONE)
        return set_error(cudaErrorInvalidValue,
                         "%s: %s %p + %zu bytes is not inside one device allocation", what, side,
                         p, n);
    if (!device_side && k == MEM_DEVICE)
        return set_error(cudaErrorInvalidValue,
                         "%s: %s %p is device memory but the copy kind says host", what, side, p);
    return cudaSuccess;
}

cudaError_t copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s,
                 const char *what)
{
    std::lock_guard<std::recursive_mutex> lock(api_lock());
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "%s", what);
    if (!stream_valid(s))
        return set_error(cudaErrorInvalidResourceHandle, "%s: unknown stream %p", what, (void *)s);
    if ((int)kind < 0 || (int)kind > 4)
        return set_error(cudaErrorInvalidMemcpyDirection, "%s: kind %d", what, (int)kind);
    if (n == 0)
        return cudaSuccess;
    if (!dst || !src)
        return set_error(cudaErrorInvalidValue, "%s: NULL pointer", what);
    if (kind == cudaMemcpyDefault) {
        if ((rc = check_side(dst, n, lookup(dst, n) != MEM_NONE, what, "destination")) ||
            (rc = check_side(src, n, lookup(src, n) != MEM_NONE, what, "source")))
            return rc;
    } else {
        bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
        bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
        if ((rc = check_side(dst, n, dst_dev, what, "destination")) ||
            (rc = check_side(src, n, src_dev, what, "source")))
            return rc;
    }
    memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t fill(void *p, int value, size_t n, cudaStream_t s, const char *what)
{
    std::lock_guard<std::recursive_mutex> lock(api_lock());
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "%s", what);
    if (!stream_valid(s))
        return set_error(cudaErrorInvalidResourceHandle, "%s: unknown stream %p", what, (void *)s);
    if (n == 0)
        return cudaSuccess;
    if ((rc = check_side(p, n, true, what, "destination")))
        return rc;
    memset(p, value, n);
    return cudaSuccess;
}

cudaError_t synchronize(const char *what)
{
    std::lock_guard<std::recursive_mutex> lock(api_lock());
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "%s", what);
    check_guards(what);
    rc = api_enter();
    return rc == cudaSuccess ? rc : set_error(rc, "%s", what);
}

const char *base_string(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorInvalidSymbol: return "invalid device symbol";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorAssert: return "device-side assert triggered";
    case cudaErrorIllegalInstruction: return "an illegal instruction was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
    }
}

} // namespace

std::recursive_mutex &api_lock()
{
    static std::recursive_mutex m;
    return m;
}

cudaError_t api_enter()
{
    if (D.sticky != cudaSuccess)
        return D.sticky;
    if (device_count() == 0)
        return cudaErrorNoDevice;
    return cudaSuccess;
}

cudaError_t set_error(cudaError_t e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    std::string detail = vformat(fmt, ap);
    va_end(ap);
    if (e == D.sticky && !D.sticky_detail.empty())
        detail = D.sticky_detail + "; then " + detail;
    t_last = e;
    t_detail_code = e;
    t_detail = detail;
    return e;
}

cudaError_t set_fault(cudaError_t e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    std::string detail = vformat(fmt, ap);
    va_end(ap);
    if (D.sticky == cudaSuccess) {
        D.sticky = e;
        D.sticky_detail = detail;
    }
    t_last = D.sticky;
    t_detail_code = D.sticky;
    t_detail = D.sticky_detail;
    return D.sticky;
}

mem_kind lookup(const void *p, size_t bytes)
{
    uintptr_t base = 0;
    const allocation *a = find(p, &base);
    if (!a)
        return MEM_NONE;
    uintptr_t off = (uintptr_t)p - base;
    if (bytes > a->size - off || (bytes > 0 && off == a->size))
        return MEM_NONE;
    return a->kind;
}

bool is_device_accessible(const void *p)
{
    uintptr_t base = 0;
    return find(p, &base) != nullptr;
}

bool check_guards(const char *culprit)
{
    for (const auto &kv : D.allocs)
        if (!guard_intact(kv.second)) {
            set_fault(cudaErrorIllegalAddress,
                      "%s: wrote out of bounds of the %zu-byte %s allocation at %p (guard bytes "
                      "around it overwritten)",
                      culprit, kv.second.size,
                      kv.second.kind == MEM_DEVICE ? "device" : "pinned host",
                      (void *)kv.first);
            return false;
        }
    return true;
}

size_t func_smem_limit(const void *func)
{
    auto it = D.smem_limits.find(func);
    return it == D.smem_limits.end() ? (size_t)EMU_SMEM_DEFAULT : it->second;
}

bool stream_valid(cudaStream_t s)
{
    return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread ||
           D.streams.count(s) != 0;
}

} // namespace kvz_emu

using namespace kvz_emu;

#define LOCKED std::lock_guard<std::recursive_mutex> lock_(api_lock())

/* ---------- device ---------- */

extern "C" cudaError_t cudaGetDeviceCount(int *count)
{
    LOCKED;
    if (!count)
        return set_error(cudaErrorInvalidValue, "cudaGetDeviceCount: NULL count");
    *count = device_count();
    if (*count == 0)
        return set_error(cudaErrorNoDevice, "KVZ_CUDA_EMU_DEVICES=0 hides the emulated device");
    return cudaSuccess;
}

extern "C" cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc == cudaErrorNoDevice)
        return set_error(rc, "cudaGetDeviceProperties");
    if (!prop)
        return set_error(cudaErrorInvalidValue, "cudaGetDeviceProperties: NULL prop");
    if (device != 0)
        return set_error(cudaErrorInvalidDevice, "cudaGetDeviceProperties: device %d of 1", device);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "kvzap CUDA emulator (CPU)");
    prop->totalGlobalMem = memory_budget();
    prop->sharedMemPerBlock = EMU_SMEM_DEFAULT;
    prop->sharedMemPerBlockOptin = EMU_SMEM_OPTIN;
    prop->sharedMemPerMultiprocessor = 228 * 1024;
    prop->regsPerBlock = 65536;
    prop->regsPerMultiprocessor = 65536;
    prop->warpSize = 32;
    prop->memPitch = (size_t)2147483647;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = 1024, prop->maxThreadsDim[1] = 1024, prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 2147483647, prop->maxGridSize[1] = 65535, prop->maxGridSize[2] = 65535;
    prop->totalConstMem = 65536;
    prop->major = 9, prop->minor = 0;
    prop->textureAlignment = 512;
    prop->multiProcessorCount = EMU_SMS;
    prop->canMapHostMemory = 1;
    prop->concurrentKernels = 1;
    prop->asyncEngineCount = 2;
    prop->unifiedAddressing = 1;
    prop->memoryBusWidth = 5120;
    prop->l2CacheSize = 50 * 1024 * 1024;
    prop->maxThreadsPerMultiProcessor = 2048;
    prop->managedMemory = 1;
    prop->maxBlocksPerMultiProcessor = 32;
    return cudaSuccess;
}

extern "C" cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    cudaDeviceProp p;
    cudaError_t rc = cudaGetDeviceProperties(&p, device);
    if (rc != cudaSuccess)
        return rc;
    if (!value)
        return set_error(cudaErrorInvalidValue, "cudaDeviceGetAttribute: NULL value");
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrTotalConstantMemory: *value = (int)p.totalConstMem; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = (int)p.sharedMemPerMultiprocessor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
    default:
        return set_error(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute %d is not emulated",
                         (int)attr);
    }
    return cudaSuccess;
}

extern "C" cudaError_t cudaSetDevice(int device)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaSetDevice");
    if (device != 0)
        return set_error(cudaErrorInvalidDevice, "cudaSetDevice(%d): the emulator has device 0 only",
                         device);
    return cudaSuccess;
}

extern "C" cudaError_t cudaGetDevice(int *device)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaGetDevice");
    if (!device)
        return set_error(cudaErrorInvalidValue, "cudaGetDevice: NULL device");
    *device = 0;
    return cudaSuccess;
}

extern "C" cudaError_t cudaDeviceSynchronize(void)
{
    return synchronize("cudaDeviceSynchronize");
}

extern "C" cudaError_t cudaDeviceReset(void)
{
    LOCKED;
    for (auto &kv : D.allocs) {
        guards_accessible(kv.second, true);
        free(kv.second.raw);
    }
    D.allocs.clear();
    D.used = 0;
    for (cudaStream_t s : D.streams)
        delete[] (char *)s;
    D.streams.clear();
    for (auto &kv : D.events)
        delete[] (char *)kv.first;
    D.events.clear();
    D.smem_limits.clear();
    D.sticky = cudaSuccess;
    D.sticky_detail.clear();
    t_last = cudaSuccess;
    return cudaSuccess;
}

extern "C" cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaMemGetInfo");
    if (!free_bytes || !total_bytes)
        return set_error(cudaErrorInvalidValue, "cudaMemGetInfo: NULL output");
    *total_bytes = memory_budget();
    *free_bytes = memory_budget() - D.used;
    return cudaSuccess;
}

/* ---------- errors ---------- */

extern "C" cudaError_t cudaGetLastError(void)
{
    LOCKED;
    cudaError_t e = t_last;
    t_last = D.sticky; /* a sticky fault stays */
    return e != cudaSuccess ? e : D.sticky;
}

extern "C" cudaError_t cudaPeekAtLastError(void)
{
    LOCKED;
    return t_last != cudaSuccess ? t_last : D.sticky;
}

extern "C" const char *cudaGetErrorString(cudaError_t error)
{
    LOCKED;
    if (error != cudaSuccess && error == t_detail_code && !t_detail.empty()) {
        t_message = std::string(base_string(error)) + " [CUDA emulator: " + t_detail + "]";
        return t_message.c_str();
    }
    return base_string(error);
}

extern "C" const char *cudaGetErrorName(cudaError_t error)
{
    switch (error) {
#define NAME(e) case e: return #e;
    NAME(cudaSuccess) NAME(cudaErrorInvalidValue) NAME(cudaErrorMemoryAllocation)
    NAME(cudaErrorInitializationError) NAME(cudaErrorInvalidConfiguration)
    NAME(cudaErrorInvalidPitchValue) NAME(cudaErrorInvalidSymbol)
    NAME(cudaErrorInvalidDevicePointer) NAME(cudaErrorInvalidMemcpyDirection)
    NAME(cudaErrorInvalidDeviceFunction) NAME(cudaErrorNoDevice) NAME(cudaErrorInvalidDevice)
    NAME(cudaErrorInvalidResourceHandle) NAME(cudaErrorNotReady) NAME(cudaErrorIllegalAddress)
    NAME(cudaErrorLaunchOutOfResources) NAME(cudaErrorAssert) NAME(cudaErrorIllegalInstruction)
    NAME(cudaErrorLaunchFailure) NAME(cudaErrorUnknown)
#undef NAME
    }
    return "cudaErrorUnknown";
}

/* ---------- memory ---------- */

extern "C" cudaError_t cudaMalloc(void **dev_ptr, size_t size)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaMalloc");
    return register_alloc(dev_ptr, size, MEM_DEVICE, "cudaMalloc");
}

extern "C" cudaError_t cudaFree(void *dev_ptr)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess && rc != cudaErrorIllegalAddress && rc != cudaErrorLaunchFailure &&
        rc != cudaErrorIllegalInstruction)
        return set_error(rc, "cudaFree");
    cudaError_t frc = release_alloc(dev_ptr, MEM_DEVICE, "cudaFree");
    return rc != cudaSuccess ? set_error(rc, "cudaFree") : frc;
}

extern "C" cudaError_t cudaMallocHost(void **ptr, size_t size)
{
    return cudaHostAlloc(ptr, size, cudaHostAllocDefault);
}

extern "C" cudaError_t cudaHostAlloc(void **ptr, size_t size, unsigned int flags)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaHostAlloc");
    if (flags & ~0x7u)
        return set_error(cudaErrorInvalidValue, "cudaHostAlloc: flags 0x%x", flags);
    return register_alloc(ptr, size, MEM_HOST_PINNED, "cudaHostAlloc");
}

extern "C" cudaError_t cudaFreeHost(void *ptr)
{
    LOCKED;
    return release_alloc(ptr, MEM_HOST_PINNED, "cudaFreeHost");
}

extern "C" cudaError_t cudaMemcpy(void *dst, const void *src, size_t count,
                                  enum cudaMemcpyKind kind)
{
    cudaError_t rc = copy(dst, src, count, kind, nullptr, "cudaMemcpy");
    return rc != cudaSuccess ? rc : synchronize("cudaMemcpy");
}

extern "C" cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count,
                                       enum cudaMemcpyKind kind, cudaStream_t stream)
{
    return copy(dst, src, count, kind, stream, "cudaMemcpyAsync");
}

extern "C" cudaError_t cudaMemset(void *dev_ptr, int value, size_t count)
{
    return fill(dev_ptr, value, count, nullptr, "cudaMemset");
}

extern "C" cudaError_t cudaMemsetAsync(void *dev_ptr, int value, size_t count, cudaStream_t stream)
{
    return fill(dev_ptr, value, count, stream, "cudaMemsetAsync");
}

/* ---------- streams and events ---------- */

extern "C" cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaStreamCreate");
    if (!stream || (flags & ~1u))
        return set_error(cudaErrorInvalidValue, "cudaStreamCreate: NULL output or flags 0x%x", flags);
    *stream = (cudaStream_t) new char[16];
    D.streams.insert(*stream);
    return cudaSuccess;
}

extern "C" cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

static cudaError_t stream_op(cudaStream_t stream, const char *what)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "%s", what);
    if (!stream_valid(stream))
        return set_error(cudaErrorInvalidResourceHandle, "%s: unknown stream %p", what,
                         (void *)stream);
    return cudaSuccess;
}

extern "C" cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    LOCKED;
    if (!stream || !D.streams.count(stream))
        return set_error(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: unknown stream %p",
                         (void *)stream);
    D.streams.erase(stream);
    delete[] (char *)stream;
    return cudaSuccess;
}

extern "C" cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    cudaError_t rc = stream_op(stream, "cudaStreamSynchronize");
    return rc != cudaSuccess ? rc : synchronize("cudaStreamSynchronize");
}

extern "C" cudaError_t cudaStreamQuery(cudaStream_t stream)
{
    return stream_op(stream, "cudaStreamQuery");
}

static event_rec *find_event(cudaEvent_t e)
{
    auto it = D.events.find(e);
    return it == D.events.end() ? nullptr : &it->second;
}

extern "C" cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event,
                                           unsigned int flags)
{
    LOCKED;
    cudaError_t rc = stream_op(stream, "cudaStreamWaitEvent");
    if (rc != cudaSuccess)
        return rc;
    if (!find_event(event) || flags != 0)
        return set_error(cudaErrorInvalidResourceHandle,
                         "cudaStreamWaitEvent: unknown event %p or flags %u", (void *)event, flags);
    return cudaSuccess;
}

extern "C" cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaEventCreate");
    if (!event || (flags & ~0xfu))
        return set_error(cudaErrorInvalidValue, "cudaEventCreate: NULL output or flags 0x%x", flags);
    *event = (cudaEvent_t) new char[16];
    D.events[*event] = event_rec{false, flags, 0.0};
    return cudaSuccess;
}

extern "C" cudaError_t cudaEventCreate(cudaEvent_t *event)
{
    return cudaEventCreateWithFlags(event, cudaEventDefault);
}

extern "C" cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    LOCKED;
    if (!find_event(event))
        return set_error(cudaErrorInvalidResourceHandle, "cudaEventDestroy: unknown event %p",
                         (void *)event);
    D.events.erase(event);
    delete[] (char *)event;
    return cudaSuccess;
}

extern "C" cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    LOCKED;
    cudaError_t rc = stream_op(stream, "cudaEventRecord");
    if (rc != cudaSuccess)
        return rc;
    event_rec *e = find_event(event);
    if (!e)
        return set_error(cudaErrorInvalidResourceHandle, "cudaEventRecord: unknown event %p",
                         (void *)event);
    e->recorded = true;
    e->ms = now_ms();
    return cudaSuccess;
}

extern "C" cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    LOCKED;
    if (!find_event(event))
        return set_error(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: unknown event %p",
                         (void *)event);
    return synchronize("cudaEventSynchronize");
}

extern "C" cudaError_t cudaEventQuery(cudaEvent_t event)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaEventQuery");
    if (!find_event(event))
        return set_error(cudaErrorInvalidResourceHandle, "cudaEventQuery: unknown event %p",
                         (void *)event);
    return cudaSuccess;
}

extern "C" cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaEventElapsedTime");
    event_rec *a = find_event(start), *b = find_event(end);
    if (!ms)
        return set_error(cudaErrorInvalidValue, "cudaEventElapsedTime: NULL output");
    if (!a || !b || !a->recorded || !b->recorded ||
        ((a->flags | b->flags) & cudaEventDisableTiming))
        return set_error(cudaErrorInvalidResourceHandle,
                         "cudaEventElapsedTime: an event is unknown, never recorded, or created "
                         "with cudaEventDisableTiming");
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}

/* ---------- functions ---------- */

extern "C" cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value)
{
    LOCKED;
    cudaError_t rc = api_enter();
    if (rc != cudaSuccess)
        return set_error(rc, "cudaFuncSetAttribute");
    if (!func)
        return set_error(cudaErrorInvalidDeviceFunction, "cudaFuncSetAttribute: NULL function");
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > EMU_SMEM_OPTIN)
            return set_error(cudaErrorInvalidValue,
                             "cudaFuncSetAttribute: %d bytes of dynamic shared memory; the device "
                             "allows up to %d",
                             value, (int)EMU_SMEM_OPTIN);
        D.smem_limits[func] = (size_t)value;
        return cudaSuccess;
    }
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
        return value >= -1 && value <= 100
                   ? cudaSuccess
                   : set_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: carveout %d", value);
    return set_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute %d is not emulated",
                     (int)attr);
}
