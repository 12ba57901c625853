/* Batch crop planning (_plan.c), a function of the slipstream.decode._kernel module. */
#ifndef SLIPSTREAM_PLAN_H
#define SLIPSTREAM_PLAN_H

#include <Python.h>

PyObject *kernel_plan_rrc(PyObject *mod, PyObject *args);

#endif
