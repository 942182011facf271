/* The loop of Walker._walk (replay/privacy/walk.py) in C: the same pre-order walk of a
 * serialized rrweb subtree, for full snapshots and added nodes, which is most of what masking
 * costs at ingest.
 *
 * It decides nothing the Python walker does not. It does the bookkeeping every node needs
 * (mirror entries, parent links) and, for each node, proves one of two things: either the
 * Python step would change nothing and call no sink (an ordinary element no selector can match,
 * page text no detector can match, a structural attribute), or it calls that Python step
 * (Walker._element, Walker._leaf_text, Walker._attribute, SessionMirror.add / add_leaf). The
 * proofs mirror the early returns of those steps; tests run both loops over real recordings
 * and the privacy fixtures and compare every event and the mirrors they leave.
 *
 * The inputs are Python objects decoded from untrusted bodies, so nothing here reads raw
 * bytes: every access goes through the C API with its type checks, every reference taken is
 * held until the node is done, and a Python error aborts the walk with the exception set.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum { DOCUMENT = 0, DOCTYPE = 1, ELEMENT = 2, TEXT = 3, CDATA = 4, COMMENT = 5, OTHER = -1 };

/* Set once by configure(): constants of walk.py and mirror.py. */
static PyObject *Node_type, *EMPTY_ATTRS, *STRUCTURAL, *URL_ATTRIBUTES, *CONTEXT_TAGS, *FIELD_TAGS;
static PyObject *kind_objects[6];

/* Where Node's __slots__ live in an instance, to fill a new Node without running its __init__ (a
 * Python call per element, ~5% of a server's CPU under load). 0: not found, call Node() instead. */
#define BLOCKED_FLAG 2 /* mirror.BLOCKED */
enum { SLOT_ID, SLOT_TAG, SLOT_ATTRS, SLOT_PARENT, SLOT_CHILDREN, SLOT_FLAGS, N_SLOTS };
static const char *slot_names[N_SLOTS] = {"id", "tag", "attrs", "parent", "children", "flags"};
static Py_ssize_t slot_offsets[N_SLOTS];

static int find_slots(PyObject *type) {
    for (int i = 0; i < N_SLOTS; i++) {
        slot_offsets[i] = 0;
        PyObject *descr = PyObject_GetAttrString(type, slot_names[i]);
        if (descr == NULL)
            return -1;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX
                 && !(((PyMemberDescrObject *)descr)->d_member->flags & READONLY);
        Py_ssize_t offset = ok ? ((PyMemberDescrObject *)descr)->d_member->offset : 0;
        Py_DECREF(descr);
        if (!ok) {
            memset(slot_offsets, 0, sizeof slot_offsets);
            return 0;
        }
        slot_offsets[i] = offset;
    }
    return 0;
}

/* Node(node_id, tag, attrs, parent): its __init__ only assigns the six slots, children None, flags 0. */
static PyObject *new_node(PyObject *sid, PyObject *tag, PyObject *attrs, PyObject *parent) {
    if (slot_offsets[0] == 0) {
        PyObject *args[4] = {sid, tag, attrs, parent};
        return PyObject_Vectorcall(Node_type, args, 4, NULL);
    }
    PyTypeObject *type = (PyTypeObject *)Node_type;
    PyObject *node = type->tp_alloc(type, 0);
    if (node == NULL)
        return NULL;
    PyObject *values[N_SLOTS] = {sid, tag, attrs, parent, Py_None, kind_objects[0]};
    for (int i = 0; i < N_SLOTS; i++)
        *(PyObject **)((char *)node + slot_offsets[i]) = Py_NewRef(values[i]);
    /* Out of the cyclic collector's sight, as a mirror's nodes can hold no cycle: a node refers to
     * its parent node, its children only by id, its attributes are strings. A server holds
     * hundreds of thousands of them, and every full collection walked them all. */
    PyObject_GC_UnTrack(node);
    return node;
}

static PyObject *s_id, *s_type, *s_tagName, *s_attributes, *s_textContent, *s_childNodes, *s_children,
    *s_class, *s_attrs, *s_contenteditable, *s_value, *s_input, *s_unknown, *s_skip, *s_empty, *s_document,
    *s_lower, *s_add, *s_add_leaf, *s_note_password, *s_element, *s_leaf_text, *s_attribute,
    *s_mirror, *s_rules, *s_block, *s_mask, *s_nodes, *s_leaves, *s_keep, *s_name_cache,
    *s_attr_selectors, *s_rule_keys, *s_blocked, *s_mask_text, *s_kind, *s_sink, *s_mask_is_mask_text, *s_memoized_by_value, *s_scrubbed_urls, *s_pii_masked, *s_memo, *s_parentId, *s_node, *s_ctx_of, *s_add_under, *s_enter, *s_table, *s_parent;

/* str objects for the short values the mirror keeps (class names above all: a page repeats a few
 * dozen of them on thousands of elements), by their bytes, so that the mirrors share one object
 * per value instead of decoding each. Direct-mapped; a new value takes the slot of the old. */
#define VALUE_SLOTS 512
#define VALUE_BYTES 48
typedef struct {
    Py_ssize_t len;
    unsigned char text[VALUE_BYTES];
    PyObject *value; /* NULL: empty slot */
} KeptValue;
static KeptValue kept_values[VALUE_SLOTS];

/* The str of UTF-8 bytes s[:len] (a new reference); NULL with an exception set when they are not. */
static PyObject *kept_value(const unsigned char *s, Py_ssize_t len) {
    if (len > VALUE_BYTES)
        return PyUnicode_DecodeUTF8((const char *)s, len, NULL);
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < len; i++)
        h = (h ^ s[i]) * 16777619u;
    KeptValue *slot = &kept_values[(h ^ (h >> 15)) % VALUE_SLOTS];
    if (slot->value != NULL && slot->len == len && memcmp(slot->text, s, (size_t)len) == 0)
        return Py_NewRef(slot->value);
    PyObject *value = PyUnicode_DecodeUTF8((const char *)s, len, NULL);
    if (value == NULL)
        return NULL;
    Py_XSETREF(slot->value, Py_NewRef(value));
    slot->len = len;
    memcpy(slot->text, s, (size_t)len);
    return value;
}

#include "_mirror_table.h"

/* ---- the PII prefilter of detectors._candidate_pattern, without its regex calls ----------------
 * Character classes as CPython's re has them for str patterns: \d is Py_UNICODE_ISDECIMAL, \w is
 * Py_UNICODE_ISALNUM or "_"; [A-Z] and [A-Za-z0-9_-] are ASCII. */



enum { C_DIGIT = 1, C_SEP = 2, C_WORD = 4, C_UPPER = 8, C_TOKEN = 16 };
static unsigned char ascii_class[128]; /* filled by init_classes() */

static void init_classes(void) {
    for (int c = 0; c < 128; c++) {
        unsigned char f = 0;
        if (c >= '0' && c <= '9')
            f |= C_DIGIT | C_WORD | C_TOKEN;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-')
            f |= C_WORD | C_TOKEN;
        if (c >= 'A' && c <= 'Z')
            f |= C_UPPER;
        if (c == ' ' || c == '(' || c == ')' || c == '.' || c == '-')
            f |= C_SEP;
        ascii_class[c] = f;
    }
}

/* The classes of one character: \d, [ ().-], [\w-], [A-Z], [A-Za-z0-9_-]. */
static inline unsigned char char_class(Py_UCS4 c) {
    if (c < 128)
        return ascii_class[c];
    unsigned char f = 0;
    if (Py_UNICODE_ISDECIMAL(c))
        f |= C_DIGIT;
    if (Py_UNICODE_ISALNUM(c))
        f |= C_WORD;
    return f;
}

/* The prefixes by their first character (all ASCII): one pass over the text finds any of them,
 * where a search per prefix cost ~7,000 instructions per URL. */
#define MAX_PREFIXES 64
static char prefix_text[MAX_PREFIXES][32];
static Py_ssize_t prefix_len[MAX_PREFIXES];
static unsigned long long prefixes_by_first[128]; /* bit i: prefix i starts with this character */
static int prefixes_set; /* set_token_prefixes() was called (detectors._TOKEN_PREFIXES) */
/* Bit c1 of prefix_pairs[c0]: some prefix starts with c0 c1 (all of them have two characters or more
 * unless prefix_of_one): one lookup rules out nearly every position of page text. */
static unsigned char prefix_pairs[128][16];
static int prefix_of_one;

static int has_token_prefix(int kind, const void *data, Py_ssize_t start, Py_ssize_t end) {
    if (!prefixes_set) {
        PyErr_SetString(PyExc_RuntimeError, "_native_walk.set_token_prefixes() was not called");
        return -1;
    }
    if (kind == PyUnicode_1BYTE_KIND && !prefix_of_one) {
        const unsigned char *s = data;
        for (Py_ssize_t i = start; i + 1 < end; i++) {
            unsigned c0 = s[i], c1 = s[i + 1];
            if ((c0 | c1) >= 128 || !(prefix_pairs[c0][c1 >> 3] & (1u << (c1 & 7))))
                continue;
            for (unsigned long long candidates = prefixes_by_first[c0]; candidates; candidates &= candidates - 1) {
                int p = __builtin_ctzll(candidates);
                Py_ssize_t n = prefix_len[p];
                if (i + n <= end && memcmp(s + i, prefix_text[p], (size_t)n) == 0)
                    return 1;
            }
        }
        return 0;
    }
    for (Py_ssize_t i = start; i < end; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        unsigned long long candidates = c < 128 ? prefixes_by_first[c] : 0;
        while (candidates) {
            int p = __builtin_ctzll(candidates);
            candidates &= candidates - 1;
            Py_ssize_t n = prefix_len[p], k = 1;
            if (i + n > end)
                continue;
            while (k < n && PyUnicode_READ(kind, data, i + k) == (Py_UCS4)(unsigned char)prefix_text[p][k])
                k++;
            if (k == n)
                return 1;
        }
    }
    return 0;
}

/* detectors._python_candidate_pattern(text[start:]), in one pass over the text: 0 (None),
 * FULL_PATTERN (_PATTERN) or WORD_PATTERN (_WORD_PATTERN); -1 with an exception set on error.
 *   "@"                                   -> full
 *   shorter than 7                        -> none
 *   seven digits in one run of [\d ().-]  -> full (_SEVEN_DIGITS)
 *   shorter than 15                       -> none
 *   [A-Z]{2}\d{2}                         -> word (_IBAN_START)
 *   no [\w-]{11}                          -> none (_WORD_GATE)
 *   a token prefix, or a whole [\w-] run of 32-200 characters of [A-Za-z0-9_-] with two
 *   digits (_ENTROPY_CANDIDATE)           -> word */
enum { FULL_PATTERN = 1, WORD_PATTERN = 2 };
static inline __attribute__((always_inline)) int scan_for_pii(int kind, const void *data, Py_ssize_t start,
                                                              Py_ssize_t end);

static Py_ssize_t find_char(int kind, const void *data, Py_ssize_t start, Py_ssize_t end, Py_UCS4 ch) {
    if (kind == PyUnicode_1BYTE_KIND) {
        const void *at = start < end ? memchr((const char *)data + start, (int)ch, (size_t)(end - start)) : NULL;
        return at == NULL ? -1 : (const char *)at - (const char *)data;
    }
    for (Py_ssize_t i = start; i < end; i++)
        if (PyUnicode_READ(kind, data, i) == ch)
            return i;
    return -1;
}

/* Whether s[0:n] holds an ASCII digit, the only decimal characters of the one-byte kind. */
static int has_digit(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
#ifdef __SSE2__
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + i));  /* signed: bytes over 0x7f are below '0' */
        if (_mm_movemask_epi8(_mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                            _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)))))
            return 1;
    }
#endif
    for (; i < n; i++)
        if (s[i] >= '0' && s[i] <= '9')
            return 1;
    return 0;
}

/* The prefilter over text[start:end] of a str's kind and data (ASCII bytes are the 1-byte kind). */
static int pii_in(int kind, const void *data, Py_ssize_t start, Py_ssize_t end) {
    if (find_char(kind, data, start, end, '@') >= 0)
        return FULL_PATTERN;
    if (end - start < 7)
        return 0;
    switch (kind) {  /* one loop per width: the character reads become plain loads */
    case PyUnicode_1BYTE_KIND:
        if (!has_digit((const unsigned char *)data + start, end - start)) {
            /* Most page text. The numeric kinds, IBANs and entropy candidates all need digits, so
             * only a token prefix with an 11-character word is left: the prefix is the rarer of the
             * two, so it is looked for first, and the scan runs only when there is one. */
            if (end - start < 15)
                return 0;
            int prefix = has_token_prefix(kind, data, start, end);
            if (prefix <= 0)
                return prefix;
        }
        return scan_for_pii(PyUnicode_1BYTE_KIND, data, start, end);
    case PyUnicode_2BYTE_KIND:
        return scan_for_pii(PyUnicode_2BYTE_KIND, data, start, end);
    default:
        return scan_for_pii(PyUnicode_4BYTE_KIND, data, start, end);
    }
}

static int may_contain_pii_from(PyObject *text, Py_ssize_t start) {
    return pii_in(PyUnicode_KIND(text), PyUnicode_DATA(text), start, PyUnicode_GET_LENGTH(text));
}

static inline __attribute__((always_inline)) int scan_for_pii(int kind, const void *data, Py_ssize_t start,
                                                              Py_ssize_t end) {
    int numeric_digits = 0, iban = 0, word_run_11 = 0, entropy = 0;
    Py_ssize_t run = 0, run_digits = 0;
    int run_ascii = 1;
    unsigned char prev = 0, prev2 = 0, prev3 = 0; /* classes of the last three characters */
    for (Py_ssize_t i = start; i <= end; i++) {
        unsigned char f = i < end ? char_class(PyUnicode_READ(kind, data, i)) : 0;
        if (f & C_DIGIT) {
            if (++numeric_digits >= 7)
                return FULL_PATTERN;
        } else if (!(f & C_SEP)) {
            numeric_digits = 0;
        }
        if ((f & C_DIGIT) && (prev & C_DIGIT) && (prev2 & C_UPPER) && (prev3 & C_UPPER))
            iban = 1;
        if (f & C_WORD) {
            run++;
            if (!(f & C_TOKEN))
                run_ascii = 0;
            else if (f & C_DIGIT)
                run_digits++;
            if (run >= 11)
                word_run_11 = 1;
        } else {
            if (run_ascii && run >= 32 && run <= 200 && run_digits >= 2)
                entropy = 1;
            run = run_digits = 0;
            run_ascii = 1;
        }
        prev3 = prev2;
        prev2 = prev;
        prev = f;
    }
    if (end - start < 15)
        return 0;
    if (iban || entropy)  /* an entropy candidate is a 32-character word: past the gate */
        return WORD_PATTERN;
    if (!word_run_11)
        return 0;
    int prefix = has_token_prefix(kind, data, start, end);
    return prefix > 0 ? WORD_PATTERN : prefix;
}

static int may_contain_pii(PyObject *text) { return may_contain_pii_from(text, 0); }

static int is_ascii_letter(Py_UCS4 c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* detectors.url_may_contain_pii: the scheme and host, matched by [A-Za-z][A-Za-z0-9+.-]*://[^/?#@]*,
 * cannot hold PII. The scheme class has no ":", so the first "://" after it is the only one the
 * pattern can match and no backtracking is needed. */
static int url_pii_in(int kind, const void *data, Py_ssize_t n) {
    if (find_char(kind, data, 0, n, '@') >= 0)
        return 1;
    Py_ssize_t i = 0;
    if (n > 0 && is_ascii_letter(PyUnicode_READ(kind, data, 0))) {
        i = 1;
        while (i < n) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (!(is_ascii_letter(c) || (c >= '0' && c <= '9') || c == '+' || c == '.' || c == '-'))
                break;
            i++;
        }
        if (i + 3 <= n && PyUnicode_READ(kind, data, i) == ':' && PyUnicode_READ(kind, data, i + 1) == '/'
            && PyUnicode_READ(kind, data, i + 2) == '/') {
            i += 3;
            while (i < n) {
                Py_UCS4 c = PyUnicode_READ(kind, data, i);
                if (c == '/' || c == '?' || c == '#' || c == '@')
                    break;
                i++;
            }
        } else {
            i = 0;
        }
    }
    return pii_in(kind, data, i, n);
}

static int url_may_contain_pii(PyObject *url) {
    return url_pii_in(PyUnicode_KIND(url), PyUnicode_DATA(url), PyUnicode_GET_LENGTH(url));
}

/* ---- small helpers ------------------------------------------------------------------------ */

/* str.lower() of a str, or the same object when it has no upper-case ASCII and no other case. */
static PyObject *lowered(PyObject *s) {
    if (PyUnicode_CheckExact(s) && PyUnicode_IS_ASCII(s)) {
        const Py_UCS1 *p = PyUnicode_1BYTE_DATA(s);
        Py_ssize_t n = PyUnicode_GET_LENGTH(s);
        Py_ssize_t i = 0;
        while (i < n && !(p[i] >= 'A' && p[i] <= 'Z'))
            i++;
        if (i == n)
            return Py_NewRef(s);
    }
    return PyObject_CallMethodNoArgs(s, s_lower);
}

/* Which rrweb node type ``obj`` equals, as ``kind == ELEMENT`` and friends compare in Python. */
static int node_kind(PyObject *obj) {
    if (obj == NULL)
        return OTHER;
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(obj, &overflow);
        return (!overflow && v >= 0 && v <= 5) ? (int)v : OTHER;
    }
    for (int k = 0; k <= 5; k++) {
        int eq = PyObject_RichCompareBool(obj, kind_objects[k], Py_EQ);
        if (eq < 0)
            return -2;
        if (eq)
            return k;
    }
    return OTHER;
}

static int starts_with_rr(PyObject *s) {
    return PyUnicode_GET_LENGTH(s) >= 3 && PyUnicode_READ_CHAR(s, 0) == 'r' && PyUnicode_READ_CHAR(s, 1) == 'r'
           && PyUnicode_READ_CHAR(s, 2) == '_';
}

/* mirror._link: parent.children[child_id] = None */
/* A Node's slot, read without the attribute protocol; NULL: not a Node whose slots we know. */
static inline PyObject **node_slot(PyObject *node, int slot) {
    if (slot_offsets[0] == 0 || Py_TYPE(node) != (PyTypeObject *)Node_type)
        return NULL;
    return (PyObject **)((char *)node + slot_offsets[slot]);
}

static int link_child(PyObject *parent, PyObject *child_id) {
    if (parent == Py_None)
        return 0;
    PyObject **slot = node_slot(parent, SLOT_CHILDREN);
    if (slot != NULL && *slot != NULL && PyDict_CheckExact(*slot))  /* mirror._link, the usual case */
        return PyDict_SetItem(*slot, child_id, Py_None);
    if (slot != NULL && *slot == Py_None) {  /* the first child */
        PyObject *d = PyDict_New();
        if (d == NULL || PyDict_SetItem(d, child_id, Py_None) < 0) {
            Py_XDECREF(d);
            return -1;
        }
        Py_SETREF(*slot, d);
        return 0;
    }
    PyObject *children = PyObject_GetAttr(parent, s_children);
    if (children == NULL)
        return -1;
    int rc;
    if (children == Py_None) {
        PyObject *d = PyDict_New();
        rc = d == NULL ? -1 : PyDict_SetItem(d, child_id, Py_None);
        if (rc == 0)
            rc = PyObject_SetAttr(parent, s_children, d);
        Py_XDECREF(d);
    } else {
        rc = PyDict_Check(children) ? PyDict_SetItem(children, child_id, Py_None)
                                    : PyObject_SetItem(children, child_id, Py_None);
    }
    Py_DECREF(children);
    return rc;
}

/* The class names of the block and mask selectors together, when every selector of both sets is
 * keyed by a class of one byte per character (the default policy's four), so that one scan of an
 * element's class attribute answers what two might_match calls answer: whether any of them occurs
 * in it. The texts are borrowed from the rule keys the walk holds. */
#define CLASS_NAMES 8
typedef struct {
    int usable, count;
    const unsigned char *text[CLASS_NAMES];
    Py_ssize_t len[CLASS_NAMES];
    unsigned char first[32]; /* bitmap of their first bytes */
} ClassNames;

static void class_names_add(ClassNames *c, PyObject *keys) {
    if (keys == NULL || !c->usable)
        return;
    PyObject *by_class = PyTuple_GET_ITEM(keys, 3), *name, *value;
    if (PyTuple_GET_ITEM(keys, 0) != Py_False || PyDict_GET_SIZE(PyTuple_GET_ITEM(keys, 1))
        || PyDict_GET_SIZE(PyTuple_GET_ITEM(keys, 2))) {
        c->usable = 0;
        return;
    }
    Py_ssize_t pos = 0;
    while (PyDict_Next(by_class, &pos, &name, &value)) {
        if (!PyUnicode_CheckExact(name) || PyUnicode_KIND(name) != PyUnicode_1BYTE_KIND
            || PyUnicode_GET_LENGTH(name) == 0 || c->count == CLASS_NAMES) {
            c->usable = 0;
            return;
        }
        const unsigned char *t = PyUnicode_1BYTE_DATA(name);
        c->text[c->count] = t;
        c->len[c->count++] = PyUnicode_GET_LENGTH(name);
        c->first[t[0] >> 3] |= (unsigned char)(1u << (t[0] & 7));
    }
}

/* Whether one of the class names occurs in the one-byte text h[:n] (a class attribute). */
static int class_names_scan(const ClassNames *c, const unsigned char *h, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!(c->first[h[i] >> 3] & (1u << (h[i] & 7))))
            continue;
        for (int k = 0; k < c->count; k++)
            if (c->len[k] <= n - i && h[i] == c->text[k][0] && memcmp(h + i, c->text[k], (size_t)c->len[k]) == 0)
                return 1;
    }
    return 0;
}

/* might_match(block) || might_match(mask) for an element's kept attributes, when c->usable: 1 a
 * class name occurs in its class attribute (or the attribute is no str), 0 none, -1 error, -2 ask
 * might_match (a class attribute of wider characters). */
static int class_names_in(const ClassNames *c, PyObject *attrs) {
    if (c->count == 0)
        return 0;
    PyObject *cls = PyDict_GetItemWithError(attrs, s_class);
    if (cls == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_Check(cls))
        return 1;
    if (PyUnicode_KIND(cls) != PyUnicode_1BYTE_KIND)
        return -2;
    return class_names_scan(c, PyUnicode_1BYTE_DATA(cls), PyUnicode_GET_LENGTH(cls));
}

/* ---- one walk ------------------------------------------------------------------------------ */

typedef struct {
    PyObject *walker, *mirror, *nodes, *leaves, *keep, *name_cache, *attr_selectors;
    MirrorTable *table; /* the mirror's rows of its last full snapshot, or NULL */
    PyObject *block_keys, *mask_keys; /* SelectorSet.rule_keys, or NULL for no selectors */
    ClassNames classes;                /* both, when they come down to class names */
    /* the context last looked at (contexts change rarely down a tree) */
    PyObject *ctx;
    int ctx_blocked, ctx_mask_text, ctx_kind; /* kind: 0 None, 1 "unknown", 2 "skip", 3 other */
    int mask_here; /* the sink's mask_is_mask_text: this loop may mask text itself (see masked_text) */
    /* The sink's memos of what it made of a URL / of a text a detector might match, when it says its
     * answer is a function of the value alone (Enforcer.memoized_by_value); else NULL. */
    PyObject *url_memo, *pii_memo;
} Walk;

static int read_ctx(Walk *w, PyObject *ctx) {
    if (ctx == w->ctx)
        return 0;
    PyObject *b = PyObject_GetAttr(ctx, s_blocked), *m = PyObject_GetAttr(ctx, s_mask_text),
             *k = PyObject_GetAttr(ctx, s_kind);
    int rc = -1;
    if (b != NULL && m != NULL && k != NULL) {
        int bt = PyObject_IsTrue(b), mt = PyObject_IsTrue(m);
        if (bt >= 0 && mt >= 0) {
            w->ctx_blocked = bt;
            w->ctx_mask_text = mt;
            if (k == Py_None)
                w->ctx_kind = 0;
            else if (PyUnicode_Check(k) && PyUnicode_Compare(k, s_unknown) == 0)
                w->ctx_kind = 1;
            else if (PyUnicode_Check(k) && PyUnicode_Compare(k, s_skip) == 0)
                w->ctx_kind = 2;
            else
                w->ctx_kind = 3;
            if (PyErr_Occurred())
                goto done;
            Py_XSETREF(w->ctx, Py_NewRef(ctx));
            rc = 0;
        }
    }
done:
    Py_XDECREF(b);
    Py_XDECREF(m);
    Py_XDECREF(k);
    return rc;
}

/* Whether the one-byte text h[0:n] holds w[0:m]. */
static int holds_bytes(const unsigned char *h, Py_ssize_t n, const unsigned char *w, Py_ssize_t m) {
    if (m == 0)
        return 1;
    if (m > n)
        return 0;
    for (const unsigned char *p = h, *last = h + n - m; p <= last; p++) {
        if ((p = memchr(p, w[0], (size_t)(last - p + 1))) == NULL)
            return 0;
        if (memcmp(p + 1, w + 1, (size_t)(m - 1)) == 0)
            return 1;
    }
    return 0;
}

/* Whether a SelectorSet's rule hash has an entry for this element (if not, no selector matches). */
static int might_match(PyObject *keys, PyObject *tag, PyObject *attrs) {
    if (keys == NULL)
        return 0;
    if (PyObject_IsTrue(PyTuple_GET_ITEM(keys, 0)))
        return 1;
    PyObject *by_tag = PyTuple_GET_ITEM(keys, 1), *by_id = PyTuple_GET_ITEM(keys, 2),
             *by_class = PyTuple_GET_ITEM(keys, 3);
    int r;
    if (PyDict_GET_SIZE(by_tag) && (r = PyDict_Contains(by_tag, tag)) != 0)
        return r;
    if (PyDict_GET_SIZE(by_id)) {
        PyObject *id = PyDict_GetItemWithError(attrs, s_id);
        if (id != NULL && (r = PyDict_Contains(by_id, id)) != 0)
            return r;
        if (PyErr_Occurred())
            return -1;
    }
    if (PyDict_GET_SIZE(by_class)) {
        PyObject *cls = PyDict_GetItemWithError(attrs, s_class);
        if (cls == NULL)
            return PyErr_Occurred() ? -1 : 0;
        if (!PyUnicode_Check(cls))
            return 1;  /* let SelectorSet.matches deal with it */
        /* A class name of the table can only be among the element's classes if it occurs in the
         * attribute: a substring search per name of the table (a handful) instead of a split. */
        PyObject *name, *value;
        Py_ssize_t pos = 0, n = PyUnicode_GET_LENGTH(cls);
        int bytes = PyUnicode_KIND(cls) == PyUnicode_1BYTE_KIND;
        while (PyDict_Next(by_class, &pos, &name, &value)) {
            if (!PyUnicode_Check(name))
                return 1;
            if (bytes && PyUnicode_KIND(name) == PyUnicode_1BYTE_KIND) {
                /* both one byte per character: a memchr for the first, without PyUnicode_Find's
                 * set-up per call (class attributes are short, and most hold no first letter) */
                if (holds_bytes(PyUnicode_DATA(cls), n, PyUnicode_DATA(name), PyUnicode_GET_LENGTH(name)))
                    return 1;
                continue;
            }
            Py_ssize_t at = PyUnicode_Find(cls, name, 0, n, 1);
            if (at != -1)
                return at == -2 ? -1 : 1;
        }
    }
    return 0;
}

/* SessionMirror.add for an id the mirror does not hold yet (else the Python method runs). */
static PyObject *mirror_add(Walk *w, PyObject *sid, PyObject *tag, PyObject *attrs, PyObject *parent) {
    int known = PyDict_Contains(w->nodes, sid);
    if (known < 0)
        return NULL;
    if (known || table_row(w->table, 0, sid) >= 0)
        return PyObject_CallMethodObjArgs(w->mirror, s_add, sid, tag, attrs, parent, NULL);
    PyObject *kept = NULL, *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        if (!PyUnicode_Check(value))
            continue;
        int keep = PySet_Contains(w->keep, key);
        if (keep < 0)
            goto fail;
        if (!keep)
            continue;
        if (kept == NULL && (kept = PyDict_New()) == NULL)
            goto fail;
        if (PyDict_SetItem(kept, key, value) < 0)
            goto fail;
    }
    PyObject *node = new_node(sid, tag, kept != NULL ? kept : EMPTY_ATTRS, parent);
    Py_XDECREF(kept);
    if (node == NULL)
        return NULL;
    if (PyDict_SetItem(w->nodes, sid, node) < 0 || table_claim(w->table, 0, sid) < 0 || link_child(parent, sid) < 0)
        goto fail_node;
    if (PyUnicode_Compare(tag, s_input) == 0) {
        PyObject *r = PyObject_CallMethodObjArgs(w->mirror, s_note_password, node, Py_None, NULL);
        if (r == NULL)
            goto fail_node;
        Py_DECREF(r);
    }
    return node;
fail_node:
    Py_DECREF(node);
    return NULL;
fail:
    Py_XDECREF(kept);
    return NULL;
}

/* SessionMirror.add_leaf */
static int mirror_add_leaf(Walk *w, PyObject *sid, PyObject *parent) {
    int known = PyDict_Contains(w->leaves, sid);
    if (known < 0)
        return -1;
    if (known || table_row(w->table, 1, sid) >= 0) {
        PyObject *r = PyObject_CallMethodObjArgs(w->mirror, s_add_leaf, sid, parent, NULL);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    if (PyDict_SetItem(w->leaves, sid, parent) < 0 || table_claim(w->table, 1, sid) < 0)
        return -1;
    return link_child(parent, sid);
}

/* Enforcer.text(..., must_mask=True): detectors.mask_text(value), or value itself when it is already
 * only "*" and whitespace (detectors.is_masked). Whitespace is re's \s for str patterns, which is
 * Py_UNICODE_ISSPACE, as str.isspace. */
static PyObject *masked_text(PyObject *value) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    int kind = PyUnicode_KIND(value);
    const void *data = PyUnicode_DATA(value);
    Py_UCS4 maxchar = '*';
    int changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (Py_UNICODE_ISSPACE(c)) {
            if (c > maxchar)
                maxchar = c;
        } else if (c != '*') {
            changed = 1;
        }
    }
    if (!changed)
        return Py_NewRef(value);
    PyObject *out = PyUnicode_New(n, maxchar);
    if (out == NULL)
        return NULL;
    int out_kind = PyUnicode_KIND(out);
    void *out_data = PyUnicode_DATA(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        PyUnicode_WRITE(out_kind, out_data, i, Py_UNICODE_ISSPACE(c) ? c : '*');
    }
    return out;
}

/* What the configured sets say of a lower-cased attribute or tag name: the same for every policy,
 * so the walks keep them in their name table instead of asking the sets for every attribute. */
enum { LOWER_URL = 1, LOWER_STRUCTURAL = 2, LOWER_RR = 4, LOWER_VALUE = 8, LOWER_CONTEXT_TAG = 16,
       LOWER_FIELD_TAG = 32 };

static int name_flags(PyObject *lname) {
    PyObject *const sets[] = {URL_ATTRIBUTES, STRUCTURAL, CONTEXT_TAGS, FIELD_TAGS};
    const int bits[] = {LOWER_URL, LOWER_STRUCTURAL, LOWER_CONTEXT_TAG, LOWER_FIELD_TAG};
    int flags = 0;
    for (int i = 0; i < 4; i++) {
        int r = PySet_Contains(sets[i], lname);
        if (r < 0)
            return -1;
        if (r)
            flags |= bits[i];
    }
    if (starts_with_rr(lname))
        flags |= LOWER_RR;
    if (PyUnicode_Compare(lname, s_value) == 0)
        flags |= LOWER_VALUE;
    return PyErr_Occurred() ? -1 : flags;
}

static int is_ascii(const unsigned char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] & 0x80)
            return 0;
    return 1;
}

/* str objects for the attribute names and tags the walks meet, as they are and lower-cased:
 * a few dozen names make up nearly every attribute of every page. ASCII names of up to 32 bytes;
 * the table is emptied when full (names come from pages). */
#define NAME_SLOTS 1024
#define NAME_BYTES 32
typedef struct {
    unsigned char len;
    char text[NAME_BYTES];
    PyObject *name, *lower;
    int flags;  /* name_flags(lower), and NAME_STRUCTURAL */
    /* Whether the last mirror's keep set asked holds the name (mirrors of one policy share theirs
     * in value, not always in identity: the set is held so its address is not reused). */
    PyObject *keep_set;
    int kept;
} NameEntry;
enum { NAME_STRUCTURAL = 64 };  /* the name as written is in STRUCTURAL (_element_attributes' test) */
static NameEntry names[NAME_SLOTS];
static int names_used;

static void names_clear(void) {
    for (int i = 0; i < NAME_SLOTS; i++) {
        Py_CLEAR(names[i].name);
        Py_CLEAR(names[i].lower);
        Py_CLEAR(names[i].keep_set);
        names[i].len = 0;
    }
    names_used = 0;
}

/* The entry for an ASCII name (borrowed references in it); NULL with an exception set on error,
 * NULL without one when the name is not ASCII or too long (the caller hands the node to Python). */
static NameEntry *name_entry(const unsigned char *s, Py_ssize_t len) {
    if (len > NAME_BYTES || !is_ascii(s, len))
        return NULL;
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < len; i++)
        h = (h ^ s[i]) * 16777619u;
    for (int probe = 0; probe < 8; probe++) {
        NameEntry *e = &names[(h + (uint32_t)probe) % NAME_SLOTS];
        if (e->name != NULL) {
            if (e->len == len && memcmp(e->text, s, (size_t)len) == 0)
                return e;
            continue;
        }
        if (names_used >= NAME_SLOTS / 2) {
            names_clear();
            return name_entry(s, len);
        }
        PyObject *name = PyUnicode_FromStringAndSize((const char *)s, len);
        if (name == NULL)
            return NULL;
        PyObject *lower = lowered(name);
        if (lower == NULL) {
            Py_DECREF(name);
            return NULL;
        }
        PyUnicode_InternInPlace(&name);
        int flags = name_flags(lower), structural = flags < 0 ? -1 : PySet_Contains(STRUCTURAL, name);
        if (structural < 0) {
            Py_DECREF(name);
            Py_DECREF(lower);
            return NULL;
        }
        e->flags = flags | (structural ? NAME_STRUCTURAL : 0);
        e->name = name;
        e->lower = lower;
        e->len = (unsigned char)len;
        memcpy(e->text, s, (size_t)len);
        names_used++;
        return e;
    }
    names_clear();
    return name_entry(s, len);
}

/* The name table's entry for a decoded walk's attribute name when it is a short ASCII str; NULL
 * otherwise (or with an exception set on error). */
static NameEntry *short_name_entry(PyObject *name) {
    if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_ASCII(name) || PyUnicode_GET_LENGTH(name) > NAME_BYTES)
        return NULL;
    return name_entry(PyUnicode_1BYTE_DATA(name), PyUnicode_GET_LENGTH(name));
}

/* Walker._attribute for a value of an element that is not an <option>: 1 it would return the value
 * as it is and call no sink; 2 it would mask the value as text (a name the rules mask, and a sink
 * whose masking this loop may do itself); VERDICT_URL sink.url decides, VERDICT_PII
 * sink.attribute(..., False) decides (a detector might match), either a function of the value the
 * sink may remember; 0 Python must decide; -1 error. flags: name_flags(lname). */
enum { VERDICT_URL = 3, VERDICT_PII = 4 };

static int attribute_verdict(Walk *w, PyObject *lname, int flags, int kind, const void *data, Py_ssize_t len) {
    int r;
    if (flags & LOWER_URL) {
        if (find_char(kind, data, 0, len, '=') >= 0)
            return VERDICT_URL;
        r = url_pii_in(kind, data, len);
        return r < 0 ? -1 : r ? VERDICT_URL : 1;
    }
    if (flags & (LOWER_STRUCTURAL | LOWER_RR))
        return 1;
    if (flags & LOWER_VALUE)
        return 0;
    /* Rules.attribute_masked: a name the rules mask, or one with selector rules, goes to Python. */
    PyObject *masked = PyDict_GetItemWithError(w->name_cache, lname);
    if (masked == Py_True && w->mask_here)
        return 2;  /* Rules.attribute_masked is true by name whatever the node: title, aria-label... */
    if (masked != Py_False)
        return PyErr_Occurred() ? -1 : 0;
    if ((r = PyDict_Contains(w->attr_selectors, lname)) != 0)
        return r < 0 ? -1 : 0;
    r = pii_in(kind, data, 0, len);
    return r < 0 ? -1 : r ? VERDICT_PII : 1;
}

/* What the sink made of ``value`` before, by its memo (enforce._memoized), where the sink says its
 * answer is a function of the value alone: 1 the same value, 2 another (*out, a new reference), 0
 * not remembered (Python decides, and the memo learns it), -1 error. Links and page text repeat on
 * every page of a site, in every snapshot and in the subtrees mutations add. */
static int remembered(PyObject *memo, PyObject *value, PyObject **out) {
    if (memo == NULL)
        return 0;
    PyObject *known = PyDict_GetItemWithError(memo, value);
    if (known == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_CheckExact(known))
        return 1;  /* the memo's "unchanged" mark */
    *out = Py_NewRef(known);
    return 2;
}

/* Walker._element_attributes for an element that is not an <option>. */
static int element_attributes(Walk *w, PyObject *node, PyObject *tag, PyObject *attrs) {
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(attrs, &pos, &name, &value)) {
        /* The name table knows a short ASCII name's memberships and its lower-cased form. */
        NameEntry *e = short_name_entry(name);
        if (e == NULL && PyErr_Occurred())
            return -1;
        int r = e != NULL ? (e->flags & NAME_STRUCTURAL) != 0 : PySet_Contains(STRUCTURAL, name);
        if (r < 0)
            return -1;
        if (r || !PyUnicode_CheckExact(value) || PyUnicode_GET_LENGTH(value) == 0)
            continue;
        int flags = e != NULL ? e->flags : -1;
        PyObject *lname = e != NULL ? Py_NewRef(e->lower) : lowered(name);
        if (lname == NULL)
            return -1;
        if (flags < 0 && PyUnicode_Check(lname))
            flags = name_flags(lname);
        int same = flags >= 0 ? attribute_verdict(w, lname, flags, PyUnicode_KIND(value), PyUnicode_DATA(value),
                                                  PyUnicode_GET_LENGTH(value))
                   : PyErr_Occurred() ? -1 : 0;
        if (same == VERDICT_URL || same == VERDICT_PII) {
            PyObject *known = NULL;
            same = remembered(same == VERDICT_URL ? w->url_memo : w->pii_memo, value, &known);
            if (same == 2) {
                same = PyDict_SetItem(attrs, name, known) < 0 ? -1 : 1;
                Py_DECREF(known);
            }
        }
        if (same == 0 || same == 2) {
            Py_INCREF(value);  /* the sink may drop the dict's reference when it replaces it */
            PyObject *new = same == 2 ? masked_text(value)
                                      : PyObject_CallMethodObjArgs(w->walker, s_attribute, node, tag, lname, value, NULL);
            if (new != NULL && new != value && PyDict_SetItem(attrs, name, new) < 0)
                Py_CLEAR(new);
            Py_DECREF(value);
            same = new == NULL ? -1 : 1;
            Py_XDECREF(new);
        }
        Py_DECREF(lname);
        if (same < 0)
            return -1;
    }
    return 0;
}

/* The element steps; returns the children's context (new reference), Py_None to skip them. */
static PyObject *element(Walk *w, PyObject *sn, PyObject *sid, PyObject *parent, PyObject *ctx, PyObject **node_out) {
    PyObject *tag = NULL, *attrs = NULL, *node = NULL, *result = NULL;
    PyObject *raw = PyDict_GetItemWithError(sn, s_tagName);
    if (raw == NULL && PyErr_Occurred())
        return NULL;
    int truthy = raw == NULL ? 0 : PyObject_IsTrue(raw);
    if (truthy < 0)
        return NULL;
    if (!truthy) {
        tag = Py_NewRef(s_empty);
    } else {
        PyObject *text = PyUnicode_CheckExact(raw) ? Py_NewRef(raw) : PyObject_Str(raw);
        if (text == NULL)
            return NULL;
        tag = lowered(text);
        Py_DECREF(text);
        if (tag == NULL)
            return NULL;
    }
    attrs = PyDict_GetItemWithError(sn, s_attributes);
    if (attrs == NULL && PyErr_Occurred())
        goto done;
    attrs = (attrs != NULL && PyDict_Check(attrs)) ? Py_NewRef(attrs) : PyDict_New();
    if (attrs == NULL)
        goto done;
    node = mirror_add(w, sid, tag, attrs, parent);
    if (node == NULL)
        goto done;
    if (read_ctx(w, ctx) < 0)
        goto done;
    /* The fast path is Walker._element when nothing in it applies: no block or mask selector can
     * match, the element changes no context (_enter), it is no form field and no <option>. */
    PyObject **kept_slot = node_slot(node, SLOT_ATTRS);
    PyObject *kept = kept_slot != NULL && *kept_slot != NULL ? Py_NewRef(*kept_slot) : PyObject_GetAttr(node, s_attrs);
    if (kept == NULL)
        goto done;
    int slow = w->classes.usable && !w->ctx_blocked && !w->ctx_mask_text ? class_names_in(&w->classes, kept) : -2;
    if (slow == -2) {
        slow = 0;
        if (!w->ctx_blocked)
            slow = might_match(w->block_keys, tag, kept);
        if (slow == 0 && !w->ctx_mask_text)
            slow = might_match(w->mask_keys, tag, kept);
    }
    if (slow == 0)
        slow = PySet_Contains(CONTEXT_TAGS, tag);
    if (slow == 0)
        slow = PySet_Contains(FIELD_TAGS, tag);
    if (slow == 0)
        slow = PyDict_Contains(kept, s_contenteditable);
    Py_DECREF(kept);
    if (slow < 0)
        goto done;
    if (slow) {
        result = PyObject_CallMethodObjArgs(w->walker, s_element, sn, node, attrs, ctx, NULL);
    } else if (element_attributes(w, node, tag, attrs) == 0) {
        result = Py_NewRef(ctx);
    }
done:
    Py_XDECREF(tag);
    Py_XDECREF(attrs);
    if (result != NULL)
        *node_out = node;
    else
        Py_XDECREF(node);
    return result;
}

static int leaf_text(Walk *w, PyObject *sn, int kind, PyObject *parent, PyObject *ctx) {
    PyObject *value = PyDict_GetItemWithError(sn, s_textContent);
    if (value == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_Check(value) || PyUnicode_GET_LENGTH(value) == 0)
        return 0;
    if (read_ctx(w, ctx) < 0)
        return -1;
    /* Walker._leaf_text / _text return the value untouched: */
    if (kind == TEXT && w->ctx_kind == 2)  /* style and script text */
        return 0;
    int plain = kind != TEXT || w->ctx_kind <= 1; /* not in a textarea, option or contenteditable */
    if (plain && !w->ctx_mask_text) {
        int pii = may_contain_pii(value);
        if (pii <= 0)
            return pii;  /* page text, comments: nothing to mask and nothing a detector could find */
        PyObject *known = NULL;  /* else Walker._leaf_text is sink.text(parent, value, False) */
        int r = remembered(w->pii_memo, value, &known);
        if (r == 2) {
            r = PyDict_SetItem(sn, s_textContent, known);
            Py_DECREF(known);
            return r;
        }
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    Py_INCREF(value);
    PyObject *new = plain && w->ctx_mask_text && w->mask_here
                        ? masked_text(value)  /* under a mask selector (or unknown ancestry): sink.text(..., True) */
                        : PyObject_CallMethodObjArgs(w->walker, s_leaf_text, kind_objects[kind], parent, ctx, value, NULL);
    int rc = 0;
    if (new == NULL)
        rc = -1;
    else if (new != value)
        rc = PyDict_SetItem(sn, s_textContent, new);
    Py_XDECREF(new);
    Py_DECREF(value);
    return rc;
}

typedef struct {
    PyObject *sn, *parent, *ctx;
} Frame;

typedef struct {
    Frame *items;
    Py_ssize_t len, cap;
} Stack;

static int push(Stack *s, PyObject *sn, PyObject *parent, PyObject *ctx) {
    if (s->len == s->cap) {
        Py_ssize_t cap = s->cap ? s->cap * 2 : 64;
        Frame *items = PyMem_Realloc(s->items, (size_t)cap * sizeof(Frame));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->items = items;
        s->cap = cap;
    }
    s->items[s->len++] = (Frame){Py_NewRef(sn), Py_NewRef(parent), Py_NewRef(ctx)};
    return 0;
}

static int walk_one(Walk *w, Stack *stack, Frame f) {
    PyObject *sid = PyDict_GetItemWithError(f.sn, s_id);
    if (sid == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyLong_Check(sid))
        return 0;
    Py_INCREF(sid);
    PyObject *kind_obj = PyDict_GetItemWithError(f.sn, s_type);
    int kind = (kind_obj == NULL && PyErr_Occurred()) ? -2 : node_kind(kind_obj);
    PyObject *node = NULL, *child_ctx = NULL;
    int rc = -1;
    if (kind == -2)
        goto done;
    if (kind == ELEMENT) {
        child_ctx = element(w, f.sn, sid, f.parent, f.ctx, &node);
        if (child_ctx == NULL)
            goto done;
        if (child_ctx == Py_None) {
            rc = 0;
            goto done;
        }
    } else if (kind == TEXT || kind == COMMENT || kind == CDATA) {
        if (mirror_add_leaf(w, sid, f.parent) == 0)
            rc = leaf_text(w, f.sn, kind, f.parent, f.ctx);
        goto done;
    } else if (kind == DOCUMENT) {
        node = PyObject_CallMethodObjArgs(w->mirror, s_add, sid, s_document, Py_None, f.parent, NULL);
        if (node == NULL)
            goto done;
        child_ctx = Py_NewRef(f.ctx);
    } else {
        rc = mirror_add_leaf(w, sid, f.parent);  /* doctype */
        goto done;
    }
    PyObject *children = PyDict_GetItemWithError(f.sn, s_childNodes);
    if (children == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    rc = 0;
    if (PyList_Check(children)) {
        Py_INCREF(children);
        for (Py_ssize_t i = PyList_GET_SIZE(children) - 1; i >= 0 && rc == 0; i--) {
            if (i >= PyList_GET_SIZE(children))
                continue;
            PyObject *child = PyList_GET_ITEM(children, i);
            if (PyDict_Check(child))
                rc = push(stack, child, node, child_ctx);
        }
        Py_DECREF(children);
    }
done:
    Py_DECREF(sid);
    Py_XDECREF(node);
    Py_XDECREF(child_ctx);
    return rc;
}

static PyObject *rule_keys(PyObject *selectors) {
    if (selectors == Py_None)
        return NULL;
    PyObject *keys = PyObject_GetAttr(selectors, s_rule_keys);
    if (keys != NULL && !(PyTuple_Check(keys) && PyTuple_GET_SIZE(keys) == 4 && PyDict_Check(PyTuple_GET_ITEM(keys, 1))
                          && PyDict_Check(PyTuple_GET_ITEM(keys, 2)) && PyDict_Check(PyTuple_GET_ITEM(keys, 3)))) {
        Py_DECREF(keys);
        PyErr_SetString(PyExc_TypeError, "SelectorSet.rule_keys must be (bool, dict, dict, dict)");
        return NULL;
    }
    return keys;
}

static void walk_clear(Walk *w) {
    Py_CLEAR(w->mirror);
    Py_CLEAR(w->nodes);
    Py_CLEAR(w->leaves);
    Py_CLEAR(w->table);
    Py_CLEAR(w->keep);
    Py_CLEAR(w->name_cache);
    Py_CLEAR(w->attr_selectors);
    Py_CLEAR(w->block_keys);
    Py_CLEAR(w->mask_keys);
    Py_CLEAR(w->ctx);
    Py_CLEAR(w->url_memo);
    Py_CLEAR(w->pii_memo);
}

/* A sink's class flag (mask_is_mask_text, memoized_by_value): 1 when True, 0 when not or absent, -1 error. */
static int sink_flag(PyObject *sink, PyObject *name) {
    PyObject *flag = PyObject_GetAttr(sink, name);
    if (flag == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    int r = flag == Py_True;
    Py_DECREF(flag);
    return r;
}

static int walk_init(Walk *w, PyObject *walker) {
    PyObject *rules = NULL, *block = NULL, *mask = NULL;
    int rc = -1;
    w->walker = walker;
    if ((w->mirror = PyObject_GetAttr(walker, s_mirror)) == NULL || (rules = PyObject_GetAttr(walker, s_rules)) == NULL
        || (w->nodes = PyObject_GetAttr(w->mirror, s_nodes)) == NULL
        || (w->leaves = PyObject_GetAttr(w->mirror, s_leaves)) == NULL
        || (w->keep = PyObject_GetAttr(w->mirror, s_keep)) == NULL
        || (w->name_cache = PyObject_GetAttr(rules, s_name_cache)) == NULL
        || (w->attr_selectors = PyObject_GetAttr(rules, s_attr_selectors)) == NULL
        || (block = PyObject_GetAttr(walker, s_block)) == NULL || (mask = PyObject_GetAttr(walker, s_mask)) == NULL)
        goto done;
    if (!PyDict_Check(w->nodes) || !PyDict_Check(w->leaves) || !PyAnySet_Check(w->keep) || !PyDict_Check(w->name_cache)
        || !PyDict_Check(w->attr_selectors)) {
        PyErr_SetString(PyExc_TypeError, "walker's mirror or rules are not what _native_walk expects");
        goto done;
    }
    PyObject *table = PyObject_GetAttr(w->mirror, s_table);
    if (table == NULL)
        goto done;
    if (Py_IS_TYPE(table, &MirrorTable_Type))
        w->table = (MirrorTable *)table;
    else
        Py_DECREF(table);
    if ((w->block_keys = rule_keys(block)) == NULL && PyErr_Occurred())
        goto done;
    PyObject *sink = PyObject_GetAttr(walker, s_sink);
    if (sink == NULL)
        goto done;
    w->mask_here = sink_flag(sink, s_mask_is_mask_text);
    int by_value = w->mask_here < 0 ? -1 : sink_flag(sink, s_memoized_by_value);
    Py_DECREF(sink);
    if (by_value < 0)
        goto done;
    if (by_value) {
        if ((w->url_memo = PyObject_GetAttr(rules, s_scrubbed_urls)) == NULL
            || (w->pii_memo = PyObject_GetAttr(rules, s_pii_masked)) == NULL)
            goto done;
        if (!PyDict_Check(w->url_memo) || !PyDict_Check(w->pii_memo)) {
            PyErr_SetString(PyExc_TypeError, "Rules.scrubbed_urls and Rules.pii_masked must be dicts");
            goto done;
        }
    }
    if ((w->mask_keys = rule_keys(mask)) == NULL && PyErr_Occurred())
        goto done;
    memset(&w->classes, 0, sizeof w->classes);
    w->classes.usable = 1;
    class_names_add(&w->classes, w->block_keys);
    class_names_add(&w->classes, w->mask_keys);
    rc = 0;
done:
    Py_XDECREF(rules);
    Py_XDECREF(block);
    Py_XDECREF(mask);
    return rc;
}

static int configured(void) {
    if (Node_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_native_walk.configure() was not called");
        return 0;
    }
    return 1;
}

/* Walker._walk's loop over one serialized subtree, with the walk state already read. */
static int walk_tree(Walk *w, Stack *stack, PyObject *root, PyObject *parent, PyObject *ctx) {
    int rc = push(stack, root, parent, ctx);
    while (rc == 0 && stack->len) {
        Frame f = stack->items[--stack->len];
        rc = walk_one(w, stack, f);
        Py_DECREF(f.sn);
        Py_DECREF(f.parent);
        Py_DECREF(f.ctx);
    }
    while (stack->len) {
        Frame f = stack->items[--stack->len];
        Py_DECREF(f.sn);
        Py_DECREF(f.parent);
        Py_DECREF(f.ctx);
    }
    return rc;
}

static PyObject *walk(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "walk(walker, root, parent, ctx)");
        return NULL;
    }
    if (!configured())
        return NULL;
    if (!PyDict_Check(args[1]))
        Py_RETURN_NONE;
    Walk w = {0};
    Stack stack = {0};
    int rc = walk_init(&w, args[0]);
    if (rc == 0)
        rc = walk_tree(&w, &stack, args[1], args[2], args[3]);
    PyMem_Free(stack.items);
    walk_clear(&w);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Walker._enter(el, ctx) would return ctx itself: no mask selector can match el, it is not
 * blocked, no <textarea>/<option>/<style>/<script>, not contenteditable. 1 yes, 0 ask _enter. */
static int enter_unchanged(Walk *w, PyObject *el, PyObject *ctx) {
    PyObject **tag = node_slot(el, SLOT_TAG), **attrs = node_slot(el, SLOT_ATTRS), **flags = node_slot(el, SLOT_FLAGS);
    if (tag == NULL || *tag == NULL || *attrs == NULL || *flags == NULL || !PyUnicode_Check(*tag)
        || !PyDict_Check(*attrs) || !PyLong_CheckExact(*flags))
        return 0;
    long f = PyLong_AsLong(*flags);
    if (f == -1 && PyErr_Occurred())
        return -1;
    if (f & BLOCKED_FLAG)
        return 0;
    if (read_ctx(w, ctx) < 0)
        return -1;
    int r = w->ctx_mask_text ? 0 : might_match(w->mask_keys, *tag, *attrs);
    if (r == 0)
        r = PySet_Contains(CONTEXT_TAGS, *tag);
    if (r == 0)
        r = PyDict_Contains(*attrs, s_contenteditable);
    return r < 0 ? -1 : !r;
}

/* Walker._ctx_of(node): the context of the nearest ancestor the memo knows, carried down the chain
 * of the others (each remembered); Python's _ctx_of when no ancestor is known (the page's root). */
static PyObject *ctx_of(Walk *w, PyObject *memo, PyObject *node) {
    PyObject **chain = NULL, *n = node, *ctx = NULL;
    Py_ssize_t len = 0, cap = 0;
    while (n != Py_None && (ctx = PyDict_GetItemWithError(memo, n)) == NULL) {
        PyObject **parent = node_slot(n, SLOT_PARENT);
        if (PyErr_Occurred() || parent == NULL || *parent == NULL)
            break;
        if (len == cap) {
            cap = cap ? cap * 2 : 32;
            PyObject **grown = PyMem_Realloc(chain, (size_t)cap * sizeof(PyObject *));
            if (grown == NULL) {
                ctx = NULL;
                PyErr_NoMemory();
                break;
            }
            chain = grown;
        }
        chain[len++] = Py_NewRef(n);  /* held: _enter runs Python code between here and the end */
        n = *parent;
    }
    if (ctx == NULL) {
        for (Py_ssize_t i = 0; i < len; i++)
            Py_DECREF(chain[i]);
        PyMem_Free(chain);
        return PyErr_Occurred() ? NULL : PyObject_CallMethodObjArgs(w->walker, s_ctx_of, node, NULL);
    }
    Py_INCREF(ctx);
    for (Py_ssize_t i = len - 1; i >= 0 && ctx != NULL; i--) {
        PyObject **tag = node_slot(chain[i], SLOT_TAG);
        int same = 1;
        if (tag != NULL && *tag != NULL && PyUnicode_Check(*tag) && PyUnicode_GET_LENGTH(*tag) > 0
            && PyUnicode_READ_CHAR(*tag, 0) == '#')
            same = 1;  /* #document, #text...: not an element */
        else
            same = enter_unchanged(w, chain[i], ctx);
        if (same == 0)
            Py_SETREF(ctx, PyObject_CallMethodObjArgs(w->walker, s_enter, chain[i], ctx, NULL));
        else if (same < 0)
            Py_CLEAR(ctx);
        if (ctx != NULL && PyDict_SetItem(memo, chain[i], ctx) < 0)
            Py_CLEAR(ctx);
    }
    for (Py_ssize_t i = 0; i < len; i++)
        Py_DECREF(chain[i]);
    PyMem_Free(chain);
    return ctx;
}

/* SessionMirror.get(id) for an int id: a new reference, or NULL (none; or an error). */
static PyObject *mirrored(Walk *w, PyObject *id) {
    PyObject *node = PyDict_GetItemWithError(w->nodes, id);
    if (node == NULL && !PyErr_Occurred()) {
        int32_t r = table_row(w->table, 0, id);
        if (r >= 0)
            node = table_node(w->table, r);
    }
    return Py_XNewRef(node);
}

/* Walker._memo (elements' inherited contexts, which ctx_of reads and fills): a new reference, or NULL. */
static PyObject *walker_memo(PyObject *walker) {
    PyObject *memo = PyObject_GetAttr(walker, s_memo);
    if (memo != NULL && !PyDict_Check(memo)) {
        Py_DECREF(memo);
        PyErr_SetString(PyExc_TypeError, "Walker._memo must be a dict");
        return NULL;
    }
    return memo;
}

/* Walker._add_round: the adds of one mutation whose parent is mirrored, in order (appended to
 * ``kept``); returns those whose parent is not (yet). The parent's context comes from the walker's
 * memo, else from Walker._ctx_of; an add under a blocked parent goes to Walker._add_under. */
static PyObject *add_round(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[1]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "add_round(walker, pending: list, kept: list)");
        return NULL;
    }
    if (!configured())
        return NULL;
    PyObject *walker = args[0], *pending = args[1], *kept = args[2];
    Walk w = {0};
    Stack stack = {0};
    PyObject *memo = NULL, *deferred = PyList_New(0);
    int rc = deferred == NULL ? -1 : walk_init(&w, walker);
    if (rc == 0 && (memo = walker_memo(walker)) == NULL)
        rc = -1;
    Py_INCREF(pending);
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(pending); i++) {
        PyObject *item = Py_NewRef(PyList_GET_ITEM(pending, i));
        PyObject *parent = NULL, *ctx = NULL, *node = NULL;
        if (!PyDict_Check(item))
            goto next;  /* no add: dropped */
        node = PyDict_GetItemWithError(item, s_node);
        if (node == NULL || !PyDict_Check(node)) {
            rc = node == NULL && PyErr_Occurred() ? -1 : 0;
            node = NULL;
            goto next;
        }
        Py_INCREF(node);
        PyObject *pid = PyDict_GetItemWithError(item, s_parentId);
        if (pid == NULL && PyErr_Occurred()) {
            rc = -1;
            goto next;
        }
        if (pid != NULL && PyLong_Check(pid) && (parent = mirrored(&w, pid)) == NULL && PyErr_Occurred()) {
            rc = -1;
            goto next;
        }
        if (parent == NULL || parent == Py_None) {
            rc = PyList_Append(deferred, item);
            goto next;
        }
        if ((ctx = ctx_of(&w, memo, parent)) == NULL) {  /* the memo's, when it knows the parent */
            rc = -1;
            goto next;
        }
        if ((rc = read_ctx(&w, ctx)) < 0)
            goto next;
        if (w.ctx_blocked) {
            PyObject *r = PyObject_CallMethodObjArgs(walker, s_add_under, item, parent, ctx, kept, NULL);
            rc = r == NULL ? -1 : 0;
            Py_XDECREF(r);
            goto next;
        }
        rc = walk_tree(&w, &stack, node, parent, ctx);
        if (rc == 0)
            rc = PyList_Append(kept, item);
    next:
        Py_DECREF(item);
        Py_XDECREF(node);
        Py_XDECREF(parent);
        Py_XDECREF(ctx);
    }
    Py_DECREF(pending);
    Py_XDECREF(memo);
    PyMem_Free(stack.items);
    walk_clear(&w);
    if (rc < 0) {
        Py_XDECREF(deferred);
        return NULL;
    }
    return deferred;
}

/* ---- the walk over a packed full snapshot ----------------------------------------------------
 * walk_packed(walker, event, delegate): Walker.event for a full snapshot given as msgpack (what
 * _json_to_msgpack.c writes), returning the event's bytes with the policy applied, without
 * decoding it into Python objects.
 *
 * A full snapshot's tree is walked from the ROOT context, and the fast path of the loop above
 * never changes the context, so every node this loop keeps for itself is walked in ROOT. For
 * each node it proves the same thing the loop above proves (the Python steps would change
 * nothing and call no sink), does the mirror's bookkeeping, and goes on to the children. Any node
 * it cannot prove that for (a form field, a <script>, a URL with parameters, text a detector
 * might match, a selector candidate, an id the mirror already holds, a value of an unusual type)
 * is handed whole, subtree included, to ``delegate(node_bytes, parent)``, which decodes it and
 * runs Walker._walk on it from ROOT, exactly what the ordinary walk does at that point of the
 * pre-order. So both walks make the same mirror and the same bytes; tests compare them.
 * The one value changed here is an attribute the rules mask by name (Enforcer.text, mask_text).
 *
 * The bytes are checked whole before the walk starts (a malformed event raises ValueError and
 * changes nothing); after that every read is still bounds-checked. */

enum { MP_BAD, MP_NIL, MP_BOOL, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT };

typedef struct {
    int type;
    Py_ssize_t start;          /* where the value's header starts */
    Py_ssize_t data, len;      /* str/bin: the payload; array/map: elements (maps: pairs) */
    long long i;               /* int (an unsigned over 2**63 reads as overflow = 1) */
    int overflow;
} MpValue;

static inline uint32_t be16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t be64(const unsigned char *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* Reads the header at *pos into v and moves *pos past it (past a scalar's payload too; an array's
 * or map's elements follow). 0, or -1 when the bytes end early or hold an unknown type. */
static int mp_head_any(const unsigned char *b, Py_ssize_t n, Py_ssize_t *pos, MpValue *v) {
    Py_ssize_t p = *pos;
    if (p >= n)
        return -1;
    unsigned c = b[p++];
    Py_ssize_t need = 0;
    v->start = *pos;
    v->overflow = 0;
    if (c <= 0x7f || c >= 0xe0) {
        v->type = MP_INT;
        v->i = c <= 0x7f ? (long long)c : (long long)(signed char)c;
    } else if (c >= 0xa0 && c <= 0xbf) {
        v->type = MP_STR;
        v->len = c & 0x1f;
    } else if (c >= 0x90 && c <= 0x9f) {
        v->type = MP_ARRAY;
        v->len = c & 0x0f;
    } else if (c >= 0x80 && c <= 0x8f) {
        v->type = MP_MAP;
        v->len = c & 0x0f;
    } else {
        static const signed char sizes[32] = {
            /* c0 nil */ 0, -1, 0, 0, /* c4-c6 bin */ 1, 2, 4, /* c7-c9 ext */ 1, 2, 4, /* ca cb float */ 4, 8,
            /* cc-cf uint */ 1, 2, 4, 8, /* d0-d3 int */ 1, 2, 4, 8, /* d4-d8 fixext */ 2, 3, 5, 9, 17,
            /* d9-db str */ 1, 2, 4, /* dc dd array */ 2, 4, /* de df map */ 2, 4};
        need = sizes[c - 0xc0];
        if (need < 0 || p + need > n)
            return -1;
        const unsigned char *q = b + p;
        p += need;
        switch (c) {
        case 0xc0: v->type = MP_NIL; break;
        case 0xc2: case 0xc3: v->type = MP_BOOL; v->i = c == 0xc3; break;
        case 0xc4: case 0xc5: case 0xc6:
            v->type = MP_BIN;
            v->len = c == 0xc4 ? q[0] : c == 0xc5 ? be16(q) : be32(q);
            break;
        case 0xc7: case 0xc8: case 0xc9:
            v->type = MP_EXT;
            v->len = (c == 0xc7 ? q[0] : c == 0xc8 ? be16(q) : be32(q)) + 1;
            break;
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
            v->type = MP_EXT;
            v->len = 0;  /* the type byte and data were counted in need */
            break;
        case 0xca: case 0xcb: v->type = MP_FLOAT; break;
        case 0xcc: v->type = MP_INT; v->i = q[0]; break;
        case 0xcd: v->type = MP_INT; v->i = be16(q); break;
        case 0xce: v->type = MP_INT; v->i = be32(q); break;
        case 0xcf: {
            uint64_t u = be64(q);
            v->type = MP_INT;
            v->overflow = u > (uint64_t)LLONG_MAX;
            v->i = v->overflow ? 0 : (long long)u;
            break;
        }
        case 0xd0: v->type = MP_INT; v->i = (signed char)q[0]; break;
        case 0xd1: v->type = MP_INT; v->i = (int16_t)be16(q); break;
        case 0xd2: v->type = MP_INT; v->i = (int32_t)be32(q); break;
        case 0xd3: v->type = MP_INT; v->i = (long long)(int64_t)be64(q); break;
        case 0xd9: v->type = MP_STR; v->len = q[0]; break;
        case 0xda: v->type = MP_STR; v->len = be16(q); break;
        case 0xdb: v->type = MP_STR; v->len = be32(q); break;
        case 0xdc: v->type = MP_ARRAY; v->len = be16(q); break;
        case 0xdd: v->type = MP_ARRAY; v->len = be32(q); break;
        case 0xde: v->type = MP_MAP; v->len = be16(q); break;
        case 0xdf: v->type = MP_MAP; v->len = be32(q); break;
        }
    }
    if (v->type == MP_STR || v->type == MP_BIN || v->type == MP_EXT) {
        if (v->len > n - p)
            return -1;
        v->data = p;
        p += v->len;
    }
    *pos = p;
    return 0;
}

/* Reads the header of the value at *pos into v and moves *pos past the header (past the payload for
 * str/bin/ext); -1 malformed. The forms that make up most of a snapshot (strings under 256 bytes,
 * ints under 65536, small maps and arrays) inline, the rest in mp_head_any. */
static inline __attribute__((always_inline)) int mp_head(const unsigned char *b, Py_ssize_t n, Py_ssize_t *pos,
                                                         MpValue *v) {
    Py_ssize_t p = *pos;
    if (p < n) {
        unsigned c = b[p];
        if (c >= 0xa0 && c <= 0xbf) {
            Py_ssize_t len = c & 0x1f;
            if (len <= n - p - 1) {
                v->type = MP_STR, v->start = p, v->overflow = 0, v->len = len, v->data = p + 1;
                *pos = p + 1 + len;
                return 0;
            }
        } else if (c <= 0x7f) {
            v->type = MP_INT, v->start = p, v->overflow = 0, v->i = c;
            *pos = p + 1;
            return 0;
        } else if (c <= 0x9f) {  /* 0x80-0x8f fixmap, 0x90-0x9f fixarray */
            v->type = c < 0x90 ? MP_MAP : MP_ARRAY, v->start = p, v->overflow = 0, v->len = c & 0x0f;
            *pos = p + 1;
            return 0;
        } else if (c == 0xd9) {  /* str 8: text and class names of 32 to 255 bytes */
            if (p + 2 <= n) {
                Py_ssize_t len = b[p + 1];
                if (len <= n - p - 2) {
                    v->type = MP_STR, v->start = p, v->overflow = 0, v->len = len, v->data = p + 2;
                    *pos = p + 2 + len;
                    return 0;
                }
            }
        } else if (c == 0xcc || c == 0xcd) {  /* uint 8 and 16: node ids past 127 */
            Py_ssize_t size = c == 0xcc ? 1 : 2;
            if (p + 1 + size <= n) {
                v->type = MP_INT, v->start = p, v->overflow = 0, v->i = c == 0xcc ? b[p + 1] : (long long)be16(b + p + 1);
                *pos = p + 1 + size;
                return 0;
            }
        }
    }
    return mp_head_any(b, n, pos, v);
}

static inline int str_is(const unsigned char *b, const MpValue *v, const char *text, Py_ssize_t len) {
    return v->type == MP_STR && v->len == len && memcmp(b + v->data, text, (size_t)len) == 0;
}

/* Whether ``keep`` (a mirror's keep set) holds the entry's name; -1 error. */
static int entry_kept(NameEntry *e, PyObject *keep) {
    if (e->keep_set != keep) {
        int r = PySet_Contains(keep, e->name);
        if (r < 0)
            return -1;
        Py_XSETREF(e->keep_set, Py_NewRef(keep));
        e->kept = r;
    }
    return e->kept;
}

/* The PII prefilter over a packed str: its bytes when ASCII, else the decoded str. */
static int packed_pii(const unsigned char *s, Py_ssize_t len) {
    if (is_ascii(s, len))
        return pii_in(PyUnicode_1BYTE_KIND, s, 0, len);
    PyObject *text = PyUnicode_DecodeUTF8((const char *)s, len, NULL);
    if (text == NULL)
        return -1;
    int r = may_contain_pii(text);
    Py_DECREF(text);
    return r;
}

typedef struct {
    Py_ssize_t start, end;
    PyObject *bytes;  /* what replaces b[start:end] */
} Splice;

typedef struct {
    Py_ssize_t start, end;  /* a non-empty array or map: where its header starts, where it ends */
} Span;

typedef struct {
    Walk w;
    PyObject *delegate, *event;
    const unsigned char *b;
    Py_ssize_t n;
    Splice *splices;
    Py_ssize_t nsplices, cap;
    Py_ssize_t delegated;  /* nodes handed to Python (a figure for the tests and the bench) */
    /* 0: a full snapshot's nodes become rows of the table (walk_packed); 1: a mutation's added nodes
     * become Nodes in the mirror's dicts, as SessionMirror.add makes them (walk_packed_adds): rows
     * make a subtree one range, and nodes added under a row later would fall outside it. */
    int nodes_mode;
    /* Every non-empty container's end, in the order they start: a node's keys come in any order
     * (rrweb writes childNodes before id), so reading a node skips its children, and without this
     * table every level would re-read the subtree below it. */
    Span *spans;
    Py_ssize_t nspans, hint;
    Py_buffer given;  /* the spans the packer found (given.obj NULL: built here, spans owned) */
} Packed;

/* One pass over the event: checks it is one well-formed msgpack value and fills pk->spans. */
static int build_spans(Packed *pk) {
    typedef struct {
        Py_ssize_t span, remaining;
    } Open;
    Open *open = NULL;
    Py_ssize_t depth = 0, cap_open = 0, cap_spans = 0, pos = 0, top = 1;
    int rc = -1;
    for (;;) {
        Py_ssize_t *remaining = depth ? &open[depth - 1].remaining : &top;
        if (*remaining == 0) {
            if (depth == 0)
                break;
            pk->spans[open[--depth].span].end = pos;
            continue;
        }
        (*remaining)--;
        MpValue v;
        if (mp_head(pk->b, pk->n, &pos, &v) < 0)
            goto done;
        if (v.type != MP_ARRAY && v.type != MP_MAP)
            continue;
        Py_ssize_t more = v.type == MP_MAP ? 2 * v.len : v.len;
        if (more > pk->n - pos)  /* each element takes a byte at least */
            goto done;
        if (more == 0)
            continue;
        if (pk->nspans == cap_spans) {
            cap_spans = cap_spans ? cap_spans * 2 : 256;
            Span *grown = PyMem_Realloc(pk->spans, (size_t)cap_spans * sizeof(Span));
            if (grown == NULL)
                goto nomemory;
            pk->spans = grown;
        }
        if (depth == cap_open) {
            cap_open = cap_open ? cap_open * 2 : 64;
            Open *grown = PyMem_Realloc(open, (size_t)cap_open * sizeof(Open));
            if (grown == NULL)
                goto nomemory;
            open = grown;
        }
        pk->spans[pk->nspans] = (Span){v.start, -1};
        open[depth++] = (Open){pk->nspans++, more};
    }
    rc = pos == pk->n ? 0 : -1;
done:
    if (rc < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "walk_packed: the event is not one msgpack value");
    PyMem_Free(open);
    return rc;
nomemory:
    PyErr_NoMemory();
    goto done;
}

/* The spans the packer found for this event (_json_to_msgpack's event_spans: native Py_ssize_t
 * pairs), used in place of build_spans' after a check that they are ordered and inside the event:
 * the bytes and their spans come from one transcode, so the event need not be read once more to
 * find them. None: build them. 0, -1 error. */
static int given_spans(Packed *pk, PyObject *spans) {
    if (spans == Py_None)
        return build_spans(pk);
    if (PyObject_GetBuffer(spans, &pk->given, PyBUF_SIMPLE) < 0)
        return -1;
    Py_ssize_t n = pk->given.len / (Py_ssize_t)sizeof(Span);
    const Span *s = pk->given.buf;
    int ok = pk->given.len % (Py_ssize_t)sizeof(Span) == 0 && ((uintptr_t)s % _Alignof(Span)) == 0;
    for (Py_ssize_t i = 0; ok && i < n; i++)
        ok = s[i].start >= (i ? s[i - 1].start + 1 : 0) && s[i].end > s[i].start && s[i].end <= pk->n;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "walk_packed: spans that are not the event's");
        return -1;
    }
    pk->spans = (Span *)s;
    pk->nspans = n;
    return 0;
}

static void release_spans(Packed *pk) {
    if (pk->given.obj != NULL)
        PyBuffer_Release(&pk->given);
    else
        PyMem_Free(pk->spans);
    pk->spans = NULL;
}

/* Reads the value at *pos: its header into v, *pos moved past the whole value (a container's end
 * from the table); -1 malformed. The walk asks for ends in increasing order nearly always, so the
 * search gallops forward from the last one found. */
static int pk_next(Packed *pk, Py_ssize_t *pos, MpValue *v) {
    if (mp_head(pk->b, pk->n, pos, v) < 0)
        return -1;
    if ((v->type != MP_ARRAY && v->type != MP_MAP) || v->len == 0)
        return 0;
    const Span *spans = pk->spans;
    Py_ssize_t lo = pk->hint < pk->nspans && spans[pk->hint].start <= v->start ? pk->hint : 0, step = 1, hi = lo;
    while (hi < pk->nspans && spans[hi].start < v->start) {
        lo = hi + 1;
        hi += step;
        step *= 2;
    }
    if (hi > pk->nspans)
        hi = pk->nspans;
    while (lo < hi) {  /* the first span starting at or after v->start, in [lo, hi] */
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (spans[mid].start < v->start)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == pk->nspans || spans[lo].start != v->start)
        return -1;
    pk->hint = lo;
    *pos = spans[lo].end;
    return 0;
}

static int add_splice(Packed *pk, Py_ssize_t start, Py_ssize_t end, PyObject *bytes) {
    if (pk->nsplices == pk->cap) {
        Py_ssize_t cap = pk->cap ? pk->cap * 2 : 16;
        Splice *grown = PyMem_Realloc(pk->splices, (size_t)cap * sizeof(Splice));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        pk->splices = grown;
        pk->cap = cap;
    }
    pk->splices[pk->nsplices++] = (Splice){start, end, Py_NewRef(bytes)};
    return 0;
}

static void drop_splices(Packed *pk, Py_ssize_t keep) {
    while (pk->nsplices > keep)
        Py_DECREF(pk->splices[--pk->nsplices].bytes);
}

/* Where a packed node goes: under a row of the table, or (nodes_mode) under a Node (NULL: none). */
typedef struct {
    int32_t row;
    PyObject *node;
} Parent;

/* The node b[start:end] walked by Python (Walker._walk from ROOT via ``delegate``). */
static int delegate_node(Packed *pk, Py_ssize_t start, Py_ssize_t end, Parent at) {
    PyObject *parent = pk->nodes_mode ? (at.node != NULL ? at.node : Py_None)
                       : at.row < 0 ? Py_None : table_node(pk->w.table, at.row);
    if (parent == NULL)
        return -1;
    Py_INCREF(parent);
    PyObject *before = PyBytes_FromStringAndSize((const char *)pk->b + start, end - start);
    PyObject *after = before == NULL ? NULL : PyObject_CallFunctionObjArgs(pk->delegate, before, parent, NULL);
    Py_DECREF(parent);
    if (before == NULL)
        return -1;
    int rc = -1;
    if (after != NULL && !PyBytes_Check(after))
        PyErr_SetString(PyExc_TypeError, "walk_packed: delegate must return bytes");
    else if (after != NULL) {
        int same = PyBytes_GET_SIZE(after) == end - start
                   && memcmp(PyBytes_AS_STRING(after), pk->b + start, (size_t)(end - start)) == 0;
        rc = same ? 0 : add_splice(pk, start, end, after);
        pk->delegated++;
    }
    Py_DECREF(before);
    Py_XDECREF(after);
    return rc;
}

/* A str as msgpack writes it (the shortest header, as msgspec does). */
static PyObject *packed_str(PyObject *text) {
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
    if (utf8 == NULL)
        return NULL;
    unsigned char head[5];
    int h;
    if (len < 32) {
        head[0] = (unsigned char)(0xa0 | len);
        h = 1;
    } else if (len < 256) {
        head[0] = 0xd9, head[1] = (unsigned char)len;
        h = 2;
    } else if (len < 65536) {
        head[0] = 0xda, head[1] = (unsigned char)(len >> 8), head[2] = (unsigned char)len;
        h = 3;
    } else {
        head[0] = 0xdb;
        for (int i = 0; i < 4; i++)
            head[1 + i] = (unsigned char)((uint64_t)len >> (24 - 8 * i));
        h = 5;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, h + len);
    if (out != NULL) {
        memcpy(PyBytes_AS_STRING(out), head, (size_t)h);
        memcpy(PyBytes_AS_STRING(out) + h, utf8, (size_t)len);
    }
    return out;
}

/* attribute_verdict for a packed value (lname: the lower-cased name): its bytes when ASCII (the
 * 1-byte kind), else the decoded str. */
static int packed_attribute_verdict(Packed *pk, PyObject *lname, int flags, const unsigned char *s, Py_ssize_t len) {
    if (is_ascii(s, len))
        return attribute_verdict(&pk->w, lname, flags, PyUnicode_1BYTE_KIND, s, len);
    PyObject *value = PyUnicode_DecodeUTF8((const char *)s, len, NULL);
    if (value == NULL)
        return -1;
    int r = attribute_verdict(&pk->w, lname, flags, PyUnicode_KIND(value), PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value));
    Py_DECREF(value);
    return r;
}

/* remembered() for a packed str: *out is the replacement's packed bytes. */
static int remembered_packed(PyObject *memo, const unsigned char *s, Py_ssize_t len, PyObject **out) {
    if (memo == NULL)
        return 0;
    PyObject *value = PyUnicode_DecodeUTF8((const char *)s, len, NULL);
    if (value == NULL)
        return -1;
    PyObject *known = NULL;
    int r = remembered(memo, value, &known);
    if (r == 2) {
        *out = packed_str(known);
        Py_DECREF(known);
        r = *out == NULL ? -1 : 2;
    }
    Py_DECREF(value);
    return r;
}

/* The packed str at b[vstart:vend] (its text s[:len]) as the sink remembered it: 1 the memo knows it
 * (spliced in when it changed), 0 not remembered (Python decides), -1 error. */
static int splice_remembered(Packed *pk, PyObject *memo, const unsigned char *s, Py_ssize_t len, Py_ssize_t vstart,
                             Py_ssize_t vend) {
    PyObject *out = NULL;
    int r = remembered_packed(memo, s, len, &out);
    if (r == 2) {
        r = add_splice(pk, vstart, vend, out) < 0 ? -1 : 1;
        Py_DECREF(out);
    }
    return r;
}

/* A non-empty value of an attribute whose name is not structural, as the rules would leave it
 * (flags: the name's entry's): 1 done here (a splice added where it changes), 0 Python must
 * decide, -1 error. */
static int packed_attribute(Packed *pk, PyObject *lower, int flags, const MpValue *v, Py_ssize_t vstart,
                            Py_ssize_t vend) {
    const unsigned char *b = pk->b;
    int r = packed_attribute_verdict(pk, lower, flags, b + v->data, v->len);
    if (r == VERDICT_URL || r == VERDICT_PII)
        return splice_remembered(pk, r == VERDICT_URL ? pk->w.url_memo : pk->w.pii_memo, b + v->data, v->len, vstart,
                                 vend);
    if (r != 2)
        return r;
    /* masked by name: Enforcer.text(..., True) */
    PyObject *value = PyUnicode_DecodeUTF8((const char *)b + v->data, v->len, NULL);
    PyObject *masked = value == NULL ? NULL : masked_text(value);
    PyObject *out = masked == NULL || masked == value ? NULL : packed_str(masked);
    int failed = masked == NULL || (masked != value && (out == NULL || add_splice(pk, vstart, vend, out) < 0));
    Py_XDECREF(value);
    Py_XDECREF(masked);
    Py_XDECREF(out);
    return failed ? -1 : 1;
}

/* The fields of a node map that the walk reads, located (type MP_BAD: absent). */
typedef struct {
    MpValue id, type, tag, attrs, children, text;
} NodeFields;

static int packed_node(Packed *pk, Py_ssize_t start, Parent parent, int depth);

/* Reads the node map at b[*pos] (moved past it) into f: 1, 0 when it is no map, -1 malformed. */
static int node_fields(Packed *pk, Py_ssize_t *pos, NodeFields *f) {
    const unsigned char *b = pk->b;
    MpValue m, k, v;
    f->id.type = f->type.type = f->tag.type = f->attrs.type = f->children.type = f->text.type = MP_BAD;
    if (mp_head(b, pk->n, pos, &m) < 0)
        return -1;
    if (m.type != MP_MAP)
        return 0;
    for (Py_ssize_t i = 0; i < m.len; i++) {
        if (mp_head(b, pk->n, pos, &k) < 0 || pk_next(pk, pos, &v) < 0)
            return -1;
        if (k.type != MP_STR)
            continue;
        MpValue *slot = NULL;
        switch (k.len) {
        case 2: slot = str_is(b, &k, "id", 2) ? &f->id : NULL; break;
        case 4: slot = str_is(b, &k, "type", 4) ? &f->type : NULL; break;
        case 7: slot = str_is(b, &k, "tagName", 7) ? &f->tag : NULL; break;
        case 10: slot = str_is(b, &k, "attributes", 10) ? &f->attrs : str_is(b, &k, "childNodes", 10) ? &f->children : NULL; break;
        case 11: slot = str_is(b, &k, "textContent", 11) ? &f->text : NULL; break;
        }
        if (slot != NULL)
            *slot = v;  /* a key given twice: the last counts, as in a decoded dict */
    }
    return 1;
}

/* Whether the mirror holds ``id`` already (as an element, or as a leaf): as a live row, or in its
 * dicts (nodes the walk handed to Python claim their ids). */
static int held(Packed *pk, int leaf, long long id) {
    MirrorTable *t = pk->w.table;
    if (pk->nodes_mode || t == NULL)
        return 0;  /* mirror_add and mirror_add_leaf ask SessionMirror.add to detach what it holds */
    int32_t row = index_find(leaf ? &t->leaves : &t->elements, id);
    return row == ID_CLAIMED || (row >= 0 && !t->rows[row].dead);
}

static inline int name_is(const KeptAttr *a, const char *text, Py_ssize_t len) {
    return a->name_len == len && memcmp(a->name, text, (size_t)len) == 0;
}

/* The kept attributes as the dict SessionMirror.add would keep (for might_match; rarely needed). */
static PyObject *kept_dict(const KeptAttr *kept, int n) {
    PyObject *d = PyDict_New();
    for (int i = 0; d != NULL && i < n; i++) {
        PyObject *name = kept_value(kept[i].name, kept[i].name_len);
        PyObject *value = name == NULL ? NULL : kept_value(kept[i].value, kept[i].value_len);
        if (value == NULL || PyDict_SetItem(d, name, value) < 0)
            Py_CLEAR(d);
        Py_XDECREF(name);
        Py_XDECREF(value);
    }
    return d;
}

/* Whether the loop above would send this element to Walker._element (ROOT: nothing blocked, no
 * text masked): a selector might match it, it is a context or form tag, or it is contenteditable.
 * 1, 0, -1 error. */
static int element_needs_python(Walk *w, PyObject *tag, int tag_flags, int skip_ok, const KeptAttr *kept, int n) {
    if (tag_flags & LOWER_FIELD_TAG || (tag_flags & LOWER_CONTEXT_TAG && !skip_ok))
        return 1;
    const KeptAttr *cls = NULL;
    for (int i = 0; i < n; i++) {
        if (name_is(&kept[i], "contenteditable", 15))
            return 1;
        if (name_is(&kept[i], "class", 5))
            cls = &kept[i];  /* a name given twice: the last counts */
    }
    if (w->classes.usable && (w->classes.count == 0 || cls == NULL))
        return 0;
    if (w->classes.usable && is_ascii(cls->value, cls->value_len))
        return class_names_scan(&w->classes, cls->value, cls->value_len);
    PyObject *attrs = n ? kept_dict(kept, n) : Py_NewRef(EMPTY_ATTRS);
    if (attrs == NULL)
        return -1;
    int slow = w->classes.usable ? class_names_in(&w->classes, attrs) : -2;
    if (slow == -2) {
        slow = might_match(w->block_keys, tag, attrs);
        if (slow == 0)
            slow = might_match(w->mask_keys, tag, attrs);
    }
    Py_DECREF(attrs);
    return slow;
}

/* The attributes SessionMirror.add keeps, at most (an element with more is Python's). */
#define KEPT_MAX 32

/* The id of the text node whose map starts at b[*pos] (*pos moved past it): 1, or 0 when it is no
 * text node with an int id a row can hold, -1 malformed. */
static int text_child(Packed *pk, Py_ssize_t *pos, long long *id) {
    NodeFields f;
    int r = node_fields(pk, pos, &f);
    if (r <= 0)
        return r;
    if (f.type.type != MP_INT || f.type.overflow || f.type.i != TEXT || f.id.type != MP_INT || f.id.overflow)
        return 0;
    *id = f.id.i;
    return 1;
}

/* Whether a <script> or <style> walked from ROOT may be walked here: its children are all text
 * nodes the mirror does not hold (a few, of distinct ids), whose text the rules leave alone under
 * it (Walker._text: "skip"); anything else (an element, a comment, an id held) is Python's. */
#define SKIP_CHILDREN 8
static int plain_text_children(Packed *pk, const NodeFields *f) {
    if (f->children.type != MP_ARRAY)
        return f->children.type == MP_BAD || f->children.type == MP_NIL;
    if (f->children.len > SKIP_CHILDREN)
        return 0;
    long long ids[SKIP_CHILDREN];
    Py_ssize_t pos = f->children.start;
    MpValue a;
    if (mp_head(pk->b, pk->n, &pos, &a) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < a.len; i++) {
        int r = text_child(pk, &pos, &ids[i]);
        if (r <= 0)
            return r;
        if (held(pk, 1, ids[i]))
            return 0;
        for (Py_ssize_t j = 0; j < i; j++)
            if (ids[j] == ids[i])
                return 0;
    }
    return 1;
}

/* Puts an element (or document) in the mirror: a row, or (nodes_mode) a Node made by mirror_add
 * (*out holds a reference then). -1 error. */
static int mirror_element(Packed *pk, long long id, Parent parent, PyObject *tag, const KeptAttr *kept, int nkept,
                          Parent *out) {
    Walk *w = &pk->w;
    if (!pk->nodes_mode) {
        out->node = NULL;
        return (out->row = table_append(w->table, id, parent.row, tag, kept, nkept)) < 0 ? -1 : 0;
    }
    PyObject *sid = PyLong_FromLongLong(id);
    PyObject *attrs = sid == NULL ? NULL : nkept ? kept_dict(kept, nkept) : Py_NewRef(EMPTY_ATTRS);
    out->row = -1;
    out->node = attrs == NULL ? NULL : mirror_add(w, sid, tag, attrs, parent.node != NULL ? parent.node : Py_None);
    Py_XDECREF(sid);
    Py_XDECREF(attrs);
    return out->node == NULL ? -1 : 0;
}

/* Puts a text, comment or doctype node in the mirror (a row, or SessionMirror.add_leaf). -1 error. */
static int mirror_leaf(Packed *pk, long long id, Parent parent) {
    if (!pk->nodes_mode)
        return table_append(pk->w.table, id, parent.row, NULL, NULL, 0) < 0 ? -1 : 0;
    PyObject *sid = PyLong_FromLongLong(id);
    int rc = sid == NULL ? -1 : mirror_add_leaf(&pk->w, sid, parent.node != NULL ? parent.node : Py_None);
    Py_XDECREF(sid);
    return rc;
}

/* The element at b[start:end]: 1 walked here (*out set), 2 the same and its children are text
 * the rules leave alone (plain_text_children), 0 Python must walk it, -1 error. */
static int packed_element(Packed *pk, const NodeFields *f, long long id, Parent parent, Parent *out) {
    Walk *w = &pk->w;
    const unsigned char *b = pk->b;
    PyObject *tag = s_empty;
    KeptAttr kept[KEPT_MAX];
    int nkept = 0;
    Py_ssize_t splices_before = pk->nsplices;
    int rc = 0, tag_flags = 0;  /* "" is no context or field tag */
    if (f->tag.type == MP_STR) {
        NameEntry *e = name_entry(b + f->tag.data, f->tag.len);
        if (e == NULL)
            return PyErr_Occurred() ? -1 : 0;
        tag = e->lower;
        tag_flags = e->flags;
    } else if (f->tag.type != MP_BAD && f->tag.type != MP_NIL) {
        return 0;  /* str(tagName) of another type: Python's business */
    }
    Py_INCREF(tag);  /* the name table may be emptied while the attributes are read */
    if (f->attrs.type == MP_MAP) {
        Py_ssize_t pos = f->attrs.start;
        MpValue m, k, v;
        if (mp_head(b, pk->n, &pos, &m) < 0)
            goto malformed;
        for (Py_ssize_t i = 0; i < m.len; i++) {
            if (mp_head(b, pk->n, &pos, &k) < 0)
                goto malformed;
            Py_ssize_t vstart = pos;
            if (pk_next(pk, &pos, &v) < 0)
                goto malformed;
            if (k.type != MP_STR)
                goto python;
            NameEntry *e = name_entry(b + k.data, k.len);
            if (e == NULL) {
                if (PyErr_Occurred())
                    goto error;
                goto python;
            }
            if (v.type != MP_STR)
                continue;  /* not kept, never masked: neither walk looks at it */
            int keep = entry_kept(e, w->keep), flags = e->flags;
            if (keep < 0)
                goto error;
            if (keep) {  /* SessionMirror.add keeps it, as a str: the bytes must decode */
                if (nkept == KEPT_MAX)
                    goto python;
                if (!is_ascii(b + v.data, v.len)) {
                    PyObject *value = PyUnicode_DecodeUTF8((const char *)b + v.data, v.len, NULL);
                    if (value == NULL)
                        goto error;
                    Py_DECREF(value);
                }
                kept[nkept++] = (KeptAttr){b + k.data, b + v.data, k.len, v.len};
            }
            if (flags & NAME_STRUCTURAL || v.len == 0)
                continue;
            /* Held: an allocation below may run a finalizer that lets another thread's walk empty
             * the name table. */
            PyObject *lower = Py_NewRef(e->lower);
            int r = packed_attribute(pk, lower, flags, &v, vstart, pos);
            Py_DECREF(lower);
            if (r < 0)
                goto error;
            if (r == 0)
                goto python;
        }
    } else if (f->attrs.type != MP_BAD) {
        goto python;  /* attributes that are not an object: rare, Python's */
    }
    int skip = tag_flags & LOWER_CONTEXT_TAG && (PyUnicode_CompareWithASCIIString(tag, "script") == 0
                                                 || PyUnicode_CompareWithASCIIString(tag, "style") == 0);
    if (skip && (skip = plain_text_children(pk, f)) < 0)
        goto malformed;
    int slow = element_needs_python(w, tag, tag_flags, skip, kept, nkept);
    if (slow == 0)
        slow = held(pk, 0, id);
    if (slow < 0)
        goto error;
    if (slow)
        goto python;  /* (an id the mirror holds: SessionMirror.add detaches the old node) */
    if (mirror_element(pk, id, parent, tag, kept, nkept, out) < 0)
        goto error;
    rc = skip ? 2 : 1;
    goto done;
malformed:
    PyErr_SetString(PyExc_ValueError, "walk_packed: malformed msgpack");
error:
    rc = -1;
    goto done;
python:
    drop_splices(pk, splices_before);
    rc = 0;
done:
    Py_DECREF(tag);
    return rc;
}

/* One node map starting at b[start] and its subtree, in the walk's pre-order. */
static int packed_node(Packed *pk, Py_ssize_t start, Parent parent, int depth) {
    const unsigned char *b = pk->b;
    Walk *w = &pk->w;
    Py_ssize_t pos = start;
    NodeFields f;
    Parent here = {-1, NULL};  /* the node itself, as its children's parent */
    if (depth > 1000 || node_fields(pk, &pos, &f) <= 0)
        goto malformed;
    Py_ssize_t end = pos;
    if (f.id.type == MP_BOOL || (f.id.type == MP_INT && f.id.overflow))
        return delegate_node(pk, start, end, parent);  /* True is an int to Python; no row holds 2**63 */
    if (f.id.type != MP_INT)
        return 0;  /* no usable id: both walks skip the node and its subtree */
    long long id = f.id.i;
    int kind = OTHER;
    if (f.type.type == MP_INT)
        kind = !f.type.overflow && f.type.i >= 0 && f.type.i <= 5 ? (int)f.type.i : OTHER;
    else if (f.type.type == MP_BOOL || f.type.type == MP_FLOAT)
        return delegate_node(pk, start, end, parent);  /* may equal a node type */
    if (kind == ELEMENT) {
        int r = packed_element(pk, &f, id, parent, &here);
        if (r <= 0)
            return r < 0 ? -1 : delegate_node(pk, start, end, parent);
        if (r == 2) {  /* a <script> or <style>: its text nodes' rows, nothing to mask */
            Py_ssize_t cpos = f.children.start;
            MpValue a;
            long long child;
            if (f.children.type == MP_ARRAY && mp_head(b, pk->n, &cpos, &a) < 0)
                goto malformed;
            int rc = 0;
            for (Py_ssize_t i = 0; rc == 0 && f.children.type == MP_ARRAY && i < a.len; i++)
                if (text_child(pk, &cpos, &child) != 1) {  /* plain_text_children read these very bytes */
                    PyErr_SetString(PyExc_SystemError, "walk_packed: a script's children changed");
                    rc = -1;
                } else {
                    rc = mirror_leaf(pk, child, here);
                }
            if (here.node == NULL)
                w->table->rows[here.row].end = w->table->n;
            Py_XDECREF(here.node);
            return rc;
        }
    } else if (kind == DOCUMENT) {
        int r = held(pk, 0, id);
        if (r != 0)
            return r < 0 ? -1 : delegate_node(pk, start, end, parent);  /* SessionMirror.add detaches it */
        if (mirror_element(pk, id, parent, s_document, NULL, 0, &here) < 0)
            return -1;
    } else {  /* text, comment, CDATA, doctype and the rest: leaves */
        Py_ssize_t splices_before = pk->nsplices;
        int pii = 0;
        if ((kind == TEXT || kind == COMMENT || kind == CDATA) && f.text.type == MP_STR)
            pii = packed_pii(b + f.text.data, f.text.len);  /* ROOT: only a detector could act */
        if (pii > 0) {  /* Enforcer.text(parent, value, False): its memo may know the value */
            int m = splice_remembered(pk, w->pii_memo, b + f.text.data, f.text.len, f.text.start,
                                      f.text.data + f.text.len);
            pii = m < 0 ? -1 : !m;
        }
        if (pii == 0)
            pii = held(pk, 1, id);  /* an id the mirror holds: add_leaf unlinks it */
        if (pii < 0)
            return -1;
        if (pii) {
            drop_splices(pk, splices_before);
            return delegate_node(pk, start, end, parent);
        }
        return mirror_leaf(pk, id, parent);
    }
    int rc = 0;
    if (f.children.type == MP_ARRAY) {
        Py_ssize_t cpos = f.children.start;
        MpValue a, c;
        if (mp_head(b, pk->n, &cpos, &a) < 0)
            goto malformed;
        for (Py_ssize_t i = 0; i < f.children.len && rc == 0; i++) {  /* a is f.children read again */
            Py_ssize_t at = cpos;
            if (pk_next(pk, &cpos, &c) < 0)
                goto malformed;
            if (c.type == MP_MAP)
                rc = packed_node(pk, at, here, depth + 1);
        }
    }
    if (here.node == NULL)
        w->table->rows[here.row].end = w->table->n;
    Py_XDECREF(here.node);
    return rc;
malformed:
    Py_XDECREF(here.node);
    PyErr_SetString(PyExc_ValueError, "walk_packed: malformed msgpack");
    return -1;
}

/* The value of ``key`` in the map at b[*pos] (its start in *pos); 0 absent or not a map, -1 malformed. */
static int packed_field(Packed *pk, Py_ssize_t *pos, const char *key) {
    const unsigned char *b = pk->b;
    Py_ssize_t n = pk->n;
    MpValue m, k, v;
    Py_ssize_t p = *pos, found = -1;
    if (mp_head(b, n, &p, &m) < 0)
        return -1;
    if (m.type != MP_MAP)
        return 0;
    Py_ssize_t klen = (Py_ssize_t)strlen(key);
    for (Py_ssize_t i = 0; i < m.len; i++) {
        if (mp_head(b, n, &p, &k) < 0)
            return -1;
        if (str_is(b, &k, key, klen))
            found = p;  /* the last one counts */
        if (pk_next(pk, &p, &v) < 0)
            return -1;
    }
    if (found < 0)
        return 0;
    *pos = found;
    return 1;
}

static PyObject *spliced(Packed *pk) {
    if (pk->nsplices == 0)
        return Py_NewRef(pk->event);
    Py_ssize_t size = pk->n;
    for (Py_ssize_t i = 0; i < pk->nsplices; i++)
        size += PyBytes_GET_SIZE(pk->splices[i].bytes) - (pk->splices[i].end - pk->splices[i].start);
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < pk->nsplices; i++) {  /* in pre-order: increasing, never overlapping */
        Splice *s = &pk->splices[i];
        memcpy(o, pk->b + at, (size_t)(s->start - at));
        o += s->start - at;
        memcpy(o, PyBytes_AS_STRING(s->bytes), (size_t)PyBytes_GET_SIZE(s->bytes));
        o += PyBytes_GET_SIZE(s->bytes);
        at = s->end;
    }
    memcpy(o, pk->b + at, (size_t)(pk->n - at));
    return out;
}

/* A walk over ``packed`` (bytes or msgspec.Raw: read in place, held, and so kept alive, until
 * packed_close). -1 error. */
static int packed_open(Packed *pk, PyObject *packed, PyObject *delegate, Py_buffer *view) {
    memset(pk, 0, sizeof *pk);
    if (PyObject_GetBuffer(packed, view, PyBUF_SIMPLE) < 0)
        return -1;
    pk->event = packed;
    pk->delegate = delegate;
    pk->b = (const unsigned char *)view->buf;
    pk->n = view->len;
    return 0;
}

static void packed_close(Packed *pk, Py_buffer *view) {
    walk_clear(&pk->w);
    drop_splices(pk, 0);
    PyMem_Free(pk->splices);
    release_spans(pk);
    PyBuffer_Release(view);
}

/* (the bytes with the walk's splices, nodes delegated), the walks' answer. */
static PyObject *packed_result(Packed *pk) {
    PyObject *out = spliced(pk);
    if (out == NULL)
        return NULL;
    PyObject *result = Py_BuildValue("(On)", out, pk->delegated);
    Py_DECREF(out);
    return result;
}

static PyObject *walk_packed(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "walk_packed(walker, event, delegate, spans=None)");
        return NULL;
    }
    Py_buffer view;
    Packed pk;
    if (!configured() || packed_open(&pk, args[1], args[2], &view) < 0)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t pos = 0;
    if (given_spans(&pk, nargs == 4 ? args[3] : Py_None) < 0)
        goto done;
    int found = packed_field(&pk, &pos, "data");
    if (found > 0)
        found = packed_field(&pk, &pos, "node");
    MpValue node;
    Py_ssize_t at = pos;
    if (found > 0 && (mp_head(pk.b, pk.n, &at, &node) < 0 || node.type != MP_MAP))
        found = 0;
    if (found < 0) {
        PyErr_SetString(PyExc_ValueError, "walk_packed: malformed msgpack");
        goto done;
    }
    if (found == 0) {  /* Walker.event does nothing without data.node as an object */
        result = Py_BuildValue("(On)", args[1], (Py_ssize_t)0);
        goto done;
    }
    int rc = walk_init(&pk.w, args[0]);
    if (rc == 0) {
        PyObject *r = PyObject_CallMethod(pk.w.mirror, "reset", NULL);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    if (rc == 0) {  /* the snapshot's rows, in the mirror before any delegate asks it about them */
        /* as many rows as the window's last snapshot had (pages keep their size), else a guess */
        Py_ssize_t rows = pk.w.table != NULL ? pk.w.table->n : pk.n / 128;
        Py_XSETREF(pk.w.table, table_new(rows));
        rc = pk.w.table == NULL ? -1 : PyObject_SetAttr(pk.w.mirror, s_table, (PyObject *)pk.w.table);
    }
    if (rc == 0) {
        pk.w.table->walking = 1;
        rc = packed_node(&pk, pos, (Parent){-1, NULL}, 0);
        pk.w.table->walking = 0;
    }
    if (rc == 0)
        result = packed_result(&pk);
done:
    packed_close(&pk, &view);
    return result;
}

/* spans_of(event) -> bytes: build_spans' table for a packed value (what the packer's spans must equal). */
static PyObject *spans_of(PyObject *module, PyObject *event) {
    Py_buffer view;
    Packed pk;
    if (packed_open(&pk, event, NULL, &view) < 0)
        return NULL;
    PyObject *out = build_spans(&pk) < 0 ? NULL
                    : PyBytes_FromStringAndSize((const char *)pk.spans, pk.nspans * (Py_ssize_t)sizeof(Span));
    packed_close(&pk, &view);
    return out;
}

/* ---- a mutation's added nodes, packed ----------------------------------------------------------
 * A mutation's adds are most of its bytes (whole sections of a page at a time). enforce_packed cuts
 * them out of the event (cut_adds), so that only the rest is decoded for Walker._mutation, which
 * hands the adds, still packed, to walk_packed_adds where Walker._adds would run (walk.PackedAdds).
 *
 * walk_packed_adds does what Walker._adds does, in the same order: rounds over the adds whose
 * parent is mirrored (the others wait for a later round, as a parent may come in a later add), and
 * when a round places none, the rest under unknown ancestry. An add whose parent's context is
 * ROOT's (nothing blocked, no text masked, no form or skipped owner: nearly every add) is walked
 * here as walk_packed walks a snapshot, its nodes made Nodes (nodes_mode) and any node it cannot
 * vouch for handed to ``delegate`` (Walker._walk from ROOT); any other add goes whole to
 * ``delegate_add(item_bytes, parent, ctx)`` (Walker._add_under; parent and ctx None: unknown
 * ancestry), which returns its bytes, or None when the add is dropped. */

/* cut_adds(event, spans=None) -> (event with data.adds nil, adds, the adds' spans) or None: the adds
 * of a packed mutation event (an array, not empty), cut out, with where their containers start and
 * end (from the packer's spans of the event when given, else found here), for walk_packed_adds.
 * The last key of a name counts, as in a decoded dict. */
static PyObject *cut_adds(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1 && nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cut_adds(event, spans=None)");
        return NULL;
    }
    Py_buffer view;
    Packed pk;
    if (packed_open(&pk, args[0], NULL, &view) < 0)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t pos = 0;
    if (given_spans(&pk, nargs == 2 ? args[1] : Py_None) < 0)
        goto done;
    int found = packed_field(&pk, &pos, "data");
    if (found > 0)
        found = packed_field(&pk, &pos, "adds");
    if (found < 0) {
        PyErr_SetString(PyExc_ValueError, "cut_adds: malformed msgpack");
        goto done;
    }
    Py_ssize_t end = pos;
    MpValue adds;
    if (found == 0 || pk_next(&pk, &end, &adds) < 0 || adds.type != MP_ARRAY || adds.len == 0) {
        PyErr_Clear();
        result = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t first = pk.hint, last = first;  /* pk_next left the hint at the adds' own span */
    while (last < pk.nspans && pk.spans[last].start < end)
        last++;
    PyObject *rest = PyBytes_FromStringAndSize(NULL, pk.n - (end - pos) + 1);
    PyObject *cut = PyBytes_FromStringAndSize((const char *)pk.b + pos, end - pos);
    PyObject *spans = PyBytes_FromStringAndSize(NULL, (last - first) * (Py_ssize_t)sizeof(Span));
    if (rest != NULL && cut != NULL && spans != NULL) {
        char *o = PyBytes_AS_STRING(rest);
        memcpy(o, pk.b, (size_t)pos);
        o[pos] = (char)0xc0;  /* nil */
        memcpy(o + pos + 1, pk.b + end, (size_t)(pk.n - end));
        Span *to = (Span *)PyBytes_AS_STRING(spans);
        for (Py_ssize_t i = first; i < last; i++)
            to[i - first] = (Span){pk.spans[i].start - pos, pk.spans[i].end - pos};
        result = PyTuple_Pack(3, rest, cut, spans);
    }
    Py_XDECREF(rest);
    Py_XDECREF(cut);
    Py_XDECREF(spans);
done:
    packed_close(&pk, &view);
    return result;
}

typedef struct {
    Py_ssize_t start, end, node;  /* the add's map, its node's map */
    PyObject *parent_id;          /* an int, or NULL: no parent the mirror can hold */
} PackedAdd;

static int by_start(const void *a, const void *b) {
    Py_ssize_t x = ((const Splice *)a)->start, y = ((const Splice *)b)->start;
    return x < y ? -1 : x > y;
}

/* msgpack's shortest array header for n items. */
static PyObject *array_header(Py_ssize_t n) {
    unsigned char h[5];
    Py_ssize_t len;
    if (n < 16)
        h[0] = (unsigned char)(0x90 | n), len = 1;
    else if (n < 65536)
        h[0] = 0xdc, h[1] = (unsigned char)(n >> 8), h[2] = (unsigned char)n, len = 3;
    else
        h[0] = 0xdd, h[1] = (unsigned char)(n >> 24), h[2] = (unsigned char)(n >> 16), h[3] = (unsigned char)(n >> 8),
        h[4] = (unsigned char)n, len = 5;
    return PyBytes_FromStringAndSize((const char *)h, len);
}

/* Reads the add at b[*pos] (moved past it): 1 an add (a map with a node map), 0 no add (dropped, as
 * Walker._add_round drops it), 2 a parentId Python would read otherwise than here, -1 malformed. */
static int read_add(Packed *pk, Py_ssize_t *pos, PackedAdd *add) {
    const unsigned char *b = pk->b;
    MpValue m, k, v, node = {.type = MP_BAD}, pid = {.type = MP_BAD};
    add->start = *pos;
    add->parent_id = NULL;
    if (mp_head(b, pk->n, pos, &m) < 0)
        return -1;
    if (m.type != MP_MAP) {
        *pos = add->start;
        if (pk_next(pk, pos, &m) < 0)
            return -1;
        add->end = *pos;
        return 0;
    }
    for (Py_ssize_t i = 0; i < m.len; i++) {
        if (mp_head(b, pk->n, pos, &k) < 0 || pk_next(pk, pos, &v) < 0)
            return -1;
        if (k.type == MP_STR && str_is(b, &k, "node", 4))
            node = v;
        else if (k.type == MP_STR && str_is(b, &k, "parentId", 8))
            pid = v;
    }
    add->end = *pos;
    if (node.type != MP_MAP)
        return 0;
    add->node = node.start;
    if (pid.type == MP_INT && pid.overflow)
        return 2;  /* a Python int no row holds: Python's */
    if (pid.type == MP_INT || pid.type == MP_BOOL)  /* True is 1 to SessionMirror.get */
        if ((add->parent_id = PyLong_FromLongLong(pid.type == MP_BOOL ? pid.i != 0 : pid.i)) == NULL)
            return -1;
    return 1;
}

/* The add leaves the array (Walker._adds keeps it not): spliced out, counted for the new header. */
static int drop_add(Packed *pk, const PackedAdd *add, Py_ssize_t *dropped) {
    PyObject *nothing = PyBytes_FromStringAndSize(NULL, 0);
    int rc = nothing == NULL ? -1 : add_splice(pk, add->start, add->end, nothing);
    Py_XDECREF(nothing);
    (*dropped)++;
    return rc;
}

/* delegate_add for the add at adds[i]: keeps what it returns (spliced in), or drops the add. */
static int delegate_add(Packed *pk, PyObject *fn, const PackedAdd *add, PyObject *parent, PyObject *ctx,
                        Py_ssize_t *dropped) {
    PyObject *before = PyBytes_FromStringAndSize((const char *)pk->b + add->start, add->end - add->start);
    PyObject *after = before == NULL ? NULL : PyObject_CallFunctionObjArgs(fn, before, parent, ctx, NULL);
    Py_XDECREF(before);
    if (after == NULL)
        return -1;
    int rc = 0;
    if (after == Py_None) {
        rc = drop_add(pk, add, dropped);
    } else if (!PyBytes_Check(after)) {
        PyErr_SetString(PyExc_TypeError, "walk_packed_adds: delegate_add must return bytes or None");
        rc = -1;
    } else if (PyBytes_GET_SIZE(after) != add->end - add->start
               || memcmp(PyBytes_AS_STRING(after), pk->b + add->start, (size_t)(add->end - add->start)) != 0) {
        rc = add_splice(pk, add->start, add->end, after);
    }
    pk->delegated++;
    Py_DECREF(after);
    return rc;
}

/* walk_packed_adds(walker, adds, delegate, delegate_add, spans=None) -> (adds, nodes delegated), or None
 * when an add has a parentId only Python reads right (the caller decodes the adds then). spans: what
 * cut_adds found for them. */
static PyObject *walk_packed_adds(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "walk_packed_adds(walker, adds, delegate, delegate_add, spans=None)");
        return NULL;
    }
    Py_buffer view;
    Packed pk;
    if (!configured() || packed_open(&pk, args[1], args[2], &view) < 0)
        return NULL;
    pk.nodes_mode = 1;
    PyObject *result = NULL, *memo = NULL;
    PackedAdd *adds = NULL;
    Py_ssize_t *pending = NULL, nadds = 0, dropped = 0, pos = 0;
    MpValue a;
    int rc = given_spans(&pk, nargs == 5 ? args[4] : Py_None);
    if (rc == 0 && (mp_head(pk.b, pk.n, &pos, &a) < 0 || a.type != MP_ARRAY)) {
        PyErr_SetString(PyExc_ValueError, "walk_packed_adds: adds must be a msgpack array");
        rc = -1;
    }
    Py_ssize_t header_end = pos;
    if (rc == 0 && ((adds = PyMem_Calloc((size_t)a.len + 1, sizeof(PackedAdd))) == NULL
                    || (pending = PyMem_Calloc((size_t)a.len + 1, sizeof(Py_ssize_t))) == NULL)) {
        PyErr_NoMemory();
        rc = -1;
    }
    Py_ssize_t npending = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < a.len; i++) {
        int r = read_add(&pk, &pos, &adds[nadds]);
        nadds++;
        if (r < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "walk_packed_adds: malformed msgpack");
            rc = -1;
        } else if (r == 2) {
            result = Py_NewRef(Py_None);
            rc = 1;
        } else if (r == 0) {
            rc = drop_add(&pk, &adds[i], &dropped);
        } else {
            pending[npending++] = i;
        }
    }
    if (rc == 0)
        rc = walk_init(&pk.w, args[0]);
    if (rc == 0 && (memo = walker_memo(args[0])) == NULL)
        rc = -1;
    while (rc == 0 && npending) {  /* Walker._adds' rounds */
        Py_ssize_t deferred = 0;
        for (Py_ssize_t j = 0; rc == 0 && j < npending; j++) {
            PackedAdd *add = &adds[pending[j]];
            PyObject *parent = add->parent_id == NULL ? NULL : mirrored(&pk.w, add->parent_id), *ctx = NULL;
            if (parent == NULL) {
                if (PyErr_Occurred())
                    rc = -1;
                else
                    pending[deferred++] = pending[j];  /* in order: j only grows */
                continue;
            }
            if (parent == Py_None) {  /* a None in SessionMirror.nodes: no parent to Walker._add_round either */
                Py_DECREF(parent);
                pending[deferred++] = pending[j];
                continue;
            }
            if ((ctx = ctx_of(&pk.w, memo, parent)) == NULL)
                rc = -1;
            if (rc == 0)
                rc = read_ctx(&pk.w, ctx);
            if (rc == 0) {
                if (!pk.w.ctx_blocked && !pk.w.ctx_mask_text && pk.w.ctx_kind == 0)  /* ROOT's */
                    rc = packed_node(&pk, add->node, (Parent){-1, parent}, 0);
                else
                    rc = delegate_add(&pk, args[3], add, parent, ctx, &dropped);
            }
            Py_DECREF(parent);
            Py_XDECREF(ctx);
        }
        if (rc == 0 && deferred == npending) {  /* parents this process never saw: unknown ancestry */
            for (Py_ssize_t j = 0; rc == 0 && j < npending; j++)
                rc = delegate_add(&pk, args[3], &adds[pending[j]], Py_None, Py_None, &dropped);
            break;
        }
        npending = deferred;
    }
    if (rc == 0 && dropped) {
        PyObject *header = array_header(a.len - dropped);
        rc = header == NULL ? -1 : add_splice(&pk, 0, header_end, header);
        Py_XDECREF(header);
    }
    if (rc == 0) {
        if (pk.nsplices > 1)  /* rounds went back and forth */
            qsort(pk.splices, (size_t)pk.nsplices, sizeof(Splice), by_start);
        result = packed_result(&pk);
    }
    for (Py_ssize_t i = 0; adds != NULL && i < nadds; i++)
        Py_XDECREF(adds[i].parent_id);
    PyMem_Free(adds);
    PyMem_Free(pending);
    Py_XDECREF(memo);
    packed_close(&pk, &view);
    return result;
}

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *node_type, *empty, *structural, *url_attributes, *context_tags, *field_tags;
    if (!PyArg_ParseTuple(args, "OO!O!O!O!O!:configure", &node_type, &PyDict_Type, &empty, &PyFrozenSet_Type,
                          &structural, &PyFrozenSet_Type, &url_attributes, &PyFrozenSet_Type, &context_tags,
                          &PyFrozenSet_Type, &field_tags))
        return NULL;
    if (!PyType_Check(node_type))
        return PyErr_Format(PyExc_TypeError, "configure: Node must be a class");
    Py_XSETREF(Node_type, Py_NewRef(node_type));
    if (find_slots(node_type) < 0)
        return NULL;
    Py_XSETREF(EMPTY_ATTRS, Py_NewRef(empty));
    Py_XSETREF(STRUCTURAL, Py_NewRef(structural));
    Py_XSETREF(URL_ATTRIBUTES, Py_NewRef(url_attributes));
    Py_XSETREF(CONTEXT_TAGS, Py_NewRef(context_tags));
    Py_XSETREF(FIELD_TAGS, Py_NewRef(field_tags));
    names_clear();  /* their flags come from these sets */
    Py_RETURN_NONE;
}

/* A Node's slot (a new reference): read in place when the slots were found, else by name. */
static PyObject *node_attr(PyObject *node, int slot, PyObject *name) {
    PyObject **at = node_slot(node, slot);
    return at != NULL && *at != NULL ? Py_NewRef(*at) : PyObject_GetAttr(node, name);
}

/* SessionMirror._detach's loop: forget from ``nodes`` and ``leaves`` what hangs under the Nodes of
 * ``stack`` (a list, emptied) and is still linked there (a child re-added elsewhere since is not). */
static PyObject *forget_subtrees(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyDict_Check(args[0]) || !PyDict_Check(args[1]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "forget_subtrees(nodes: dict, leaves: dict, stack: list)");
        return NULL;
    }
    PyObject *nodes = args[0], *leaves = args[1], *stack = args[2];
    while (PyList_GET_SIZE(stack) > 0) {
        Py_ssize_t last = PyList_GET_SIZE(stack) - 1;
        PyObject *n = Py_NewRef(PyList_GET_ITEM(stack, last));
        if (PyList_SetSlice(stack, last, last + 1, NULL) < 0) {
            Py_DECREF(n);
            return NULL;
        }
        PyObject *children = node_attr(n, SLOT_CHILDREN, s_children);
        int rc = children == NULL ? -1 : 0;
        if (rc == 0 && children != Py_None && !PyDict_Check(children)) {
            PyErr_SetString(PyExc_TypeError, "Node.children must be a dict or None");
            rc = -1;
        }
        Py_ssize_t pos = 0;
        PyObject *child_id, *unused;
        while (rc == 0 && children != Py_None && PyDict_Next(children, &pos, &child_id, &unused)) {
            PyObject *child = PyDict_GetItemWithError(nodes, child_id);
            if (child != NULL) {
                Py_INCREF(child);
                PyObject *parent = node_attr(child, SLOT_PARENT, s_parent), *grandchildren = NULL;
                if (parent == NULL)
                    rc = -1;
                else if (parent == n) {  /* not an id since re-added elsewhere */
                    rc = PyDict_DelItem(nodes, child_id);
                    if (rc == 0 && (grandchildren = node_attr(child, SLOT_CHILDREN, s_children)) == NULL)
                        rc = -1;
                    int more = rc < 0 ? 0 : PyObject_IsTrue(grandchildren);
                    if (more < 0 || (more && PyList_Append(stack, child) < 0))
                        rc = -1;
                }
                Py_XDECREF(parent);
                Py_XDECREF(grandchildren);
                Py_DECREF(child);
            } else if (PyErr_Occurred()) {
                rc = -1;
            }
            if (rc == 0) {  /* both: a client may give one id to an element and to a text node */
                PyObject *leaf_parent = PyDict_GetItemWithError(leaves, child_id);
                if (leaf_parent == n)
                    rc = PyDict_DelItem(leaves, child_id);
                else if (leaf_parent == NULL && PyErr_Occurred())
                    rc = -1;
            }
        }
        Py_XDECREF(children);
        Py_DECREF(n);
        if (rc < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *fills_node_slots(PyObject *module, PyObject *unused) { return PyBool_FromLong(slot_offsets[0] != 0); }

static PyObject *set_token_prefixes(PyObject *module, PyObject *prefixes) {
    if (!PyTuple_Check(prefixes))
        return PyErr_Format(PyExc_TypeError, "a tuple of str expected");
    Py_ssize_t n = PyTuple_GET_SIZE(prefixes);
    if (n > MAX_PREFIXES)
        return PyErr_Format(PyExc_ValueError, "at most %d token prefixes", MAX_PREFIXES);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyTuple_GET_ITEM(prefixes, i);
        if (!PyUnicode_Check(p) || !PyUnicode_IS_ASCII(p) || PyUnicode_GET_LENGTH(p) == 0
            || PyUnicode_GET_LENGTH(p) >= 32)
            return PyErr_Format(PyExc_TypeError, "token prefixes must be ASCII str of 1-31 characters");
    }
    memset(prefixes_by_first, 0, sizeof prefixes_by_first);
    memset(prefix_pairs, 0, sizeof prefix_pairs);
    prefix_of_one = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyTuple_GET_ITEM(prefixes, i);
        prefix_len[i] = PyUnicode_GET_LENGTH(p);
        memcpy(prefix_text[i], PyUnicode_1BYTE_DATA(p), (size_t)prefix_len[i]);
        unsigned char c0 = (unsigned char)prefix_text[i][0], c1 = (unsigned char)prefix_text[i][1];
        prefixes_by_first[c0] |= 1ULL << i;
        if (prefix_len[i] == 1)
            prefix_of_one = 1;
        else
            prefix_pairs[c0][c1 >> 3] |= (unsigned char)(1u << (c1 & 7));
    }
    prefixes_set = 1;
    Py_RETURN_NONE;
}

static PyObject *py_may_contain_pii(PyObject *module, PyObject *text) {
    if (!PyUnicode_Check(text))
        return PyErr_Format(PyExc_TypeError, "str expected");
    int r = may_contain_pii(text);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *py_masked_text(PyObject *module, PyObject *text) {
    if (!PyUnicode_Check(text))
        return PyErr_Format(PyExc_TypeError, "masked_text expects str");
    return masked_text(text);
}

static PyObject *candidate(PyObject *module, PyObject *text) {
    if (!PyUnicode_Check(text))
        return PyErr_Format(PyExc_TypeError, "str expected");
    int r = may_contain_pii(text);
    return r < 0 ? NULL : PyLong_FromLong(r);
}

static PyObject *py_url_may_contain_pii(PyObject *module, PyObject *text) {
    if (!PyUnicode_Check(text))
        return PyErr_Format(PyExc_TypeError, "str expected");
    int r = url_may_contain_pii(text);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyMethodDef methods[] = {
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL, "Walker._walk(root, parent, ctx) for walker."},
    {"add_round", (PyCFunction)(void (*)(void))add_round, METH_FASTCALL,
     "Walker._add_round(pending, kept) for walker: returns the adds whose parent is not mirrored."},
    {"walk_packed", (PyCFunction)(void (*)(void))walk_packed, METH_FASTCALL,
     "walk_packed(walker, event, delegate, spans=None) -> (event, nodes delegated): Walker.event for a packed full snapshot."},
    {"spans_of", (PyCFunction)spans_of, METH_O, "spans_of(event) -> bytes: where each non-empty container starts and ends."},
    {"cut_adds", (PyCFunction)(void (*)(void))cut_adds, METH_FASTCALL,
     "cut_adds(event, spans=None) -> (event with data.adds nil, adds, their spans) or None: a packed mutation's adds, cut out."},
    {"walk_packed_adds", (PyCFunction)(void (*)(void))walk_packed_adds, METH_FASTCALL,
     "walk_packed_adds(walker, adds, delegate, delegate_add) -> (adds, nodes delegated) or None: Walker._adds for packed adds."},
    {"forget_subtrees", (PyCFunction)(void (*)(void))forget_subtrees, METH_FASTCALL,
     "forget_subtrees(nodes, leaves, stack): SessionMirror._detach's loop."},
    {"configure", configure, METH_VARARGS, "configure(Node, EMPTY, STRUCTURAL, URL_ATTRIBUTES, CONTEXT_TAGS, FIELD_TAGS)"},
    {"set_token_prefixes", set_token_prefixes, METH_O, "set_token_prefixes(detectors._TOKEN_PREFIXES)"},
    {"fills_node_slots", fills_node_slots, METH_NOARGS, "Whether Nodes are made without calling Node.__init__."},
    {"may_contain_pii", py_may_contain_pii, METH_O, "detectors.may_contain_pii, in C."},
    {"masked_text", py_masked_text, METH_O, "Enforcer.text(..., must_mask=True), in C."},
    {"candidate", candidate, METH_O, "detectors._candidate_pattern, in C: 0 none, 1 the full pattern, 2 the word pattern."},
    {"url_may_contain_pii", py_url_may_contain_pii, METH_O, "detectors.url_may_contain_pii, in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_native_walk", NULL, -1, methods};

#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC PyInit__native_walk(void) {
    INTERN(s_id, "id");
    INTERN(s_type, "type");
    INTERN(s_tagName, "tagName");
    INTERN(s_attributes, "attributes");
    INTERN(s_textContent, "textContent");
    INTERN(s_childNodes, "childNodes");
    INTERN(s_children, "children");
    INTERN(s_class, "class");
    INTERN(s_attrs, "attrs");
    INTERN(s_contenteditable, "contenteditable");
    INTERN(s_value, "value");
    INTERN(s_input, "input");
    INTERN(s_unknown, "unknown");
    INTERN(s_skip, "skip");
    INTERN(s_empty, "");
    INTERN(s_document, "#document");
    INTERN(s_lower, "lower");
    INTERN(s_add, "add");
    INTERN(s_add_leaf, "add_leaf");
    INTERN(s_note_password, "_note_password");
    INTERN(s_element, "_element");
    INTERN(s_leaf_text, "_leaf_text");
    INTERN(s_attribute, "_attribute");
    INTERN(s_mirror, "mirror");
    INTERN(s_rules, "rules");
    INTERN(s_block, "_block_selectors");
    INTERN(s_mask, "_mask_selectors");
    INTERN(s_nodes, "nodes");
    INTERN(s_leaves, "leaves");
    INTERN(s_keep, "keep");
    INTERN(s_name_cache, "_name_cache");
    INTERN(s_attr_selectors, "attr_selectors");
    INTERN(s_rule_keys, "rule_keys");
    INTERN(s_blocked, "blocked");
    INTERN(s_mask_text, "mask_text");
    INTERN(s_kind, "kind");
    INTERN(s_sink, "sink");
    INTERN(s_mask_is_mask_text, "mask_is_mask_text");
    INTERN(s_memo, "_memo");
    INTERN(s_memoized_by_value, "memoized_by_value");
    INTERN(s_scrubbed_urls, "scrubbed_urls");
    INTERN(s_pii_masked, "pii_masked");
    INTERN(s_parentId, "parentId");
    INTERN(s_node, "node");
    INTERN(s_ctx_of, "_ctx_of");
    INTERN(s_add_under, "_add_under");
    INTERN(s_enter, "_enter");
    INTERN(s_table, "table");
    INTERN(s_parent, "parent");
    init_classes();
    for (int k = 0; k <= 5; k++)
        if ((kind_objects[k] = PyLong_FromLong(k)) == NULL)
            return NULL;
    if (PyType_Ready(&MirrorTable_Type) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL && PyModule_AddObjectRef(module, "MirrorTable", (PyObject *)&MirrorTable_Type) < 0)
        Py_CLEAR(module);
    return module;
}
