/* emu_fiber.h (kvzap CUDA emulator): the context switch under the fiber
 * scheduler. On x86-64 a minimal switch (callee-saved registers, MXCSR and
 * the x87 control word, stack pointer; no signal-mask system call, which
 * made ucontext's swapcontext half of the emulator's run time); elsewhere
 * ucontext. An entry function must never return: it switches away last. */
#ifndef KVZ_EMU_FIBER_H
#define KVZ_EMU_FIBER_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && !defined(KVZ_EMU_UCONTEXT)
struct emu_context {
    void *sp;
};
extern "C" void kvz_emu_ctx_switch(void **save_sp, void *new_sp);
__asm__(".text\n"
        ".globl kvz_emu_ctx_switch\n"
        ".type kvz_emu_ctx_switch, @function\n"
        "kvz_emu_ctx_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  subq $8, %rsp\n"
        "  stmxcsr (%rsp)\n"
        "  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n"
        "  fldcw 4(%rsp)\n"
        "  addq $8, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size kvz_emu_ctx_switch, .-kvz_emu_ctx_switch\n");

/* A fresh context that starts entry() on [stack, stack + size). */
static inline void fiber_prepare(emu_context *c, char *stack, size_t size, void (*entry)())
{
    uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)top;
    *--sp = 0;                   /* entry's (never used) return address: rsp % 16 == 8 */
    *--sp = (uint64_t)entry;     /* popped by the switch's ret */
    for (int r = 0; r < 6; r++)  /* rbp rbx r12 r13 r14 r15 */
        *--sp = 0;
    *--sp = 0x037f00001f80ull;   /* MXCSR default, x87 control word default */
    c->sp = sp;
}
static inline void fiber_switch(emu_context *from, emu_context *to)
{
    kvz_emu_ctx_switch(&from->sp, to->sp);
}
#else
#include <ucontext.h>
struct emu_context {
    ucontext_t uc;
};
static inline void fiber_prepare(emu_context *c, char *stack, size_t size, void (*entry)())
{
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, entry, 0);
}
static inline void fiber_switch(emu_context *from, emu_context *to)
{
    swapcontext(&from->uc, &to->uc);
}
#endif

#endif
