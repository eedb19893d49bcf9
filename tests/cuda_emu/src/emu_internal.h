/* emu_internal.h (kvzap CUDA emulator): what the emulator's runtime
 * (emu_runtime.cpp), scheduler (emu_sched.cpp) and cuBLAS (emu_cublas.cpp)
 * share: the API lock, error recording (last error, sticky faults with a
 * detail message), the device allocation registry and its guard checks. */
#ifndef KVZ_EMU_INTERNAL_H
#define KVZ_EMU_INTERNAL_H

#include <cuda_runtime.h>

#include <mutex>

/* Under valgrind (when its headers are installed) guard bytes are
 * no-access and fresh device / shared memory is undefined, so
 * `valgrind ./tests/test_gpu_x` reports every out-of-bounds device access
 * and every use of unwritten device memory exactly. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define KVZ_EMU_HAVE_VALGRIND 1
#endif
#endif
#ifndef KVZ_EMU_HAVE_VALGRIND
#define VALGRIND_MAKE_MEM_NOACCESS(addr, len) ((void)(addr), (void)(len))
#define VALGRIND_MAKE_MEM_UNDEFINED(addr, len) ((void)(addr), (void)(len))
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void)(addr), (void)(len))
#endif

namespace kvz_emu {

/* Every API entry point holds this (kernels run under it). */
std::recursive_mutex &api_lock();

/* cudaSuccess, or the sticky fault / cudaErrorNoDevice every call returns. */
cudaError_t api_enter();
/* Records a non-sticky error (cudaGetLastError returns it once) with a
 * detail that cudaGetErrorString appends; returns e. */
cudaError_t set_error(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records a sticky fault (every later call returns it until
 * cudaDeviceReset), like a real kernel fault corrupting the context. */
cudaError_t set_fault(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

enum mem_kind { MEM_NONE = 0, MEM_DEVICE = 1, MEM_HOST_PINNED = 2 };
/* The kind of the allocation holding all of [p, p + bytes) (bytes may be 0:
 * then p may also be one past the end); MEM_NONE if none does. */
mem_kind lookup(const void *p, size_t bytes);
/* True when p lies inside (or one past) some allocation, whatever the size. */
bool is_device_accessible(const void *p);
/* Verifies the guard bytes around every device allocation; on damage
 * records a sticky cudaErrorIllegalAddress naming `culprit` and returns false. */
bool check_guards(const char *culprit);
/* Per-function dynamic shared memory limit (cudaFuncSetAttribute). */
size_t func_smem_limit(const void *func);
bool stream_valid(cudaStream_t s);

enum {
    EMU_SMEM_DEFAULT = 48 * 1024,
    EMU_SMEM_OPTIN = 227 * 1024,
    EMU_SMS = 132
};

} // namespace kvz_emu

#endif
