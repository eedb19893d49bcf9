/* launch.h (kvzap CUDA emulator): the C++ form of a kernel launch.
 * rewrite_cu.pl turns `kernel<<<grid, block, smem, stream>>>(args)` into
 * `kvz_emu_launch(kernel, "kernel", grid, block, smem, stream)(args)`:
 * make_launch captures the configuration, operator() converts the arguments
 * to the kernel's parameter types (as a real launch does), lets the runtime
 * validate the configuration and the pointer arguments, then runs every
 * block on the fiber scheduler (src/emu_sched.cpp). */
#ifndef KVZ_EMU_LAUNCH_H
#define KVZ_EMU_LAUNCH_H

#include <stddef.h>

#include <tuple>
#include <type_traits>
#include <utility>

namespace kvz_emu {

struct launch_config {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    const char *name;
    const void *func;
};

/* cudaSuccess when the launch may run; otherwise records the launch error
 * (cudaGetLastError reports it) and returns it. */
cudaError_t launch_validate(const launch_config &cfg);
/* Records a fault when argument `index` is a pointer outside every device
 * (or mapped host) allocation; false then. */
bool launch_check_pointer(const launch_config &cfg, unsigned index, const void *p);
/* Runs body(closure) once per CUDA thread of every block. */
void launch_run(const launch_config &cfg, void (*body)(void *), void *closure);

template <class T>
inline bool check_arg(const launch_config &cfg, unsigned index, const T &v)
{
    if constexpr (std::is_pointer<T>::value)
        return launch_check_pointer(cfg, index, (const void *)v);
    else
        return true;
}

template <class... P> struct launcher {
    void (*kernel)(P...);
    launch_config cfg;

    struct closure {
        void (*kernel)(P...);
        std::tuple<P...> *args;
    };
    static void body(void *c)
    {
        closure *cl = (closure *)c;
        std::apply(cl->kernel, *cl->args);
    }
    template <size_t... I>
    bool check_args(const std::tuple<P...> &args, std::index_sequence<I...>) const
    {
        bool ok = true;
        ((ok = ok && check_arg(cfg, (unsigned)I, std::get<I>(args))), ...);
        return ok;
    }
    /* Parameters by value: the call converts the arguments (NULL included)
     * exactly as a launch does. */
    void operator()(P... a) const
    {
        std::tuple<P...> args(a...);
        if (launch_validate(cfg) != cudaSuccess)
            return;
        if (!check_args(args, std::index_sequence_for<P...>{}))
            return;
        closure cl{kernel, &args};
        launch_run(cfg, &body, &cl);
    }
};

template <class... P>
inline launcher<P...> make_launch(void (*kernel)(P...), const char *name, dim3 grid, dim3 block,
                                  size_t smem = 0, cudaStream_t stream = 0)
{
    return launcher<P...>{kernel, launch_config{grid, block, smem, stream, name,
                                                (const void *)kernel}};
}

} // namespace kvz_emu

#define kvz_emu_launch ::kvz_emu::make_launch

#endif
