/* gismo.memory._cacheflush: write back and invalidate CPU cache lines of a byte range.
 *
 * Why: CXL memory shared by several hosts is in general not coherent between them (see
 * coherence.py). flush(addr, n) writes the lines of [addr, addr+n) back to memory and fences;
 * invalidate(addr, n) writes back and drops them, so the next load reads memory.
 *
 * x86-64: the instruction is chosen once at import from CPUID: flush uses CLWB (keeps the line
 * cached), else CLFLUSHOPT, else CLFLUSH, then SFENCE; invalidate uses CLFLUSHOPT, else CLFLUSH,
 * then MFENCE (loads after it must not be satisfied from before). CLWB/CLFLUSHOPT are emitted as
 * their byte encodings so any assembler builds this file.
 * AArch64: DC CVAC (clean) / DC CIVAC (clean and invalidate) per line of CTR_EL0's line size, then
 * DSB ISH. Written to the ARM ARM, NOT run on ARM hardware by the Gismo tests.
 * Elsewhere: the module still imports and method() says "none"; coherence.py then reports no-op.
 *
 * Ranges of 256 KiB and more release the GIL while flushing. Only the limited C API (3.10) is used:
 * the module is built once as _cacheflush.abi3.so and loads in every CPython >= 3.10.
 */
#define PY_SSIZE_T_CLEAN
#ifndef Py_LIMITED_API /* abi3 (agent/pyproject.toml py-limited-api): any CPython >= 3.10 */
#define Py_LIMITED_API 0x030A0000
#endif
#include <Python.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define GISMO_X86 1
#endif

enum { M_NONE = 0, M_CLFLUSH, M_CLFLUSHOPT, M_CLWB, M_ARM };
static int flush_method = M_NONE;
static int inval_method = M_NONE;
static uintptr_t line_size = 64;

#define GIL_FREE_BYTES (256u << 10)

#ifdef GISMO_X86
static inline void x86_clflush(const void *p) { __asm__ volatile("clflush (%0)" ::"r"(p) : "memory"); }
/* 66 0F AE /7 = clflushopt, 66 0F AE /6 = clwb, with (%rdi)/(%edi) as the memory operand. */
static inline void x86_clflushopt(const void *p) {
    __asm__ volatile(".byte 0x66, 0x0f, 0xae, 0x3f" ::"D"(p) : "memory");
}
static inline void x86_clwb(const void *p) { __asm__ volatile(".byte 0x66, 0x0f, 0xae, 0x37" ::"D"(p) : "memory"); }

static void detect(void) {
    unsigned int a, b, c, d;
    int has_clflush = 0, has_opt = 0, has_clwb = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        has_clflush = (d >> 19) & 1;
        if (has_clflush) line_size = ((b >> 8) & 0xff) * 8;
    }
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        has_opt = (b >> 23) & 1;
        has_clwb = (b >> 24) & 1;
    }
    if (line_size == 0) line_size = 64;
    flush_method = has_clwb ? M_CLWB : has_opt ? M_CLFLUSHOPT : has_clflush ? M_CLFLUSH : M_NONE;
    inval_method = has_opt ? M_CLFLUSHOPT : has_clflush ? M_CLFLUSH : M_NONE;
}

static void run(int method, uintptr_t start, uintptr_t end, int invalidate) {
    uintptr_t p = start & ~(line_size - 1);
    switch (method) {
    case M_CLWB:
        for (; p < end; p += line_size) x86_clwb((const void *)p);
        break;
    case M_CLFLUSHOPT:
        for (; p < end; p += line_size) x86_clflushopt((const void *)p);
        break;
    case M_CLFLUSH:
        for (; p < end; p += line_size) x86_clflush((const void *)p);
        break;
    default:
        return;
    }
    if (invalidate)
        __asm__ volatile("mfence" ::: "memory");
    else
        __asm__ volatile("sfence" ::: "memory");
}
#elif defined(__aarch64__)
static void detect(void) {
    uint64_t ctr;
    __asm__ volatile("mrs %0, ctr_el0" : "=r"(ctr));
    line_size = (uintptr_t)4 << ((ctr >> 16) & 0xf); /* DminLine: log2 of words */
    flush_method = M_ARM;
    inval_method = M_ARM;
}

static void run(int method, uintptr_t start, uintptr_t end, int invalidate) {
    uintptr_t p = start & ~(line_size - 1);
    if (method != M_ARM) return;
    if (invalidate)
        for (; p < end; p += line_size) __asm__ volatile("dc civac, %0" ::"r"(p) : "memory");
    else
        for (; p < end; p += line_size) __asm__ volatile("dc cvac, %0" ::"r"(p) : "memory");
    __asm__ volatile("dsb ish" ::: "memory");
}
#else
static void detect(void) {}
static void run(int method, uintptr_t start, uintptr_t end, int invalidate) {
    (void)method; (void)start; (void)end; (void)invalidate;
}
#endif

static PyObject *range_op(PyObject *args, int method, int invalidate) {
    unsigned long long addr, n;
    if (!PyArg_ParseTuple(args, "KK", &addr, &n)) return NULL;
    if (n == 0) Py_RETURN_NONE;
    uintptr_t start = (uintptr_t)addr, end = (uintptr_t)(addr + n);
    if (n >= GIL_FREE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        run(method, start, end, invalidate);
        Py_END_ALLOW_THREADS
    } else {
        run(method, start, end, invalidate);
    }
    Py_RETURN_NONE;
}

static PyObject *py_flush(PyObject *self, PyObject *args) { (void)self; return range_op(args, flush_method, 0); }
static PyObject *py_invalidate(PyObject *self, PyObject *args) { (void)self; return range_op(args, inval_method, 1); }

static const char *name_of(int m) {
    switch (m) {
    case M_CLWB: return "clwb";
    case M_CLFLUSHOPT: return "clflushopt";
    case M_CLFLUSH: return "clflush";
    case M_ARM: return "dc-cvac";
    default: return "none";
    }
}

static PyObject *py_method(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return PyUnicode_FromString(name_of(flush_method));
}

static PyObject *py_invalidate_method(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return PyUnicode_FromString(inval_method == M_ARM ? "dc-civac" : name_of(inval_method));
}

static PyObject *py_line_size(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return PyLong_FromUnsignedLong((unsigned long)line_size);
}

static PyMethodDef methods[] = {
    {"flush", py_flush, METH_VARARGS, "flush(address, size): write back the lines of the range, then fence."},
    {"invalidate", py_invalidate, METH_VARARGS, "invalidate(address, size): write back and drop the lines."},
    {"method", py_method, METH_NOARGS, "The flush instruction in use: clwb, clflushopt, clflush, dc-cvac, none."},
    {"invalidate_method", py_invalidate_method, METH_NOARGS, "The invalidate instruction in use."},
    {"line_size", py_line_size, METH_NOARGS, "Cache line size in bytes (CPUID / CTR_EL0)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cacheflush", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cacheflush(void) {
    detect();
    return PyModule_Create(&module);
}
