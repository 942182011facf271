/* JSON text straight to msgpack, without building Python objects.
 *
 * transcode(data) returns the very bytes msgspec.msgpack.encode(orjson.loads(data)) would, or
 * None when it cannot promise that: invalid JSON, a duplicate key (orjson keeps the last value at
 * the first key's place), an escaped lone surrogate (our JSON parser turns it into U+FFFD), an
 * integer outside 64 bits (orjson makes it a float), a number that overflows a double, nesting
 * deeper than max_depth, an object of more than MAX_KEYS keys. The caller then takes the ordinary
 * path, which gives the error or the value; so this never has to agree with orjson on a message,
 * only on the bytes of what both accept.
 *
 * Ingest of a project that does not mask on the server needs nothing from an upload but a few
 * fields of each event and the packed bytes: decoding its JSON into Python objects, packing them
 * and freeing them cost 2.3x what this path does (bench/packed_ingest.py).
 *
 * transcode_upload(data, max_depth, max_events) does the same for a `POST /v1/recordings` body and,
 * when it is an object whose "events" is an array of at most max_events, also cuts that array as it goes: it returns the envelope
 * with the events replaced by nil, each event's bytes, and the "heads" (an array, per event, of a
 * map holding only the fields ingest reads before masking: type, timestamp, and of data the fields
 * in DATA_FIELDS; each copied byte for byte, anything that is not a map copied whole). Reading the
 * heads gives exactly the fields reading each whole event as an _EventHead gives, without skipping
 * the events' trees twice (cutting them, then skipping data.node to reach the fields): 9% of a
 * masked upload's instructions (bench/RESULTS.md, ninth pass). And per event of many containers,
 * where each container starts and ends (event_spans): the masking walk skips subtrees with them
 * instead of reading each event once more to find them (twelfth pass).
 *
 * Containers are written with a 5-byte placeholder header and their count recorded; one final
 * copy writes each with the smallest header, as msgspec does. Untrusted input: every read is
 * bounds-checked against `end`, recursion is bounded by max_depth.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_KEYS 64
#define PLACEHOLDER 5

typedef struct {
    size_t pos;     /* offset of the placeholder in out */
    size_t end;     /* one past its last byte in out (set when it closes) */
    size_t after;   /* containers opened before it closed: the index of the first one after it */
    uint32_t count; /* items (arrays) or pairs (maps) */
    uint8_t map;
} Container;

/* What a value is to transcode_upload: its children are read for the cut only under these. */
enum { R_NONE, R_ENVELOPE, R_EVENTS, R_EVENT, R_DATA };
#define HEAD_KEYS 3 /* type, timestamp, data */
#define DATA_KEYS 8 /* DATA_FIELDS */

typedef struct {
    size_t from, to; /* positions in `out` (before the final copy) */
} Span;

typedef struct {
    Span whole;
    size_t boxes_from, boxes_to; /* the containers of the event: boxes[boxes_from:boxes_to] */
    uint8_t is_map, nkeys, data_slot, data_is_map, ndata;
    Span keys[HEAD_KEYS]; /* from a key's first byte to its value's end */
    size_t data_value;    /* where data's value starts */
    Span data[DATA_KEYS];
} EventMark;

typedef struct {
    const unsigned char *p, *end;
    unsigned char *out;
    size_t len, cap;
    Container *boxes;
    size_t nboxes, capboxes;
    int max_depth;
    int oom;
    /* transcode_upload's cut */
    Span events;
    int events_found;
    EventMark *marks;
    size_t nmarks, capmarks, cur, max_marks;
} T;

static int grow(T *t, size_t n) {
    size_t want = t->cap ? t->cap : 4096;
    while (want < t->len + n) {
        if (want > ((size_t)-1) / 2) {
            t->oom = 1;
            return -1;
        }
        want *= 2;
    }
    unsigned char *grown = PyMem_Realloc(t->out, want);
    if (grown == NULL) {
        t->oom = 1;
        return -1;
    }
    t->out = grown;
    t->cap = want;
    return 0;
}

/* Room for n more output bytes. Called per token: the check inline, the growth out of line. */
static inline int reserve(T *t, size_t n) { return t->len + n <= t->cap ? 0 : grow(t, n); }

static inline void put_be(unsigned char *at, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; i--) {
        at[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static inline void skip_ws(T *t) {
    if (t->p < t->end && *t->p > ' ')
        return; /* compact JSON, the usual case: no whitespace anywhere */
    while (t->p < t->end && (*t->p == ' ' || *t->p == '\n' || *t->p == '\r' || *t->p == '\t'))
        t->p++;
}

static inline int str_header_size(size_t n) { return n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5; }

static void write_str_header(unsigned char *at, size_t n) {
    if (n < 32) {
        at[0] = (unsigned char)(0xa0 | n);
    } else if (n < 256) {
        at[0] = 0xd9;
        at[1] = (unsigned char)n;
    } else if (n < 65536) {
        at[0] = 0xda;
        put_be(at + 1, n, 2);
    } else {
        at[0] = 0xdb;
        put_be(at + 1, n, 4);
    }
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_hex4(T *t, uint32_t *cp) {
    if (t->end - t->p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(t->p[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | (uint32_t)h;
    }
    t->p += 4;
    *cp = v;
    return 0;
}

/* Length of a valid UTF-8 sequence starting at s (first byte >= 0x80), or 0 if invalid (overlong
 * forms, surrogates and code points over U+10FFFF are invalid, as orjson holds). */
static size_t utf8_sequence(const unsigned char *s, const unsigned char *end) {
    unsigned char c = s[0];
    size_t avail = (size_t)(end - s);
    if (c >= 0xc2 && c <= 0xdf)
        return avail >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (avail < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && s[1] < 0xa0)
            return 0; /* overlong */
        if (c == 0xed && s[1] >= 0xa0)
            return 0; /* a surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (avail < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && s[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xf4 && s[1] >= 0x90)
            return 0; /* over U+10FFFF */
        return 4;
    }
    return 0;
}

#ifdef __SSE2__
#include <emmintrin.h>
#else
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether 8 bytes may hold a quote, a backslash, a control character or a non-ASCII byte. The
 * zero-byte tests can report a byte after a real match too (borrows), never miss one: a hit only
 * sends these 8 bytes through the exact loop. */
static inline int maybe_special(uint64_t v) {
    uint64_t quote = v ^ (ONES * '"'), backslash = v ^ (ONES * '\\');
    return ((v | ((v - ONES * 0x20) & ~v) | ((quote - ONES) & ~quote) | ((backslash - ONES) & ~backslash)) & HIGHS) != 0;
}
#endif

/* A string: t->p is just past the opening quote. Writes a msgpack str. */
static int string(T *t) {
    const unsigned char *start = t->p, *s = t->p;
    /* The common case: no escapes. Find the closing quote, validating as we go. */
    while (s < t->end) {
        /* Long plain runs (text, CSS, URLs): 16 or 8 bytes a step up to the first byte that may
         * need a look, which the exact steps below then take. */
#ifdef __SSE2__
        if (t->end - s >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)s);
            /* Signed compare: below 0x20, and 0x80-0xff (negative) too. */
            __m128i special = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                           _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                        _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
            unsigned mask = (unsigned)_mm_movemask_epi8(special);
            if (mask == 0) {
                s += 16;
                continue;
            }
            s += __builtin_ctz(mask);
        }
#else
        if (t->end - s >= 8) {
            uint64_t v;
            memcpy(&v, s, 8);
            if (!maybe_special(v)) {
                s += 8;
                continue;
            }
        }
#endif
        unsigned char c = *s;
        if (c == '"' || c == '\\')
            break;
        if (c < 0x20)
            return -1;
        if (c < 0x80) {
            s++;
            continue;
        }
        size_t n = utf8_sequence(s, t->end);
        if (n == 0)
            return -1;
        s += n;
    }
    if (s >= t->end)
        return -1;
    size_t plain = (size_t)(s - start);
    if (*s == '"') {
        int h = str_header_size(plain);
        if (reserve(t, (size_t)h + plain) < 0)
            return -1;
        write_str_header(t->out + t->len, plain);
        memcpy(t->out + t->len + h, start, plain);
        t->len += (size_t)h + plain;
        t->p = s + 1;
        return 0;
    }
    /* Escapes: decode after a header sized for the raw span (decoding only shrinks), then move the
     * bytes down if the decoded length needs a smaller header. */
    const unsigned char *q = s;
    while (q < t->end && *q != '"') {
#ifdef __SSE2__
        /* CSS and markup escape a quote or a newline every few dozen bytes: 16 a step between them. */
        if (t->end - q >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)q);
            unsigned mask = (unsigned)_mm_movemask_epi8(
                _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
            if (mask == 0) {
                q += 16;
                continue;
            }
            q += __builtin_ctz(mask);
            if (*q == '"')
                break;
        }
#endif
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= t->end)
        return -1;
    size_t span = (size_t)(q - start);
    int guess = str_header_size(span);
    if (reserve(t, (size_t)guess + span) < 0)
        return -1;
    unsigned char *body = t->out + t->len + guess;
    memcpy(body, start, plain);
    size_t n = plain;
    t->p = s;
    while (1) {
        if (t->p >= t->end)
            return -1;
        unsigned char c = *t->p;
        if (c == '"')
            break;
        if (c == '\\') {
            if (t->end - t->p < 2)
                return -1;
            unsigned char e = t->p[1];
            t->p += 2;
            switch (e) {
            case '"': body[n++] = '"'; break;
            case '\\': body[n++] = '\\'; break;
            case '/': body[n++] = '/'; break;
            case 'b': body[n++] = '\b'; break;
            case 'f': body[n++] = '\f'; break;
            case 'n': body[n++] = '\n'; break;
            case 'r': body[n++] = '\r'; break;
            case 't': body[n++] = '\t'; break;
            case 'u': {
                uint32_t cp;
                if (read_hex4(t, &cp) < 0)
                    return -1;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return -1; /* lone low surrogate */
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t lo;
                    if (t->end - t->p < 2 || t->p[0] != '\\' || t->p[1] != 'u')
                        return -1; /* lone high surrogate */
                    t->p += 2;
                    if (read_hex4(t, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                        return -1;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                /* Six escaped bytes (twelve for a pair) always cover the 1-4 bytes written. */
                if (cp < 0x80) {
                    body[n++] = (unsigned char)cp;
                } else if (cp < 0x800) {
                    body[n++] = (unsigned char)(0xc0 | (cp >> 6));
                    body[n++] = (unsigned char)(0x80 | (cp & 0x3f));
                } else if (cp < 0x10000) {
                    body[n++] = (unsigned char)(0xe0 | (cp >> 12));
                    body[n++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                    body[n++] = (unsigned char)(0x80 | (cp & 0x3f));
                } else {
                    body[n++] = (unsigned char)(0xf0 | (cp >> 18));
                    body[n++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
                    body[n++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                    body[n++] = (unsigned char)(0x80 | (cp & 0x3f));
                }
                break;
            }
            default:
                return -1;
            }
            continue;
        }
        if (c < 0x20)
            return -1;
        if (c < 0x80) {
#ifdef __SSE2__
            /* A plain run: 16 bytes a step. None of them is the closing quote, so all 16 lie
             * within the span reserved above (decoding only shrinks: n <= t->p - start). */
            if (t->end - t->p >= 16) {
                __m128i v = _mm_loadu_si128((const __m128i *)t->p);
                __m128i special = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                               _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                            _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
                unsigned mask = (unsigned)_mm_movemask_epi8(special);
                if (mask == 0) {
                    _mm_storeu_si128((__m128i *)(body + n), v);
                    n += 16;
                    t->p += 16;
                    continue;
                }
                unsigned run = (unsigned)__builtin_ctz(mask); /* >= 1: c itself is plain */
                memcpy(body + n, t->p, run);
                n += run;
                t->p += run;
                continue;
            }
#endif
            body[n++] = c;
            t->p++;
            continue;
        }
        size_t k = utf8_sequence(t->p, t->end);
        if (k == 0)
            return -1;
        memcpy(body + n, t->p, k);
        n += k;
        t->p += k;
    }
    t->p++; /* the closing quote */
    int h = str_header_size(n);
    if (h != guess)
        memmove(t->out + t->len + h, body, n);
    write_str_header(t->out + t->len, n);
    t->len += (size_t)h + n;
    return 0;
}

static int number(T *t) {
    const unsigned char *start = t->p, *s = t->p;
    int negative = 0, integral = 1;
    if (s < t->end && *s == '-') {
        negative = 1;
        s++;
    }
    if (s >= t->end)
        return -1;
    if (*s == '0') {
        s++;
    } else if (*s >= '1' && *s <= '9') {
        while (s < t->end && *s >= '0' && *s <= '9')
            s++;
    } else {
        return -1;
    }
    const unsigned char *int_end = s;
    if (s < t->end && *s == '.') {
        integral = 0;
        s++;
        if (s >= t->end || *s < '0' || *s > '9')
            return -1;
        while (s < t->end && *s >= '0' && *s <= '9')
            s++;
    }
    if (s < t->end && (*s == 'e' || *s == 'E')) {
        integral = 0;
        s++;
        if (s < t->end && (*s == '+' || *s == '-'))
            s++;
        if (s >= t->end || *s < '0' || *s > '9')
            return -1;
        while (s < t->end && *s >= '0' && *s <= '9')
            s++;
    }
    t->p = s;
    if (reserve(t, 9) < 0)
        return -1;
    unsigned char *at = t->out + t->len;
    if (integral) {
        const unsigned char *d = start + negative;
        if (int_end - d > 20)
            return -1;
        uint64_t v = 0;
        for (; d < int_end; d++) {
            uint64_t digit = (uint64_t)(*d - '0');
            if (v > (UINT64_MAX - digit) / 10)
                return -1; /* over 64 bits: orjson makes it a float */
            v = v * 10 + digit;
        }
        if (negative && v != 0) {
            if (v > (uint64_t)INT64_MAX + 1)
                return -1;
            int64_t x = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
            if (x >= -32) {
                at[0] = (unsigned char)(x & 0xff);
                t->len += 1;
            } else if (x >= -128) {
                at[0] = 0xd0;
                at[1] = (unsigned char)(x & 0xff);
                t->len += 2;
            } else if (x >= -32768) {
                at[0] = 0xd1;
                put_be(at + 1, (uint64_t)x, 2);
                t->len += 3;
            } else if (x >= INT32_MIN) {
                at[0] = 0xd2;
                put_be(at + 1, (uint64_t)x, 4);
                t->len += 5;
            } else {
                at[0] = 0xd3;
                put_be(at + 1, (uint64_t)x, 8);
                t->len += 9;
            }
        } else if (v < 128) {
            at[0] = (unsigned char)v;
            t->len += 1;
        } else if (v < 256) {
            at[0] = 0xcc;
            at[1] = (unsigned char)v;
            t->len += 2;
        } else if (v < 65536) {
            at[0] = 0xcd;
            put_be(at + 1, v, 2);
            t->len += 3;
        } else if (v <= UINT32_MAX) {
            at[0] = 0xce;
            put_be(at + 1, v, 4);
            t->len += 5;
        } else {
            at[0] = 0xcf;
            put_be(at + 1, v, 8);
            t->len += 9;
        }
        return 0;
    }
    char buf[128];
    size_t n = (size_t)(s - start);
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, start, n);
    buf[n] = '\0';
    char *stop = NULL;
    /* Python's own correctly rounded conversion, independent of the C locale. */
    double x = PyOS_string_to_double(buf, &stop, NULL);
    if (x == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    if (stop != buf + n || !isfinite(x))
        return -1;
    uint64_t bits;
    memcpy(&bits, &x, 8);
    at[0] = 0xcb;
    put_be(at + 1, bits, 8);
    t->len += 9;
    return 0;
}

static int value(T *t, int depth, int role);

/* Whether the msgpack str at `k` (klen bytes, header included) is `name`. */
static inline int key_is(const unsigned char *k, size_t klen, const char *name) {
    size_t n = strlen(name);
    return klen == n + 1 && k[0] == (0xa0 | n) && memcmp(k + 1, name, n) == 0;
}

static const char *const HEAD_FIELDS[HEAD_KEYS] = {"type", "timestamp", "data"};
/* ingest/packed.py's _Data fields, in its order (a test holds the two together). */
static const char *const DATA_FIELDS[DATA_KEYS] = {"source", "type", "href", "width", "height", "plugin", "payload", "tag"};

static int field_index(const unsigned char *k, size_t klen, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (key_is(k, klen, names[i]))
            return i;
    return -1;
}

static int new_mark(T *t) {
    if (t->nmarks == t->capmarks) {
        size_t want = t->capmarks ? t->capmarks * 2 : 64;
        EventMark *grown = PyMem_Realloc(t->marks, want * sizeof(EventMark));
        if (grown == NULL) {
            t->oom = 1;
            return -1;
        }
        t->marks = grown;
        t->capmarks = want;
    }
    t->cur = t->nmarks++;
    memset(&t->marks[t->cur], 0, sizeof(EventMark));
    t->marks[t->cur].data_slot = HEAD_KEYS;
    return 0;
}


static int open_container(T *t, int map, size_t *index) {
    if (reserve(t, PLACEHOLDER) < 0)
        return -1;
    if (t->nboxes == t->capboxes) {
        size_t want = t->capboxes ? t->capboxes * 2 : 256;
        Container *grown = PyMem_Realloc(t->boxes, want * sizeof(Container));
        if (grown == NULL) {
            t->oom = 1;
            return -1;
        }
        t->boxes = grown;
        t->capboxes = want;
    }
    *index = t->nboxes++;
    t->boxes[*index].pos = t->len;
    t->boxes[*index].count = 0;
    t->boxes[*index].map = (uint8_t)map;
    t->len += PLACEHOLDER;
    return 0;
}

static inline void close_container(T *t, size_t box, uint32_t count) {
    t->boxes[box].count = count;
    t->boxes[box].end = t->len;
    t->boxes[box].after = t->nboxes;
}

/* Right after a container's opening bracket: whether it closes at once (and consume it). */
static int empty(T *t, unsigned char close) {
    skip_ws(t);
    if (t->p < t->end && *t->p == close) {
        t->p++;
        return 1;
    }
    return 0;
}

/* After an item: 1 when a comma says another follows, 0 when `close` ends the container, -1 else. */
static int next_item(T *t, unsigned char close) {
    skip_ws(t);
    if (t->p >= t->end)
        return -1;
    if (*t->p == ',') {
        t->p++;
        return 1;
    }
    if (*t->p == close) {
        t->p++;
        return 0;
    }
    return -1;
}

static int array(T *t, int depth, int role) {
    size_t box;
    if (open_container(t, 0, &box) < 0)
        return -1;
    uint32_t count = 0;
    if (role == R_EVENTS)
        t->events_found = 1;
    if (empty(t, ']')) {
        close_container(t, box, 0);
        return 0;
    }
    int more;
    do {
        if (role == R_EVENTS && t->nmarks == t->max_marks) {
            /* More events than a batch may hold: ingest refuses it whatever the cut says, so no
             * memory is spent cutting it (a few bytes of JSON per event, ~200 of marks). */
            role = R_NONE;
            t->events_found = 0;
            PyMem_Free(t->marks);
            t->marks = NULL;
            t->nmarks = t->capmarks = 0;
        }
        if (role == R_EVENTS) {
            if (new_mark(t) < 0)
                return -1;
            t->marks[t->cur].whole.from = t->len;
            t->marks[t->cur].boxes_from = t->nboxes;
            if (value(t, depth + 1, R_EVENT) < 0)
                return -1;
            t->marks[t->cur].whole.to = t->len;
            t->marks[t->cur].boxes_to = t->nboxes;
        } else if (value(t, depth + 1, R_NONE) < 0) {
            return -1;
        }
        if (++count == UINT32_MAX)
            return -1;
        more = next_item(t, ']');
    } while (more > 0);
    if (more < 0)
        return -1;
    close_container(t, box, count);
    return 0;
}

static int object(T *t, int depth, int role) {
    size_t box;
    if (open_container(t, 1, &box) < 0)
        return -1;
    if (role == R_EVENT)
        t->marks[t->cur].is_map = 1;
    else if (role == R_DATA)
        t->marks[t->cur].data_is_map = 1;
    size_t keys[MAX_KEYS]; /* where each key's msgpack str starts, to find duplicates */
    uint32_t count = 0;
    if (empty(t, '}')) {
        close_container(t, box, 0);
        return 0;
    }
    int more;
    do {
        skip_ws(t);
        if (t->p >= t->end || *t->p != '"' || count == MAX_KEYS)
            return -1;
        t->p++;
        size_t at = t->len;
        if (string(t) < 0)
            return -1;
        size_t klen = t->len - at;
        for (uint32_t i = 0; i < count; i++) {
            size_t other = keys[i];
            /* Equal bytes over the new key's header and body: the same header, so the same
             * length, so the same key (a key's bytes are followed by its value in out). The
             * first two bytes inline: most keys differ there, and a memcmp call per pair cost
             * 8% of the transcoder's time. */
            const unsigned char *a = t->out + other, *b = t->out + at;
            if (a[0] == b[0] && (klen == 1 || (a[1] == b[1] && memcmp(a, b, klen) == 0)))
                return -1; /* a duplicate key */
        }
        keys[count] = at;
        skip_ws(t);
        if (t->p >= t->end || *t->p != ':')
            return -1;
        t->p++;
        int child = R_NONE;
        Span *span = NULL; /* recorded for the heads */
        if (role != R_NONE) {
            const unsigned char *k = t->out + at;
            EventMark *m = t->nmarks ? &t->marks[t->cur] : NULL;
            if (role == R_ENVELOPE) {
                if (key_is(k, klen, "events")) {
                    child = R_EVENTS;
                    t->events.from = t->len;
                }
            } else if (role == R_EVENT) {
                int i = field_index(k, klen, HEAD_FIELDS, HEAD_KEYS);
                if (i >= 0 && m->nkeys < HEAD_KEYS) { /* < always: the keys differ */
                    if (i == 2) {
                        child = R_DATA;
                        m->data_slot = m->nkeys;
                        m->data_value = t->len;
                    }
                    span = &m->keys[m->nkeys++];
                }
            } else if (role == R_DATA) {
                if (field_index(k, klen, DATA_FIELDS, DATA_KEYS) >= 0 && m->ndata < DATA_KEYS)
                    span = &m->data[m->ndata++];
            }
            if (span != NULL)
                span->from = at;
        }
        if (value(t, depth + 1, child) < 0)
            return -1;
        /* Pointers into marks stay valid: marks grow only in the events array, which no event holds. */
        if (span != NULL)
            span->to = t->len;
        if (child == R_EVENTS)
            t->events.to = t->len;
        count++;
        more = next_item(t, '}');
    } while (more > 0);
    if (more < 0)
        return -1;
    close_container(t, box, count);
    return 0;
}

static int literal(T *t, const char *word, size_t n, unsigned char code) {
    if ((size_t)(t->end - t->p) < n || memcmp(t->p, word, n) != 0)
        return -1;
    if (reserve(t, 1) < 0)
        return -1;
    t->p += n;
    t->out[t->len++] = code;
    return 0;
}

static int value(T *t, int depth, int role) {
    if (depth > t->max_depth)
        return -1;
    skip_ws(t);
    if (t->p >= t->end)
        return -1;
    switch (*t->p) {
    case '{':
        t->p++;
        return object(t, depth, role);
    case '[':
        t->p++;
        return array(t, depth, role);
    case '"':
        t->p++;
        return string(t);
    case 't':
        return literal(t, "true", 4, 0xc3);
    case 'f':
        return literal(t, "false", 5, 0xc2);
    case 'n':
        return literal(t, "null", 4, 0xc0);
    default:
        return number(t);
    }
}

/* A map's or array's header of n items, the shortest form (as msgspec writes it); its size. */
static size_t container_header(unsigned char *at, int map, size_t n) {
    if (n < 16) {
        at[0] = (unsigned char)((map ? 0x80 : 0x90) | n);
        return 1;
    }
    if (n < 65536) {
        at[0] = map ? 0xde : 0xdc;
        put_be(at + 1, n, 2);
        return 3;
    }
    at[0] = map ? 0xdf : 0xdd;
    put_be(at + 1, n, 4);
    return 5;
}

static inline int container_header_size(const Container *c) {
    return c->count < 16 ? 1 : c->count < 65536 ? 3 : 5;
}

static size_t final_size(const T *t) {
    size_t size = t->len;
    for (size_t i = 0; i < t->nboxes; i++)
        size -= (size_t)(PLACEHOLDER - container_header_size(&t->boxes[i]));
    return size;
}

/* The final bytes into dst (final_size(t) of them): each container with its smallest header. */
static void finish_into(const T *t, unsigned char *dst) {
    size_t from = 0;
    /* Containers were opened in output order, so one sweep copies between placeholders. */
    for (size_t i = 0; i < t->nboxes; i++) {
        const Container *c = &t->boxes[i];
        memcpy(dst, t->out + from, c->pos - from);
        dst += c->pos - from;
        dst += container_header(dst, c->map, c->count);
        from = c->pos + PLACEHOLDER;
    }
    memcpy(dst, t->out + from, t->len - from);
}

static PyObject *finish(T *t) {
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)final_size(t));
    if (result != NULL)
        finish_into(t, (unsigned char *)PyBytes_AS_STRING(result));
    return result;
}

/* ---- transcode_upload's cut ------------------------------------------------------------------ */

typedef struct {
    const T *t;
    size_t *shrunk; /* shrunk[i]: bytes the first i containers' headers lost in the final copy */
} Positions;

/* Where `out` position x lands in the final bytes: less what the headers of the containers opened
 * before it lost. */
static size_t final_pos(const Positions *ps, size_t x) {
    size_t lo = 0, hi = ps->t->nboxes; /* the first container at or after x */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ps->t->boxes[mid].pos < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return x - ps->shrunk[lo];
}

static void final_span(const Positions *ps, Span *s) {
    s->from = final_pos(ps, s->from);
    s->to = final_pos(ps, s->to);
}

/* One event's head into dst (NULL: only its size). */
static size_t write_head(const EventMark *m, const unsigned char *bytes, unsigned char *dst) {
    size_t n = 0;
#define PUT(src, len)                                  \
    do {                                               \
        if (dst != NULL)                               \
            memcpy(dst + n, (src), (len));             \
        n += (len);                                    \
    } while (0)
    if (!m->is_map) { /* msgspec refuses it either way, with the same error */
        PUT(bytes + m->whole.from, m->whole.to - m->whole.from);
        return n;
    }
    unsigned char header = (unsigned char)(0x80 | m->nkeys);
    PUT(&header, 1);
    for (int i = 0; i < m->nkeys; i++) {
        const Span *k = &m->keys[i];
        if (i == m->data_slot && m->data_is_map) {
            PUT(bytes + k->from, m->data_value - k->from); /* the key "data" */
            header = (unsigned char)(0x80 | m->ndata);
            PUT(&header, 1);
            for (int j = 0; j < m->ndata; j++)
                PUT(bytes + m->data[j].from, m->data[j].to - m->data[j].from);
        } else {
            PUT(bytes + k->from, k->to - k->from);
        }
    }
#undef PUT
    return n;
}

/* Per event of a cut upload, where each of its non-empty containers starts and ends, made when asked
 * (es[i]): native Py_ssize_t (start, end) pairs from the event's first byte, in the order they open,
 * as _native_walk's build_spans finds them reading the event, so the masking walk need not; None for
 * an event of fewer than SPANS_MIN (the walk finds a small event's spans cheaply). A project that
 * does not mask never asks. Holds the transcode's containers and what their headers lost. */
#define SPANS_MIN 32
typedef struct {
    PyObject_HEAD
    Container *boxes;
    size_t *shrunk;   /* as Positions.shrunk */
    size_t *events;   /* per event: its first byte in the final bytes, its first container, one past its last */
    Py_ssize_t n;
} EventSpans;

static Py_ssize_t EventSpans_len(EventSpans *es) { return es->n; }

static PyObject *EventSpans_item(EventSpans *es, Py_ssize_t i) {
    if (i < 0 || i >= es->n) {
        PyErr_SetString(PyExc_IndexError, "event index out of range");
        return NULL;
    }
    size_t from = es->events[3 * i], first = es->events[3 * i + 1], last = es->events[3 * i + 2];
    if (last - first < SPANS_MIN)
        return Py_NewRef(Py_None);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((last - first) * 2 * sizeof(Py_ssize_t)));
    if (out == NULL)
        return NULL;
    Py_ssize_t *o = (Py_ssize_t *)PyBytes_AS_STRING(out), *start = o;
    size_t base = from;
    for (size_t k = first; k < last; k++) {
        const Container *c = &es->boxes[k];
        if (c->count == 0)
            continue;
        *o++ = (Py_ssize_t)(c->pos - es->shrunk[k] - base);
        *o++ = (Py_ssize_t)(c->end - es->shrunk[c->after] - base);
    }
    if (o - start < 2 * SPANS_MIN) { /* mostly empty containers */
        Py_DECREF(out);
        return Py_NewRef(Py_None);
    }
    if (_PyBytes_Resize(&out, (Py_ssize_t)((o - start) * (Py_ssize_t)sizeof(Py_ssize_t))) < 0)
        return NULL;
    return out;
}

static void EventSpans_dealloc(EventSpans *es) {
    PyMem_Free(es->boxes);
    PyMem_Free(es->shrunk);
    PyMem_Free(es->events);
    PyObject_Free(es);
}

static PySequenceMethods EventSpans_sequence = {
    .sq_length = (lenfunc)EventSpans_len,
    .sq_item = (ssizeargfunc)EventSpans_item,
};

static PyTypeObject EventSpans_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "replay.ingest._json_to_msgpack.EventSpans",
    .tp_basicsize = sizeof(EventSpans),
    .tp_dealloc = (destructor)EventSpans_dealloc,
    .tp_as_sequence = &EventSpans_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Per event of a cut upload, where its containers start and end (bytes), or None for a small one.",
};

/* The EventSpans of a cut (its marks' positions final), taking the transcode's containers and ps's
 * shrinkage. */
static PyObject *event_spans(T *t, Positions *ps) {
    EventSpans *es = PyObject_New(EventSpans, &EventSpans_Type);
    if (es == NULL)
        return NULL;
    es->boxes = NULL;
    es->shrunk = NULL;
    es->n = (Py_ssize_t)t->nmarks;
    es->events = PyMem_Malloc((t->nmarks + 1) * 3 * sizeof(size_t));
    if (es->events == NULL) {
        Py_DECREF(es);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < t->nmarks; i++) {
        es->events[3 * i] = t->marks[i].whole.from;
        es->events[3 * i + 1] = t->marks[i].boxes_from;
        es->events[3 * i + 2] = t->marks[i].boxes_to;
    }
    es->boxes = t->boxes;
    t->boxes = NULL;
    es->shrunk = ps->shrunk;
    ps->shrunk = NULL;
    return (PyObject *)es;
}

/* (envelope with events nil, [event bytes], heads, [event spans]) from a finished transcode with
 * events found. */
static PyObject *cut(T *t) {
    PyObject *envelope = NULL, *events = NULL, *heads = NULL, *spans = NULL, *result = NULL;
    size_t total = final_size(t);
    unsigned char *bytes = PyMem_Malloc(total ? total : 1);
    Positions ps = {t, PyMem_Malloc((t->nboxes + 1) * sizeof(size_t))};
    if (bytes == NULL || ps.shrunk == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    finish_into(t, bytes);
    ps.shrunk[0] = 0;
    for (size_t i = 0; i < t->nboxes; i++)
        ps.shrunk[i + 1] = ps.shrunk[i] + (size_t)(PLACEHOLDER - container_header_size(&t->boxes[i]));
    Span ev = t->events;
    final_span(&ps, &ev);
    size_t heads_size = 5;
    for (size_t i = 0; i < t->nmarks; i++) {
        EventMark *m = &t->marks[i];
        final_span(&ps, &m->whole);
        for (int j = 0; j < m->nkeys; j++)
            final_span(&ps, &m->keys[j]);
        for (int j = 0; j < m->ndata; j++)
            final_span(&ps, &m->data[j]);
        if (m->data_slot < HEAD_KEYS)
            m->data_value = final_pos(&ps, m->data_value);
        heads_size += write_head(m, bytes, NULL);
    }
    envelope = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(total - (ev.to - ev.from) + 1));
    events = PyList_New((Py_ssize_t)t->nmarks);
    unsigned char *h = PyMem_Malloc(heads_size);
    if (envelope == NULL || events == NULL || h == NULL) {
        if (h == NULL)
            PyErr_NoMemory();
        PyMem_Free(h);
        goto done;
    }
    unsigned char *e = (unsigned char *)PyBytes_AS_STRING(envelope);
    memcpy(e, bytes, ev.from);
    e[ev.from] = 0xc0;
    memcpy(e + ev.from + 1, bytes + ev.to, total - ev.to);
    size_t at = container_header(h, 0, t->nmarks);
    for (size_t i = 0; i < t->nmarks; i++) {
        const EventMark *m = &t->marks[i];
        PyObject *one = PyBytes_FromStringAndSize((const char *)bytes + m->whole.from,
                                                  (Py_ssize_t)(m->whole.to - m->whole.from));
        if (one == NULL) {
            PyMem_Free(h);
            goto done;
        }
        PyList_SET_ITEM(events, (Py_ssize_t)i, one);
        at += write_head(m, bytes, h + at);
    }
    heads = PyBytes_FromStringAndSize((const char *)h, (Py_ssize_t)at);
    PyMem_Free(h);
    if (heads != NULL)
        spans = event_spans(t, &ps);
    if (heads != NULL)
        result = PyTuple_Pack(4, envelope, events, heads, spans);
done:
    Py_XDECREF(spans);
    Py_XDECREF(envelope);
    Py_XDECREF(events);
    Py_XDECREF(heads);
    PyMem_Free(bytes);
    PyMem_Free(ps.shrunk);
    return result;
}

static PyObject *run(PyObject *const *args, Py_ssize_t nargs, int upload) {
    if (nargs != 2 + upload) {
        PyErr_SetString(PyExc_TypeError,
                        upload ? "transcode_upload(data, max_depth, max_events)" : "transcode(data, max_depth)");
        return NULL;
    }
    long max_depth = PyLong_AsLong(args[1]);
    if (max_depth == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t max_events = upload ? PyLong_AsSsize_t(args[2]) : 0;
    if (max_events == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    T t = {0};
    t.p = view.buf;
    t.end = t.p + view.len;
    t.max_depth = max_depth > 100000 ? 100000 : (int)max_depth;
    t.max_marks = max_events > 0 ? (size_t)max_events : 0;
    PyObject *result = NULL;
    /* The output is about as long as the input: reserve that once instead of growing. So are the
     * containers (one per ~40 bytes of a snapshot's JSON): copying them as they doubled cost more
     * than the pages of a generous guess, which are only touched as they fill. */
    t.capboxes = (size_t)view.len / 24 + 256;
    if ((t.boxes = PyMem_Malloc(t.capboxes * sizeof(Container))) == NULL)
        t.capboxes = 0;
    if (reserve(&t, (size_t)view.len + 16) == 0 && value(&t, 1, upload ? R_ENVELOPE : R_NONE) == 0) {
        skip_ws(&t);
        if (t.p == t.end)
            result = t.events_found ? cut(&t) : finish(&t);
    }
    if (result == NULL && !PyErr_Occurred()) {
        if (t.oom) {
            PyErr_NoMemory();
        } else {
            result = Py_None;
            Py_INCREF(result);
        }
    }
    PyMem_Free(t.out);
    PyMem_Free(t.boxes);
    PyMem_Free(t.marks);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *transcode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return run(args, nargs, 0);
}

static PyObject *transcode_upload(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return run(args, nargs, 1);
}

static PyMethodDef methods[] = {
    {"transcode", (PyCFunction)(void (*)(void))transcode, METH_FASTCALL,
     "transcode(data, max_depth) -> bytes | None: JSON to the msgpack msgspec would write, or None."},
    {"transcode_upload", (PyCFunction)(void (*)(void))transcode_upload, METH_FASTCALL,
     "transcode_upload(data, max_depth, max_events) -> (envelope, events, heads, spans) | bytes | None: transcode, "
     "the events cut (bytes when there are more than max_events)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_json_to_msgpack", NULL, -1, methods};

PyMODINIT_FUNC PyInit__json_to_msgpack(void) {
    if (PyType_Ready(&EventSpans_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *fields = PyTuple_New(DATA_KEYS);
    if (fields == NULL)
        goto fail;
    for (int i = 0; i < DATA_KEYS; i++) {
        PyObject *name = PyUnicode_FromString(DATA_FIELDS[i]);
        if (name == NULL) {
            Py_DECREF(fields);
            goto fail;
        }
        PyTuple_SET_ITEM(fields, i, name);
    }
    if (PyModule_AddObject(m, "DATA_FIELDS", fields) == 0)
        return m;
    Py_DECREF(fields);
fail:
    Py_DECREF(m);
    return NULL;
}
