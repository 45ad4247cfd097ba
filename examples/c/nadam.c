/*
 * A small NAdam port in C (standard library only), written to show how a port
 * is checked with nadam_ref's golden cases:
 *
 *     cc -O2 -std=c99 -ffp-contract=off -o nadam examples/c/nadam.c -lm
 *     nadam-ref golden run --suite --profile torch -- ./nadam {case} {out}
 *
 * It computes what torch.optim.NAdam computes (the "torch" profile): the
 * scalars t, mu_t, mu_{t+1}, 1 - beta2^t and the step sizes in double, the
 * step counter and the product of the mu_t stored as float (double with
 * option scalar_state = float64), and theta updated in two parts,
 *     theta -= lr (1 - mu_t) / (1 - prod_t)        * g / (sqrt(v / (1 - beta2^t)) + eps)
 *     theta -= lr mu_{t+1} / (1 - prod_t mu_{t+1}) * m / (sqrt(v / (1 - beta2^t)) + eps)
 * every element operation in the parameter's precision (float or double;
 * complex numbers as pairs of reals, as torch.view_as_real).
 *
 *     ./nadam [--bug mu-twice] CASE.safetensors OUT.safetensors
 *
 * reads the inputs the runner writes (nadam_ref/golden/runner.py describes the
 * tensors) and writes theta, m, v after every step and the product of the mu_t.
 * --bug mu-twice injects a real bug, torch's own before version 2.0 (fixed in
 * its pull request 92699) and TorchSharp's: prod_{t+1} computed as
 * prod_t * mu_t * mu_{t+1}, although prod_t already holds mu_t.
 *
 * -ffp-contract=off keeps the compiler from fusing a*b + c into one rounding:
 * the golden tolerances allow it, but the port then computes what it says.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *detail) {
    fprintf(stderr, "nadam: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

/* -- reading safetensors: 8-byte little-endian length, JSON header, raw arrays -- */

typedef struct {
    unsigned char *bytes;
    size_t size;
    char *header; /* NUL-terminated copy of the JSON header */
    size_t data;  /* offset of the array bytes */
} Safetensors;

static Safetensors st_read(const char *path) {
    Safetensors f = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp) die("cannot open", path);
    if (fseek(fp, 0, SEEK_END) != 0) die("cannot read", path);
    long size = ftell(fp);
    rewind(fp);
    if (size < 8) die("not a safetensors file", path);
    f.bytes = malloc((size_t)size);
    if (!f.bytes || fread(f.bytes, 1, (size_t)size, fp) != (size_t)size) die("cannot read", path);
    fclose(fp);
    f.size = (size_t)size;
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = n << 8 | f.bytes[k];
    if (n > f.size - 8) die("header longer than the file", path);
    f.header = malloc(n + 1);
    memcpy(f.header, f.bytes + 8, n);
    f.header[n] = 0;
    f.data = 8 + n;
    return f;
}

/* The JSON object of tensor `name`: from its '{' to the matching '}' (a tensor's
   entry holds no nested objects). */
static const char *st_entry(const Safetensors *f, const char *name, const char **end) {
    char key[128];
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *p = strstr(f->header, key);
    if (!p) return NULL;
    p = strchr(p + strlen(key), '{');
    if (!p) return NULL;
    *end = strchr(p, '}');
    return *end ? p : NULL;
}

static const char *field(const char *entry, const char *end, const char *key) {
    const char *p = strstr(entry, key);
    return (p && p < end) ? p + strlen(key) : NULL;
}

/* Tensor `name` as doubles (from F32 or F64); its element count in *count and
   the text of its shape list (without brackets) in shape[]. */
static double *st_tensor(const Safetensors *f, const char *name, size_t *count, char *shape,
                         size_t shape_size) {
    const char *end, *e = st_entry(f, name, &end);
    if (!e) die("input has no tensor", name);
    const char *dt = field(e, end, "\"dtype\":\"");
    const char *off = field(e, end, "\"data_offsets\":[");
    const char *sh = field(e, end, "\"shape\":[");
    if (!dt || !off || !sh) die("malformed tensor entry", name);
    size_t width = strncmp(dt, "F64\"", 4) == 0 ? 8 : strncmp(dt, "F32\"", 4) == 0 ? 4 : 0;
    if (!width) die("tensor is neither F32 nor F64", name);
    char *next;
    unsigned long long a = strtoull(off, &next, 10);
    unsigned long long b = strtoull(next + 1, NULL, 10);
    if (b < a || f->data + b > f->size || (b - a) % width) die("bad data_offsets", name);
    if (shape) {
        size_t k = 0;
        while (sh[k] && sh[k] != ']' && k + 1 < shape_size) {
            shape[k] = sh[k];
            k++;
        }
        shape[k] = 0;
    }
    *count = (size_t)(b - a) / width;
    double *out = malloc((*count ? *count : 1) * sizeof *out);
    const unsigned char *src = f->bytes + f->data + a;
    for (size_t k = 0; k < *count; k++) {
        if (width == 8) {
            double x;
            memcpy(&x, src + 8 * k, 8);
            out[k] = x;
        } else {
            float x;
            memcpy(&x, src + 4 * k, 4);
            out[k] = x;
        }
    }
    return out;
}

static double st_scalar(const Safetensors *f, const char *name) {
    size_t n;
    double *x = st_tensor(f, name, &n, NULL, 0);
    if (n != 1) die("expected a scalar", name);
    double v = x[0];
    free(x);
    return v;
}

/* A string of __metadata__ (NULL when absent). */
static char *st_meta(const Safetensors *f, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(f->header, pat);
    if (!p) return NULL;
    p += strlen(pat);
    const char *q = strchr(p, '"');
    char *s = malloc((size_t)(q - p) + 1);
    memcpy(s, p, (size_t)(q - p));
    s[q - p] = 0;
    return s;
}

/* -- writing safetensors ----------------------------------------------------- */

typedef struct {
    char name[64];
    char shape[200];
    int f32;          /* F32, else F64 */
    double *values;   /* count values, converted on writing */
    size_t count;
} Out;

static void st_write(const char *path, Out *t, int n) {
    size_t cap = 256 + (size_t)n * 300, len = 0, offset = 0;
    char *h = malloc(cap);
    len += (size_t)snprintf(h + len, cap - len, "{");
    for (int k = 0; k < n; k++) {
        size_t bytes = t[k].count * (t[k].f32 ? 4 : 8);
        len += (size_t)snprintf(h + len, cap - len,
                                "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}",
                                k ? "," : "", t[k].name, t[k].f32 ? "F32" : "F64", t[k].shape,
                                offset, offset + bytes);
        offset += bytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while ((8 + len) % 8) h[len++] = ' '; /* pad so that the arrays are aligned */
    FILE *fp = fopen(path, "wb");
    if (!fp) die("cannot write", path);
    unsigned char size[8];
    for (int k = 0; k < 8; k++) size[k] = (unsigned char)((uint64_t)len >> (8 * k));
    fwrite(size, 1, 8, fp);
    fwrite(h, 1, len, fp);
    for (int k = 0; k < n; k++)
        for (size_t j = 0; j < t[k].count; j++) {
            if (t[k].f32) {
                float x = (float)t[k].values[j];
                fwrite(&x, 4, 1, fp);
            } else {
                fwrite(&t[k].values[j], 8, 1, fp);
            }
        }
    if (fclose(fp) != 0) die("cannot write", path);
    free(h);
}

/* -- the optimizer ------------------------------------------------------------- */

typedef struct {
    double beta1, beta2, eps, psi, weight_decay;
    int decoupled, maximize;
} Hyper;

/* The step's coefficients, computed in double, as torch computes them. */
typedef struct {
    double beta1, one_minus_beta1, beta2, one_minus_beta2, eps, l2, decay_factor;
    double grad_step, momentum_step, bias_correction2;
    int maximize;
} Coef;

/* One step over n reals, in type T (float or double): every coefficient is
   rounded to T first, then each operation is one T operation. */
#define DEFINE_STEP(NAME, T, SQRT)                                                         \
    static void NAME(double *theta, const double *grad, double *m, double *v, size_t n,   \
                     const Coef *c) {                                                      \
        T b1 = (T)c->beta1, omb1 = (T)c->one_minus_beta1, b2 = (T)c->beta2;                \
        T omb2 = (T)c->one_minus_beta2, eps = (T)c->eps, l2 = (T)c->l2;                     \
        T df = (T)c->decay_factor, gs = (T)c->grad_step, ms = (T)c->momentum_step;          \
        T bc2 = (T)c->bias_correction2;                                                    \
        for (size_t k = 0; k < n; k++) {                                                   \
            T p = (T)theta[k], g = (T)grad[k], mk = (T)m[k], vk = (T)v[k];                  \
            if (c->maximize) g = -g;                                                       \
            if (df != (T)1) p = p * df;                                                    \
            if (l2 != (T)0) g = g + l2 * p;                                                \
            mk = b1 * mk + omb1 * g;                                                       \
            vk = b2 * vk + omb2 * g * g;                                                   \
            T denom = SQRT(vk / bc2) + eps;                                                \
            p = p - gs * (g / denom);                                                      \
            p = p - ms * (mk / denom);                                                     \
            theta[k] = p;                                                                  \
            m[k] = mk;                                                                     \
            v[k] = vk;                                                                     \
        }                                                                                  \
    }
DEFINE_STEP(step_float, float, sqrtf)
DEFINE_STEP(step_double, double, sqrt)

int main(int argc, char **argv) {
    int bug_mu_twice = 0, arg = 1;
    if (argc > 1 && strcmp(argv[1], "--bug") == 0) {
        if (argc < 3 || strcmp(argv[2], "mu-twice") != 0) die("--bug takes", "mu-twice");
        bug_mu_twice = 1;
        arg = 3;
    }
    if (argc - arg != 2) die("usage", "nadam [--bug mu-twice] CASE.safetensors OUT.safetensors");
    uint16_t one = 1;
    unsigned char low;
    memcpy(&low, &one, 1);
    if (low != 1) die("this port reads little-endian arrays on a little-endian machine only", NULL);

    Safetensors in = st_read(argv[arg]);
    char *profile = st_meta(&in, "case.profile"), *dtype = st_meta(&in, "case.dtype");
    char *loop = st_meta(&in, "case.loop"), *steps_text = st_meta(&in, "case.steps");
    char *count_text = st_meta(&in, "case.parameters"), *state = st_meta(&in, "option.scalar_state");
    if (!profile || !dtype || !loop || !steps_text || !count_text) die("input lacks case metadata", NULL);
    if (strcmp(profile, "torch") != 0) die("this port computes the torch profile, not", profile);
    int single = strcmp(dtype, "float32") == 0 || strcmp(dtype, "complex64") == 0;
    int closed = strcmp(loop, "open") != 0;
    int state64 = state && strcmp(state, "float64") == 0;
    long steps = strtol(steps_text, NULL, 10);
    int params = atoi(count_text);
    if (steps < 1 || params < 1) die("bad steps or parameter count", NULL);

    Out *out = calloc((size_t)params * 4, sizeof *out);
    char name[64], shape[160];
    for (int i = 0; i < params; i++) {
        size_t n, ng, nm, nv, nlr;
        snprintf(name, sizeof name, "param.%d", i);
        double *theta = st_tensor(&in, name, &n, shape, sizeof shape);
        snprintf(name, sizeof name, "exp_avg.%d", i);
        double *m = st_tensor(&in, name, &nm, NULL, 0);
        snprintf(name, sizeof name, "exp_avg_sq.%d", i);
        double *v = st_tensor(&in, name, &nv, NULL, 0);
        snprintf(name, sizeof name, "lr.%d", i);
        double *lr = st_tensor(&in, name, &nlr, NULL, 0);
        double *grads = NULL;
        if (!closed) {
            snprintf(name, sizeof name, "grad.%d", i);
            grads = st_tensor(&in, name, &ng, NULL, 0);
            if (ng != n * (size_t)steps) die("grad has the wrong size", name);
        }
        if (nm != n || nv != n || nlr != (size_t)steps) die("inconsistent input sizes", NULL);
        Hyper hp;
#define SCALAR(field, key)                          \
    snprintf(name, sizeof name, key ".%d", i);      \
    hp.field = st_scalar(&in, name);
        SCALAR(beta1, "beta1") SCALAR(beta2, "beta2") SCALAR(eps, "eps")
        SCALAR(psi, "momentum_decay") SCALAR(weight_decay, "weight_decay")
        double flag;
        snprintf(name, sizeof name, "decoupled_weight_decay.%d", i);
        flag = st_scalar(&in, name);
        hp.decoupled = flag != 0;
        snprintf(name, sizeof name, "maximize.%d", i);
        flag = st_scalar(&in, name);
        hp.maximize = flag != 0;
        snprintf(name, sizeof name, "step.%d", i);
        double step_in = st_scalar(&in, name);
        snprintf(name, sizeof name, "mu_product.%d", i);
        double prod_in = st_scalar(&in, name);

        /* torch's state: float32 tensors (or float64 ones) */
        float stepf = (float)step_in, prodf = (float)prod_in;
        double stepd = step_in, prodd = prod_in;
        double *rows[3], *prods = malloc((size_t)steps * sizeof(double));
        for (int q = 0; q < 3; q++) rows[q] = malloc((n ? n : 1) * (size_t)steps * sizeof(double));
        double *g = malloc((n ? n : 1) * sizeof(double));
        for (long s = 0; s < steps; s++) {
            double t, prod;
            if (state64) {
                stepd = stepd + 1;
                t = stepd;
            } else {
                stepf = stepf + 1.0f;
                t = stepf;
            }
            double mu = hp.beta1 * (1.0 - 0.5 * pow(0.96, t * hp.psi));
            double mu_next = hp.beta1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * hp.psi));
            if (state64) {
                prodd = prodd * mu;
                prod = prodd;
            } else {
                prodf = prodf * (float)mu;
                prod = prodf;
            }
            double prod_next = bug_mu_twice ? prod * mu * mu_next : prod * mu_next;
            double rate = lr[s];
            Coef c;
            c.beta1 = hp.beta1;
            c.one_minus_beta1 = 1.0 - hp.beta1;
            c.beta2 = hp.beta2;
            c.one_minus_beta2 = 1.0 - hp.beta2;
            c.eps = hp.eps;
            c.l2 = hp.decoupled ? 0.0 : hp.weight_decay;
            c.decay_factor = hp.decoupled ? 1.0 - rate * hp.weight_decay : 1.0;
            c.grad_step = rate * (1.0 - mu) / (1.0 - prod);
            c.momentum_step = rate * mu_next / (1.0 - prod_next);
            c.bias_correction2 = 1.0 - pow(hp.beta2, t);
            c.maximize = hp.maximize;
            memcpy(g, closed ? theta : grads + (size_t)s * n, n * sizeof(double));
            if (single)
                step_float(theta, g, m, v, n, &c);
            else
                step_double(theta, g, m, v, n, &c);
            memcpy(rows[0] + (size_t)s * n, theta, n * sizeof(double));
            memcpy(rows[1] + (size_t)s * n, m, n * sizeof(double));
            memcpy(rows[2] + (size_t)s * n, v, n * sizeof(double));
            prods[s] = prod;
        }
        const char *names[3] = {"param", "exp_avg", "exp_avg_sq"};
        for (int q = 0; q < 3; q++) {
            Out *o = &out[4 * i + q];
            snprintf(o->name, sizeof o->name, "%s.%d", names[q], i);
            snprintf(o->shape, sizeof o->shape, "%ld%s%s", steps, shape[0] ? "," : "", shape);
            o->f32 = single;
            o->values = rows[q];
            o->count = n * (size_t)steps;
        }
        Out *o = &out[4 * i + 3];
        snprintf(o->name, sizeof o->name, "mu_product.%d", i);
        snprintf(o->shape, sizeof o->shape, "%ld", steps);
        o->values = prods;
        o->count = (size_t)steps;
        free(theta), free(m), free(v), free(lr), free(grads), free(g);
    }
    st_write(argv[arg + 1], out, 4 * params);
    return 0;
}
