/*
 * fleetgate: account field rules (email, password policy, name).
 */

#include <string.h>

#include "fleet_account.h"


/* the most common passwords of 8 characters or more (public breach
 * corpora); compared without regard to ASCII case */
static const char  *fleet_common_passwords[] = {
    "password", "password1", "password12", "password123", "passw0rd",
    "12345678", "123456789", "1234567890", "0123456789", "12345678910",
    "87654321", "11111111", "00000000", "88888888", "12341234",
    "qwertyui", "qwertyuiop", "qwerty123", "qwerty12", "1q2w3e4r",
    "1q2w3e4r5t", "1qaz2wsx", "zaq12wsx", "qazwsxedc", "q1w2e3r4",
    "asdfghjkl", "asdfasdf", "abcd1234", "abc12345", "abcdefgh",
    "aa123456", "1234qwer", "iloveyou", "sunshine", "princess",
    "football", "baseball", "welcome1", "welcome123", "letmein1",
    "trustno1", "superman", "starwars", "computer", "whatever",
    "changeme", "admin123", "administrator", "michelle", "jennifer",
    NULL
};


static int
fleet_ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}


static int
fleet_ascii_caseeq(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t  i;

    if (alen != blen) {
        return 0;
    }

    for (i = 0; i < alen; i++) {
        if (fleet_ascii_lower((unsigned char) a[i])
            != fleet_ascii_lower((unsigned char) b[i]))
        {
            return 0;
        }
    }

    return 1;
}


static size_t
fleet_utf8_chars(const char *s, size_t len)
{
    size_t  i, n;

    for (i = 0, n = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


static int
fleet_email_local_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9') || c >= 0x80)
    {
        /* bytes >= 0x80: UTF-8 local parts (RFC 6531) */
        return 1;
    }

    return c != '\0' && strchr("!#$%&'*+/=?^_`{|}~.-", c) != NULL;
}


static int
fleet_email_domain_ok(const char *d, size_t len)
{
    size_t         i, label, labels;
    unsigned char  c, prev;
    int            tld_alpha;

    if (len == 0 || len > 253) {
        return 0;
    }

    label = 0;
    labels = 1;
    prev = '.';
    tld_alpha = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) d[i];

        if (c == '.') {
            if (label == 0 || prev == '-') {
                return 0;
            }

            label = 0;
            labels++;
            tld_alpha = 0;
            prev = c;
            continue;
        }

        if (c == '-') {
            if (label == 0) {
                return 0;
            }

        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            tld_alpha = 1;

        } else if (c < '0' || c > '9') {
            return 0;
        }

        if (++label > 63) {
            return 0;
        }

        prev = c;
    }

    /* a dot in the domain, no empty last label, no all-digit top level
     * (an IP address is not a mail domain here) */
    return labels >= 2 && label > 0 && prev != '-' && tld_alpha;
}


const char *
fleet_account_email_check(const char *s, size_t len)
{
    size_t       i, at;
    const char  *bad = "email must be an email address (name@example.com)";

    if (len > FLEET_EMAIL_MAX) {
        return "email must be at most 254 characters";
    }

    at = len;

    for (i = 0; i < len; i++) {
        if (s[i] == '@') {
            if (at != len) {
                return bad;
            }

            at = i;
        }
    }

    if (at == len || at == 0 || at > 64) {
        return bad;
    }

    for (i = 0; i < at; i++) {
        if (!fleet_email_local_char((unsigned char) s[i])) {
            return bad;
        }

        if (s[i] == '.' && (i == 0 || i + 1 == at || s[i + 1] == '.')) {
            return bad;
        }
    }

    if (!fleet_email_domain_ok(s + at + 1, len - at - 1)) {
        return bad;
    }

    return NULL;
}


const char *
fleet_account_password_check(const char *pw, size_t len, const char *email,
    size_t email_len)
{
    size_t        i, step, at;
    const char  **common;

    if (fleet_utf8_chars(pw, len) < FLEET_PASSWORD_MIN_CHARS) {
        return "password must be at least 8 characters";
    }

    if (fleet_utf8_chars(pw, len) > FLEET_PASSWORD_MAX_CHARS) {
        return "password must be at most 1024 characters";
    }

    /* "aaaaaaaa", "€€€€€€€€": one character over and over */
    step = 1;

    while (step < len && step < 4
           && ((unsigned char) pw[step] & 0xc0) == 0x80)
    {
        step++;
    }

    for (i = step; i < len; i++) {
        if (pw[i] != pw[i % step]) {
            break;
        }
    }

    if (i == len && len % step == 0) {
        return "password must not be one character repeated";
    }

    for (common = fleet_common_passwords; *common; common++) {
        if (fleet_ascii_caseeq(pw, len, *common, strlen(*common))) {
            return "password is too common: choose another one";
        }
    }

    if (email != NULL && email_len > 0) {
        at = 0;

        while (at < email_len && email[at] != '@') {
            at++;
        }

        if (fleet_ascii_caseeq(pw, len, email, email_len)
            || fleet_ascii_caseeq(pw, len, email, at))
        {
            return "password must not be the email address";
        }
    }

    return NULL;
}


const char *
fleet_account_name_check(const char *s, size_t len)
{
    size_t         i, n;
    unsigned char  c;
    int            blank;

    n = fleet_utf8_chars(s, len);

    if (n == 0) {
        return "name must not be empty";
    }

    if (n > FLEET_NAME_MAX_CHARS) {
        return "name must be at most 100 characters";
    }

    blank = 1;

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        /* C0, DEL, and C1 (U+0080..U+009F, UTF-8 C2 80..C2 9F) */
        if (c < 0x20 || c == 0x7f
            || (c == 0xc2 && i + 1 < len
                && (unsigned char) s[i + 1] >= 0x80
                && (unsigned char) s[i + 1] <= 0x9f))
        {
            return "name must not contain control characters";
        }

        if (c != ' ') {
            blank = 0;
        }
    }

    if (blank) {
        return "name must not be blank";
    }

    return NULL;
}
