/* A small JSON reader (into a tree of jnode) and writer (a growable string), enough for the agent's
 * headers. Integers are kept exactly (nanosecond timestamps do not fit a double). */
#include "pv.h"

typedef struct { const char *p, *end; int depth; } jparser;

static void skip_ws(jparser *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static jnode *jnew(jtype t)
{
    jnode *n = calloc(1, sizeof(*n));
    if (n) n->t = t;
    return n;
}

static void put_utf8(sb *s, unsigned cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) { b[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (char)(0xC0 | (cp >> 6)); b[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12)); b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18)); b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); b[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    sb_add(s, b, n);
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static char *parse_string(jparser *j)
{
    sb s = {0};
    if (j->p >= j->end || *j->p != '"') return NULL;
    j->p++;
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c != '\\') { sb_add(&s, &c, 1); continue; }
        if (j->p >= j->end) goto bad;
        c = *j->p++;
        switch (c) {
        case '"': case '\\': case '/': sb_add(&s, &c, 1); break;
        case 'b': sb_add(&s, "\b", 1); break;
        case 'f': sb_add(&s, "\f", 1); break;
        case 'n': sb_add(&s, "\n", 1); break;
        case 'r': sb_add(&s, "\r", 1); break;
        case 't': sb_add(&s, "\t", 1); break;
        case 'u': {
            unsigned cp, lo;
            if (j->end - j->p < 4 || hex4(j->p, &cp)) goto bad;
            j->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
                !hex4(j->p + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                j->p += 6;
            }
            put_utf8(&s, cp);
            break;
        }
        default: goto bad;
        }
    }
    if (j->p >= j->end) goto bad;
    j->p++;
    sb_add(&s, "", 1);
    return s.b;
bad:
    sb_free(&s);
    return NULL;
}

static jnode *parse_value(jparser *j);

static jnode *parse_container(jparser *j, int is_obj)
{
    jnode *n = jnew(is_obj ? J_OBJ : J_ARR), **tail;
    if (!n) return NULL;
    tail = &n->child;
    j->p++;
    skip_ws(j);
    if (j->p < j->end && *j->p == (is_obj ? '}' : ']')) { j->p++; return n; }
    for (;;) {
        char *key = NULL;
        jnode *v;
        skip_ws(j);
        if (is_obj) {
            key = parse_string(j);
            if (!key) goto bad;
            skip_ws(j);
            if (j->p >= j->end || *j->p != ':') { free(key); goto bad; }
            j->p++;
        }
        v = parse_value(j);
        if (!v) { free(key); goto bad; }
        v->key = key;
        *tail = v;
        tail = &v->next;
        skip_ws(j);
        if (j->p >= j->end) goto bad;
        if (*j->p == ',') { j->p++; continue; }
        if (*j->p == (is_obj ? '}' : ']')) { j->p++; return n; }
        goto bad;
    }
bad:
    json_free(n);
    return NULL;
}

static jnode *parse_value(jparser *j)
{
    jnode *n = NULL;
    skip_ws(j);
    if (j->p >= j->end || ++j->depth > 64) return NULL;
    char c = *j->p;
    if (c == '{' || c == '[') n = parse_container(j, c == '{');
    else if (c == '"') {
        char *s = parse_string(j);
        if (s && (n = jnew(J_STR))) n->s = s; else free(s);
    } else if (j->end - j->p >= 4 && !strncmp(j->p, "true", 4)) {
        n = jnew(J_BOOL); if (n) n->i = 1; j->p += 4;
    } else if (j->end - j->p >= 5 && !strncmp(j->p, "false", 5)) {
        n = jnew(J_BOOL); j->p += 5;
    } else if (j->end - j->p >= 4 && !strncmp(j->p, "null", 4)) {
        n = jnew(J_NULL); j->p += 4;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        char buf[64];
        size_t k = 0;
        int is_float = 0;
        while (j->p < j->end && k < sizeof(buf) - 1 && strchr("+-0123456789.eE", *j->p)) {
            if (strchr(".eE", *j->p)) is_float = 1;
            buf[k++] = *j->p++;
        }
        buf[k] = 0;
        n = jnew(is_float ? J_NUM : J_INT);
        if (n) {
            n->n = strtod(buf, NULL);
            n->i = is_float ? (long long)n->n : strtoll(buf, NULL, 10);
        }
    }
    j->depth--;
    return n;
}

jnode *json_parse(const char *text, size_t len)
{
    jparser j = {text, text + len, 0};
    jnode *n = parse_value(&j);
    skip_ws(&j);
    if (n && j.p != j.end) { json_free(n); return NULL; }
    return n;
}

void json_free(jnode *n)
{
    while (n) {
        jnode *next = n->next;
        json_free(n->child);
        free(n->key);
        free(n->s);
        free(n);
        n = next;
    }
}

jnode *jget(const jnode *obj, const char *key)
{
    if (!obj || obj->t != J_OBJ) return NULL;
    for (jnode *c = obj->child; c; c = c->next)
        if (c->key && !strcmp(c->key, key)) return c;
    return NULL;
}

const char *jgets(const jnode *obj, const char *key)
{
    jnode *n = jget(obj, key);
    return n && n->t == J_STR ? n->s : NULL;
}

long long jgeti(const jnode *obj, const char *key, long long def)
{
    jnode *n = jget(obj, key);
    return n && (n->t == J_INT || n->t == J_NUM || n->t == J_BOOL) ? n->i : def;
}

int jgetb(const jnode *obj, const char *key, int def)
{
    jnode *n = jget(obj, key);
    return n && n->t == J_BOOL ? (int)n->i : def;
}

int jlen(const jnode *arr)
{
    int k = 0;
    if (arr && (arr->t == J_ARR || arr->t == J_OBJ))
        for (jnode *c = arr->child; c; c = c->next) k++;
    return k;
}

char **jstrv(const jnode *arr)
{
    int n = jlen(arr), k = 0;
    char **v = calloc((size_t)n + 1, sizeof(char *));
    if (!v) return NULL;
    if (arr)
        for (jnode *c = arr->child; c; c = c->next)
            if (c->t == J_STR) v[k++] = c->s;
    return v;
}

void sb_add(sb *s, const void *p, size_t n)
{
    if (s->n + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->n + n + 1) cap *= 2;
        char *b = realloc(s->b, cap);
        if (!b) abort();
        s->b = b;
        s->cap = cap;
    }
    if (n) memcpy(s->b + s->n, p, n);
    s->n += n;
    s->b[s->n] = 0;
}

void sb_puts(sb *s, const char *p) { sb_add(s, p, strlen(p)); }

void sb_printf(sb *s, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof(buf)) { sb_add(s, buf, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) abort();
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_add(s, big, (size_t)n);
    free(big);
}

void sb_jstrn(sb *s, const char *str, size_t n)
{
    sb_add(s, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)str[i];
        if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; sb_add(s, e, 2); }
        else if (c == '\n') sb_add(s, "\\n", 2);
        else if (c == '\t') sb_add(s, "\\t", 2);
        else if (c == '\r') sb_add(s, "\\r", 2);
        else if (c < 0x20 || c == 0x7f) sb_printf(s, "\\u%04x", c);
        else sb_add(s, &str[i], 1);
    }
    sb_add(s, "\"", 1);
}

void sb_jstr(sb *s, const char *str) { sb_jstrn(s, str ? str : "", str ? strlen(str) : 0); }

void sb_free(sb *s)
{
    free(s->b);
    s->b = NULL;
    s->n = s->cap = 0;
}

const char *sb_cstr(sb *s) { return s->b ? s->b : ""; }
