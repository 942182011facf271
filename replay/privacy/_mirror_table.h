/* The mirror of a full snapshot as a table (included by _native_walk.c, after new_node and
 * kept_value).
 *
 * A full snapshot describes tens of thousands of nodes, and the rules ask about few of them later
 * (the parents of added nodes, inputs, removed subtrees). Made as a Node, a dict entry and a
 * children dict each, the snapshot's mirror cost the walk about as much as reading it, and as
 * much again to free at the window's next snapshot. So walk_packed appends one row per node here
 * instead (pre-order: id, parent row, where its subtree ends, tag, kept attributes as bytes), and
 * a Node is made for a row only when something asks for it: SessionMirror.get and leaf_parent
 * look in their dicts first and then here, and a Node made for a row is the one every later
 * question gets (the walker's memos are keyed by Node).
 *
 * Who holds an id: the mirror's dicts always win. An id enters them (SessionMirror.add / add_leaf)
 * only after its row was killed, so a live row and a dict entry never share an id. Removing a node
 * kills its row's range: pre-order makes a subtree one range, and the rows of a subtree killed
 * before are skipped with their subtree, as SessionMirror._detach skips children that moved. */

typedef struct {
    long long id;
    int32_t parent;     /* row, or -1 (no parent) */
    int32_t end;        /* one past the subtree's last row; ROW_OPEN while the walk is inside it */
    Py_ssize_t attrs;   /* offset of the kept attributes in the table's bytes; -1 none */
    PyObject *tag;      /* the element's lower-case tag (a strong reference); NULL for a leaf */
    unsigned char dead;
} Row;
#define ROW_OPEN INT32_MAX

typedef struct {
    long long id;
    int32_t row;  /* a row, ID_EMPTY, or ID_CLAIMED */
} IdSlot;
/* ID_CLAIMED: while walk_packed fills the table, the mirror's dicts took the id (SessionMirror.add,
 * add_leaf, or the C walk of the nodes it hands to Python), so the walk meeting it again hands that
 * node to Python too. A claim may outlive the dict entry: that only sends a node to Python, which
 * is never wrong. After the walk nothing asks, so nothing is claimed (mutations add thousands). */
enum { ID_EMPTY = -1, ID_CLAIMED = -2 };

typedef struct {
    IdSlot *slots;
    Py_ssize_t mask, used;  /* capacity - 1 (a power of two) */
} IdIndex;

typedef struct {
    PyObject_HEAD
    Row *rows;
    int32_t n, cap;
    PyObject **made;          /* row -> the Node made for it, or NULL; allocated with the first */
    unsigned char *bytes;     /* kept attributes: u16 count, then (u16 len, name, u32 len, value) */
    Py_ssize_t nbytes, capbytes;
    IdIndex elements, leaves; /* id -> its last row (elements and documents; text and other leaves) */
    int walking;              /* walk_packed is filling it: the dicts claim the ids they take */
} MirrorTable;

static PyTypeObject MirrorTable_Type;

/* An empty table for about ``rows`` rows (made by walk_packed only: Python code never makes one). */
static MirrorTable *table_new(Py_ssize_t rows) {
    MirrorTable *t = PyObject_New(MirrorTable, &MirrorTable_Type);
    if (t == NULL)
        return NULL;
    t->n = 0;
    t->cap = rows < 1024 ? 1024 : rows > (1 << 24) ? (1 << 24) : (int32_t)rows;
    t->rows = PyMem_Malloc((size_t)t->cap * sizeof(Row));
    t->made = NULL;
    t->bytes = NULL;
    t->nbytes = t->capbytes = 0;
    t->elements = t->leaves = (IdIndex){NULL, -1, 0};
    t->walking = 0;
    if (t->rows == NULL) {
        t->cap = 0;
        Py_DECREF(t);
        return (MirrorTable *)PyErr_NoMemory();
    }
    return t;
}

static inline uint64_t id_hash(long long id) { return (uint64_t)id * 0x9E3779B97F4A7C15ull; }

/* The last row given ``id`` in the index, ID_CLAIMED, or ID_EMPTY. */
static int32_t index_find(const IdIndex *x, long long id) {
    if (x->slots == NULL)
        return ID_EMPTY;
    for (Py_ssize_t i = (Py_ssize_t)(id_hash(id) >> 32) & x->mask;; i = (i + 1) & x->mask) {
        if (x->slots[i].row == ID_EMPTY)
            return ID_EMPTY;
        if (x->slots[i].id == id)
            return x->slots[i].row;
    }
}

/* Puts ``id`` -> ``row``; ``expect``: ids the index should have room for when it first makes room. */
static int index_put_sized(IdIndex *x, long long id, int32_t row, Py_ssize_t expect) {
    if (2 * (x->used + 1) > x->mask + 1) {
        Py_ssize_t cap = x->slots == NULL ? 1024 : 2 * (x->mask + 1);
        while (cap < 2 * expect && cap < (1 << 26))
            cap *= 2;
        IdSlot *slots = PyMem_Malloc((size_t)cap * sizeof(IdSlot));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < cap; i++)
            slots[i].row = ID_EMPTY;
        IdIndex grown = {slots, cap - 1, 0};
        for (Py_ssize_t i = 0; x->slots != NULL && i <= x->mask; i++)
            if (x->slots[i].row != ID_EMPTY)
                index_put_sized(&grown, x->slots[i].id, x->slots[i].row, 0);  /* cannot grow again */
        PyMem_Free(x->slots);
        *x = grown;
    }
    for (Py_ssize_t i = (Py_ssize_t)(id_hash(id) >> 32) & x->mask;; i = (i + 1) & x->mask) {
        if (x->slots[i].row == ID_EMPTY) {
            x->slots[i] = (IdSlot){id, row};
            x->used++;
            return 0;
        }
        if (x->slots[i].id == id) {
            x->slots[i].row = row;
            return 0;
        }
    }
}

/* ``id`` (an int object) as a row's id: 1, or 0 when no row can have it. */
static int row_id(PyObject *id, long long *v) {
    if (!PyLong_Check(id))
        return 0;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(id, &overflow);
    if (*v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return !overflow;
}

static inline int index_put(IdIndex *x, long long id, int32_t row) { return index_put_sized(x, id, row, 0); }

/* The live row of ``id`` (an int object) in the index, or -1 (none, dead, or an id no row can hold). */
static int32_t table_row(MirrorTable *t, int leaf, PyObject *id) {
    long long v;
    if (t == NULL || !row_id(id, &v))
        return -1;
    int32_t r = index_find(leaf ? &t->leaves : &t->elements, v);
    return r >= 0 && !t->rows[r].dead ? r : -1;
}

/* The mirror's dicts take ``id`` (see ID_CLAIMED); -1 error. */
static int table_claim(MirrorTable *t, int leaf, PyObject *id) {
    long long v;
    if (t == NULL || !t->walking || !row_id(id, &v))
        return 0;
    return index_put(leaf ? &t->leaves : &t->elements, v, ID_CLAIMED);
}

static int table_reserve_bytes(MirrorTable *t, Py_ssize_t more) {
    if (t->nbytes + more <= t->capbytes)
        return 0;
    Py_ssize_t cap = t->capbytes ? t->capbytes : 4096;
    while (cap < t->nbytes + more)
        cap *= 2;
    unsigned char *grown = PyMem_Realloc(t->bytes, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->bytes = grown;
    t->capbytes = cap;
    return 0;
}

/* The name or value of a kept attribute, as written (both within a node's bytes). */
typedef struct {
    const unsigned char *name, *value;
    Py_ssize_t name_len, value_len;
} KeptAttr;

/* A new row (its id not in the index yet: the caller checked); returns it, -1 on error. */
static int32_t table_append(MirrorTable *t, long long id, int32_t parent, PyObject *tag, const KeptAttr *kept,
                            int nkept) {
    if (t->n == t->cap) {
        if (t->cap >= ROW_OPEN / 2) {
            PyErr_SetString(PyExc_OverflowError, "a full snapshot of more nodes than the mirror holds");
            return -1;
        }
        int32_t cap = t->cap ? 2 * t->cap : 1024;
        Row *rows = PyMem_Realloc(t->rows, (size_t)cap * sizeof(Row));
        if (rows == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->rows = rows;
        if (t->made != NULL) {
            PyObject **made = PyMem_Realloc(t->made, (size_t)cap * sizeof(PyObject *));
            if (made == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            memset(made + t->cap, 0, (size_t)(cap - t->cap) * sizeof(PyObject *));
            t->made = made;
        }
        t->cap = cap;
    }
    Py_ssize_t attrs = -1;
    if (nkept > 0) {
        Py_ssize_t size = 2;
        for (int i = 0; i < nkept; i++)
            size += 6 + kept[i].name_len + kept[i].value_len;
        if (table_reserve_bytes(t, size) < 0)
            return -1;
        attrs = t->nbytes;
        unsigned char *p = t->bytes + t->nbytes;
        *p++ = (unsigned char)(nkept >> 8);
        *p++ = (unsigned char)nkept;
        for (int i = 0; i < nkept; i++) {
            Py_ssize_t a = kept[i].name_len, v = kept[i].value_len;
            *p++ = (unsigned char)(a >> 8);
            *p++ = (unsigned char)a;
            memcpy(p, kept[i].name, (size_t)a);
            p += a;
            for (int s = 24; s >= 0; s -= 8)
                *p++ = (unsigned char)(v >> s);
            memcpy(p, kept[i].value, (size_t)v);
            p += v;
        }
        t->nbytes = p - t->bytes;
    }
    int32_t r = t->n;
    if (index_put_sized(tag != NULL ? &t->elements : &t->leaves, id, r, t->cap / 2) < 0)
        return -1;
    t->rows[r] = (Row){id, parent, tag != NULL ? ROW_OPEN : r + 1, attrs, Py_XNewRef(tag), 0};
    t->n++;
    return r;
}

/* The kept attributes of row r as a dict (the shared empty one when it has none). */
static PyObject *row_attrs(MirrorTable *t, int32_t r) {
    if (t->rows[r].attrs < 0)
        return Py_NewRef(EMPTY_ATTRS);
    PyObject *attrs = PyDict_New();
    if (attrs == NULL)
        return NULL;
    const unsigned char *p = t->bytes + t->rows[r].attrs;
    int count = p[0] << 8 | p[1];
    p += 2;
    for (int i = 0; i < count; i++) {
        Py_ssize_t a = p[0] << 8 | p[1];
        PyObject *name = kept_value(p + 2, a);
        p += 2 + a;
        Py_ssize_t v = (Py_ssize_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        PyObject *value = name == NULL ? NULL : kept_value(p + 4, v);
        p += 4 + v;
        int rc = value == NULL ? -1 : PyDict_SetItem(attrs, name, value);
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (rc < 0) {
            Py_DECREF(attrs);
            return NULL;
        }
    }
    return attrs;
}

/* The Node for element row r (made, with its ancestors, when first asked for); a borrowed
 * reference (the table holds it), NULL on error. */
static PyObject *table_node(MirrorTable *t, int32_t r) {
    if (t->made == NULL && (t->made = PyMem_Calloc((size_t)t->cap, sizeof(PyObject *))) == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (t->made[r] != NULL)
        return t->made[r];
    /* The chain up to the first ancestor made (or the root), made top down: parents first. */
    int32_t depth = 1;
    for (int32_t at = r; t->rows[at].parent >= 0 && t->made[t->rows[at].parent] == NULL; at = t->rows[at].parent)
        depth++;
    int32_t *chain = PyMem_Malloc((size_t)depth * sizeof(int32_t));
    if (chain == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    chain[0] = r;
    for (int32_t k = 1; k < depth; k++)
        chain[k] = t->rows[chain[k - 1]].parent;
    for (int32_t k = depth - 1; k >= 0; k--) {
        int32_t at = chain[k];
        const Row *row = &t->rows[at];
        PyObject *parent = row->parent >= 0 ? t->made[row->parent] : Py_None;
        PyObject *id = PyLong_FromLongLong(row->id), *attrs = id == NULL ? NULL : row_attrs(t, at);
        PyObject *node = attrs == NULL ? NULL : new_node(id, row->tag, attrs, parent);
        Py_XDECREF(id);
        Py_XDECREF(attrs);
        if (node == NULL) {
            PyMem_Free(chain);
            return NULL;
        }
        t->made[at] = node;
    }
    PyMem_Free(chain);
    return t->made[r];
}

/* The Node for leaf row r's parent (None at the top); borrowed, NULL on error. */
static PyObject *leaf_parent_node(MirrorTable *t, int32_t r) {
    return t->rows[r].parent >= 0 ? table_node(t, t->rows[r].parent) : Py_None;
}

static inline int32_t subtree_end(const MirrorTable *t, int32_t r) {
    return t->rows[r].end == ROW_OPEN ? t->n : t->rows[r].end;
}

/* Kills row r and its live subtree; the Nodes made for the rows killed go to ``made`` (if not NULL). */
static int table_kill(MirrorTable *t, int32_t r, PyObject *made) {
    int32_t end = subtree_end(t, r);
    for (int32_t i = r; i < end;) {
        if (t->rows[i].dead && i != r) {  /* killed before: what was added under it since lives on */
            i = subtree_end(t, i);
            continue;
        }
        t->rows[i].dead = 1;
        if (made != NULL && t->made != NULL && t->made[i] != NULL && i != r && PyList_Append(made, t->made[i]) < 0)
            return -1;
        i++;
    }
    return 0;
}

/* ---- what SessionMirror calls ---- */

static PyObject *MirrorTable_node(MirrorTable *t, PyObject *id) {
    int32_t r = table_row(t, 0, id);
    if (r < 0)
        Py_RETURN_NONE;
    return Py_XNewRef(table_node(t, r));
}

static PyObject *MirrorTable_leaf(MirrorTable *t, PyObject *id) {
    int32_t r = table_row(t, 1, id);
    if (r < 0)
        return Py_BuildValue("(OO)", Py_False, Py_None);
    PyObject *parent = leaf_parent_node(t, r);
    return parent == NULL ? NULL : Py_BuildValue("(OO)", Py_True, parent);
}

/* The row ``node`` was made for, or -1 (a node made in Python, or a row killed since). */
static int32_t made_row(MirrorTable *t, PyObject *node) {
    if (t->made == NULL || !PyObject_TypeCheck(node, (PyTypeObject *)Node_type))
        return -1;
    PyObject *id = PyObject_GetAttr(node, s_id);
    if (id == NULL) {
        PyErr_Clear();
        return -1;
    }
    int32_t r = table_row(t, 0, id);
    Py_DECREF(id);
    return r >= 0 && t->made[r] == node ? r : -1;
}

/* SessionMirror.add's question: the Node of the live row of ``id``, its subtree killed, and the
 * other Nodes made for rows killed; the id is the dicts' from now on (claimed, during a walk). */
static PyObject *MirrorTable_take(MirrorTable *t, PyObject *id) {
    PyObject *made = PyList_New(0);
    if (made == NULL)
        return NULL;
    int32_t r = table_row(t, 0, id);
    PyObject *node = r < 0 ? Py_None : table_node(t, r), *result = NULL;
    if (node != NULL && (r < 0 || table_kill(t, r, made) == 0) && table_claim(t, 0, id) == 0)
        result = PyTuple_Pack(2, node, made);
    Py_XDECREF(made);
    return result;
}

static PyObject *MirrorTable_detach(MirrorTable *t, PyObject *node) {
    PyObject *made = PyList_New(0);
    int32_t r = made == NULL ? -1 : made_row(t, node);
    if (r >= 0 && table_kill(t, r, made) < 0)
        Py_CLEAR(made);
    return made;
}

static PyObject *MirrorTable_remove_leaf(MirrorTable *t, PyObject *id) {
    int32_t r = table_row(t, 1, id);
    if (r >= 0)
        t->rows[r].dead = 1;
    return PyBool_FromLong(r >= 0);
}

/* SessionMirror.add_leaf's: the live leaf row of ``id`` killed, the id the dicts' from now on. */
static PyObject *MirrorTable_take_leaf(MirrorTable *t, PyObject *id) {
    PyObject *removed = MirrorTable_remove_leaf(t, id);
    Py_XDECREF(removed);
    if (removed == NULL || table_claim(t, 1, id) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *MirrorTable_children(MirrorTable *t, PyObject *node) {
    PyObject *ids = PyList_New(0);
    int32_t r = ids == NULL ? -1 : made_row(t, node);
    if (r < 0)
        return ids;
    for (int32_t i = r + 1, end = subtree_end(t, r); i < end; i = subtree_end(t, i)) {
        if (t->rows[i].dead)
            continue;
        PyObject *id = PyLong_FromLongLong(t->rows[i].id);
        if (id == NULL || PyList_Append(ids, id) < 0) {
            Py_XDECREF(id);
            Py_DECREF(ids);
            return NULL;
        }
        Py_DECREF(id);
    }
    return ids;
}

/* Every live row made into what the dicts would hold: ({id: Node}, {id: parent Node or None}). */
static PyObject *MirrorTable_everything(MirrorTable *t, PyObject *unused) {
    PyObject *nodes = PyDict_New(), *leaves = PyDict_New();
    for (int32_t r = 0; nodes != NULL && leaves != NULL && r < t->n; r++) {
        if (t->rows[r].dead)
            continue;
        int leaf = t->rows[r].tag == NULL;
        if (index_find(leaf ? &t->leaves : &t->elements, t->rows[r].id) != r)
            continue;  /* cannot happen while the walk checks ids; kept honest */
        PyObject *value = leaf ? leaf_parent_node(t, r) : table_node(t, r);
        PyObject *id = value == NULL ? NULL : PyLong_FromLongLong(t->rows[r].id);
        if (id == NULL || PyDict_SetItem(leaf ? leaves : nodes, id, value) < 0) {
            Py_XDECREF(id);
            Py_CLEAR(nodes);
            break;
        }
        Py_DECREF(id);
    }
    PyObject *result = nodes != NULL && leaves != NULL ? PyTuple_Pack(2, nodes, leaves) : NULL;
    Py_XDECREF(nodes);
    Py_XDECREF(leaves);
    return result;
}

static Py_ssize_t MirrorTable_len(MirrorTable *t) { return t->n; }

static void MirrorTable_dealloc(MirrorTable *t) {
    for (int32_t r = 0; r < t->n; r++) {
        Py_XDECREF(t->rows[r].tag);
        if (t->made != NULL)
            Py_XDECREF(t->made[r]);
    }
    PyMem_Free(t->rows);
    PyMem_Free(t->made);
    PyMem_Free(t->bytes);
    PyMem_Free(t->elements.slots);
    PyMem_Free(t->leaves.slots);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef MirrorTable_methods[] = {
    {"node", (PyCFunction)MirrorTable_node, METH_O, "The Node of the live element row of this id, or None."},
    {"leaf", (PyCFunction)MirrorTable_leaf, METH_O, "(whether a live leaf row has this id, its parent Node)."},
    {"detach", (PyCFunction)MirrorTable_detach, METH_O,
     "Kill the row of a Node made here and its subtree; the other Nodes made for rows killed."},
    {"take", (PyCFunction)MirrorTable_take, METH_O,
     "(the Node of the live row of this id or None, the other Nodes made for its subtree): rows killed, id claimed during a walk."},
    {"remove_leaf", (PyCFunction)MirrorTable_remove_leaf, METH_O, "Kill the live leaf row of this id, if any."},
    {"take_leaf", (PyCFunction)MirrorTable_take_leaf, METH_O, "Kill the live leaf row of this id, and claim the id during a walk."},
    {"children", (PyCFunction)MirrorTable_children, METH_O, "The ids of the live rows under a Node made here."},
    {"everything", (PyCFunction)MirrorTable_everything, METH_NOARGS,
     "({id: Node}, {id: parent}) of every live row (Nodes made for all of them)."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods MirrorTable_sequence = {.sq_length = (lenfunc)MirrorTable_len};

static PyTypeObject MirrorTable_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "replay.privacy._native_walk.MirrorTable",
    .tp_basicsize = sizeof(MirrorTable),
    .tp_dealloc = (destructor)MirrorTable_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A full snapshot's mirror as rows (see _mirror_table.h); SessionMirror.table.",
    .tp_methods = MirrorTable_methods,
    .tp_as_sequence = &MirrorTable_sequence,
};
