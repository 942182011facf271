/* Take a freshly decoded upload (dicts, lists and scalars from orjson or msgpack) out of the
 * cyclic garbage collector's sight.
 *
 * A decoded upload is a tree: it cannot hold a reference cycle, and reference counting frees it
 * the moment its request is done. But every dict and list in it is a container the collector
 * tracks, and under load dozens of uploads are in flight at once: each young-generation
 * collection walked all of them, then moved them to the middle generation, whose collections
 * walked them again (14% of a server's CPU, by perf, at 32 uploads in flight). CPython does the
 * same for the containers it can prove acyclic (tuples and dicts of atoms, during collections);
 * this does it for a whole tree it knows to be one, right after decoding.
 *
 * What stays true: a dict later given a tracked container is tracked again by CPython itself;
 * ingest code only ever adds new, acyclic values to these trees and never stores a reference
 * from one back into it, so no cycle can form that the collector would have to find.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *untrack(PyObject *module, PyObject *root) {
    Py_ssize_t len = 0, cap = 64;
    PyObject **stack = PyMem_Malloc((size_t)cap * sizeof(PyObject *));
    if (stack == NULL)
        return PyErr_NoMemory();
    stack[len++] = root;
    /* Borrowed references are safe: nothing here runs Python code or changes the tree. */
    while (len) {
        PyObject *obj = stack[--len];
        Py_ssize_t n;
        if (PyDict_CheckExact(obj))
            n = PyDict_GET_SIZE(obj);
        else if (PyList_CheckExact(obj))
            n = PyList_GET_SIZE(obj);
        else
            continue;
        if (!PyObject_GC_IsTracked(obj))
            continue; /* a dict of scalars: CPython tracks a dict only once it holds a container */
        PyObject_GC_UnTrack(obj);
        if (len + n > cap) {
            Py_ssize_t want = cap;
            while (len + n > want)
                want *= 2;
            PyObject **grown = PyMem_Realloc(stack, (size_t)want * sizeof(PyObject *));
            if (grown == NULL) {
                PyMem_Free(stack);
                return PyErr_NoMemory();
            }
            stack = grown;
            cap = want;
        }
        if (PyDict_CheckExact(obj)) {
            Py_ssize_t pos = 0;
            PyObject *key, *value;
            while (PyDict_Next(obj, &pos, &key, &value))
                if (PyDict_CheckExact(value) || PyList_CheckExact(value))
                    stack[len++] = value;
        } else {
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *item = PyList_GET_ITEM(obj, i);
                if (PyDict_CheckExact(item) || PyList_CheckExact(item))
                    stack[len++] = item;
            }
        }
    }
    PyMem_Free(stack);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"untrack", untrack, METH_O, "Stop the cyclic GC tracking the dicts and lists of a decoded JSON/msgpack tree."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_decoded_tree", NULL, -1, methods};

PyMODINIT_FUNC PyInit__decoded_tree(void) { return PyModule_Create(&module_def); }
