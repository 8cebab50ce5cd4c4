/*
 * fleetgate: device signatures (SPEC section 2).
 */

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "fleet_sig.h"


static const char  fleet_hex[] = "0123456789abcdef";


static void
fleet_sig_digest2(const unsigned char *a, size_t alen,
    const unsigned char *b, size_t blen,
    const unsigned char *secret, size_t secret_len, unsigned char *md)
{
    EVP_MD_CTX    *ctx;
    unsigned int   mdlen;

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL
        || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1
        || EVP_DigestUpdate(ctx, a, alen) != 1
        || EVP_DigestUpdate(ctx, b, blen) != 1
        || EVP_DigestUpdate(ctx, secret, secret_len) != 1
        || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
    {
        /* never matches a presented signature: all-ones is not a digest we
         * can be fooled into accepting because callers compare 32 bytes
         * that a device cannot know in advance */
        memset(md, 0xff, 32);
        md[0] ^= (unsigned char) (alen ^ blen);
    }

    EVP_MD_CTX_free(ctx);
}


static int
fleet_hex_decode32(const unsigned char *hex, size_t len, unsigned char *out)
{
    size_t         i;
    unsigned char  c, v;

    if (len != FLEET_SHA256_HEX_LEN) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        c = hex[i];

        if (c >= '0' && c <= '9') {
            v = (unsigned char) (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v = (unsigned char) ((c | 0x20) - 'a' + 10);

        } else {
            return -1;
        }

        if (i & 1) {
            out[i / 2] |= v;

        } else {
            out[i / 2] = (unsigned char) (v << 4);
        }
    }

    return 0;
}


static int
fleet_digest_matches(const unsigned char *md, const unsigned char *presented,
    size_t presented_len)
{
    unsigned char  want[32];

    if (fleet_hex_decode32(presented, presented_len, want) != 0) {
        return 0;
    }

    return CRYPTO_memcmp(md, want, 32) == 0;
}


void
fleet_sig_hex(const unsigned char *data, size_t len,
    const unsigned char *secret, size_t secret_len, char *hex)
{
    size_t         i;
    unsigned char  md[32];

    fleet_sig_digest2(data, len, NULL, 0, secret, secret_len, md);

    for (i = 0; i < 32; i++) {
        hex[2 * i] = fleet_hex[md[i] >> 4];
        hex[2 * i + 1] = fleet_hex[md[i] & 0xf];
    }

    hex[64] = '\0';
}


int
fleet_sig_verify(const unsigned char *data, size_t len,
    const unsigned char *secret, size_t secret_len,
    const unsigned char *presented, size_t presented_len)
{
    unsigned char  md[32];

    fleet_sig_digest2(data, len, NULL, 0, secret, secret_len, md);

    return fleet_digest_matches(md, presented, presented_len);
}


static int
fleet_is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}


/*
 * Walks the top-level object once, remembering where its last member starts
 * (the separating comma, or just after '{' for a sole member), where its key
 * ends and where a string value ends.  Nested values are skipped by depth.
 */

int
fleet_mqtt_sig_locate(const unsigned char *msg, size_t len,
    size_t *cut_start, size_t *cut_end,
    const unsigned char **sig, size_t *sig_len)
{
    int            in_str, esc, expect_key, key_done, val_is_str;
    size_t         i, depth, sep, key_s, key_e, val_s, val_e, str_s;
    unsigned char  c;

    i = 0;
    while (i < len && fleet_is_ws(msg[i])) {
        i++;
    }

    if (i == len || msg[i] != '{') {
        return -1;
    }

    depth = 1;
    sep = i + 1;
    in_str = 0;
    esc = 0;
    expect_key = 1;
    key_done = 0;
    val_is_str = 0;
    key_s = key_e = val_s = val_e = str_s = 0;

    for (i++; i < len; i++) {
        c = msg[i];

        if (in_str) {
            if (esc) {
                esc = 0;

            } else if (c == '\\') {
                esc = 1;

            } else if (c == '"') {
                in_str = 0;

                if (depth == 1 && expect_key) {
                    key_s = str_s;
                    key_e = i + 1;
                    expect_key = 0;
                    key_done = 1;

                } else if (depth == 1 && key_done && str_s == val_s) {
                    val_e = i + 1;
                    val_is_str = 1;
                }
            }

            continue;
        }

        switch (c) {

        case '"':
            in_str = 1;
            str_s = i;
            break;

        case '{':
        case '[':
            depth++;
            break;

        case ']':
            if (depth < 2) {
                return -1;
            }
            depth--;
            break;

        case '}':
            depth--;
            if (depth == 0) {
                goto closed;
            }
            break;

        case ',':
            if (depth == 1) {
                sep = i;
                expect_key = 1;
                key_done = 0;
                val_is_str = 0;
            }
            break;

        case ':':
            if (depth == 1 && key_done) {
                /* the value starts at the next non-space byte */
                val_s = i + 1;
                while (val_s < len && fleet_is_ws(msg[val_s])) {
                    val_s++;
                }
            }
            break;

        default:
            break;
        }
    }

    return -1;

closed:

    for (i++; i < len; i++) {
        if (!fleet_is_ws(msg[i])) {
            return -1;
        }
    }

    if (!key_done || !val_is_str
        || key_e - key_s != sizeof("\"sha256\"") - 1
        || memcmp(msg + key_s, "\"sha256\"", key_e - key_s) != 0)
    {
        return -1;
    }

    /* nothing but whitespace may follow the value inside the object */
    for (i = val_e; msg[i] != '}'; i++) {
        if (!fleet_is_ws(msg[i])) {
            return -1;
        }
    }

    *cut_start = sep;
    *cut_end = val_e;
    *sig = msg + val_s + 1;
    *sig_len = val_e - val_s - 2;

    return 0;
}


/* S with whitespace outside strings removed; returns the new length */
static size_t
fleet_json_compact(const unsigned char *s, size_t len, unsigned char *out)
{
    int            in_str, esc;
    size_t         i, n;
    unsigned char  c;

    in_str = 0;
    esc = 0;

    for (i = 0, n = 0; i < len; i++) {
        c = s[i];

        if (in_str) {
            if (esc) {
                esc = 0;

            } else if (c == '\\') {
                esc = 1;

            } else if (c == '"') {
                in_str = 0;
            }

        } else if (c == '"') {
            in_str = 1;

        } else if (fleet_is_ws(c)) {
            continue;
        }

        out[n++] = c;
    }

    return n;
}


int
fleet_mqtt_sig_verify(const unsigned char *msg, size_t len,
    const unsigned char *secret, size_t secret_len, unsigned char *scratch)
{
    size_t               cs, ce, sl, n;
    unsigned char        md[32];
    const unsigned char *sig;

    if (fleet_mqtt_sig_locate(msg, len, &cs, &ce, &sig, &sl) != 0) {
        return -1;
    }

    fleet_sig_digest2(msg, cs, msg + ce, len - ce, secret, secret_len, md);

    if (fleet_digest_matches(md, sig, sl)) {
        return 1;
    }

    n = fleet_json_compact(msg, cs, scratch);
    n += fleet_json_compact(msg + ce, len - ce, scratch + n);

    fleet_sig_digest2(scratch, n, NULL, 0, secret, secret_len, md);

    return fleet_digest_matches(md, sig, sl);
}


size_t
fleet_mqtt_sign(const unsigned char *msg, size_t len,
    const unsigned char *secret, size_t secret_len, unsigned char *out)
{
    size_t  n, i;
    char    hex[FLEET_SHA256_HEX_LEN + 1];

    n = len;
    while (n > 0 && fleet_is_ws(msg[n - 1])) {
        n--;
    }

    if (n < 2 || msg[n - 1] != '}') {
        return 0;
    }

    /* the device signs its compact text, trailing whitespace excluded */
    fleet_sig_hex(msg, n, secret, secret_len, hex);

    n--;
    memcpy(out, msg, n);

    /* an empty object gets no separating comma */
    i = n;
    while (i > 0 && fleet_is_ws(msg[i - 1])) {
        i--;
    }

    if (i == 0) {
        return 0;
    }

    if (msg[i - 1] != '{') {
        out[n++] = ',';
    }

    memcpy(out + n, "\"sha256\":\"", sizeof("\"sha256\":\"") - 1);
    n += sizeof("\"sha256\":\"") - 1;
    memcpy(out + n, hex, FLEET_SHA256_HEX_LEN);
    n += FLEET_SHA256_HEX_LEN;
    out[n++] = '"';
    out[n++] = '}';

    return n;
}
