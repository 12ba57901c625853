/* Per-batch bookkeeping in native code, functions of the slipstream.decode._kernel module:
 * crop planning (_plan.c) and heap lookups (_heap.c). */
#ifndef SLIPSTREAM_BATCH_H
#define SLIPSTREAM_BATCH_H

#include <Python.h>

PyObject *kernel_plan_rrc(PyObject *mod, PyObject *args);
PyObject *kernel_heap_chunks(PyObject *mod, PyObject *args);
PyObject *kernel_heap_locate(PyObject *mod, PyObject *args);
PyObject *kernel_stat_files(PyObject *mod, PyObject *arg);
PyObject *kernel_heap_gather(PyObject *mod, PyObject *args);

#endif
