/*
 * Unit tests: account field rules (email shape, password policy, name).
 */

#include "tap.h"
#include "fleet_account.h"


#define EMAIL(s)  fleet_account_email_check((s), strlen(s))
#define PW(s, e)  pw_check((s), (e))
#define NAME(s)   fleet_account_name_check((s), strlen(s))

static const char *
pw_check(const char *pw, const char *email)
{
    return fleet_account_password_check(pw, strlen(pw), email,
                                        email ? strlen(email) : 0);
}


static const char  *bad_email = "email must be an email address "
                                "(name@example.com)";


int
main(void)
{
    int          i;
    char         long_local[80], long_email[300], long_label[80];
    char         pw[5000];
    const char  *good[] = {
        "a@b.co", "alice@fleet.local", "Alice.Smith+tag@Example.COM",
        "o'brien@mail.example.ie", "x_y-z@sub-1.example.org",
        "user@xn--bcher-kva.example", "\xc3\xa9lodie@example.fr",
        "!#$%&'*+/=?^_`{|}~-@example.com", NULL
    };
    const char  *bad[] = {
        "", "plain", "@example.com", "alice@", "alice@@example.com",
        "al@ice@example.com", "alice@example", "alice@.example.com",
        "alice@example..com", "alice@example.com.", "alice@-example.com",
        "alice@example-.com", "alice@exa_mple.com", ".alice@example.com",
        "alice.@example.com", "al..ice@example.com", "al ice@example.com",
        "alice@example.com ", " alice@example.com", "alice@1.2.3.4",
        "alice@[127.0.0.1]", "\"al\"@example.com", "alice@ex\xc3\xa9.com",
        "alice,bob@example.com", "alice@example.c\tom", NULL
    };

    /* ---- email */
    for (i = 0; good[i]; i++) {
        ok(EMAIL(good[i]) == NULL, "email accepted: %s", good[i]);
    }

    for (i = 0; bad[i]; i++) {
        is_str(EMAIL(bad[i]), bad_email, "email refused: '%s'", bad[i]);
    }

    memset(long_local, 'a', 65);
    memcpy(long_local + 65, "@example.com", sizeof("@example.com"));
    is_str(EMAIL(long_local), bad_email, "local part of 65 refused");
    memset(long_local, 'a', 64);
    memcpy(long_local + 64, "@example.com", sizeof("@example.com"));
    ok(EMAIL(long_local) == NULL, "local part of 64 accepted");

    memset(long_label, 'b', 64);
    memcpy(long_label + 64, ".com", sizeof(".com"));
    memcpy(long_email, "a@", 2);
    memcpy(long_email + 2, long_label, strlen(long_label) + 1);
    is_str(EMAIL(long_email), bad_email, "domain label of 64 refused");

    memset(long_email, 'c', sizeof(long_email));
    memcpy(long_email, "a@", 2);
    for (i = 2 + 60; i < 255; i += 61) {
        long_email[i] = '.';
    }
    memcpy(long_email + 251, ".com", sizeof(".com"));
    is_int((long long) strlen(long_email), 255, "a 255-byte address");
    is_str(EMAIL(long_email), "email must be at most 254 characters",
           "255 bytes refused with its own message");
    memcpy(long_email + 241, ".com", sizeof(".com"));
    is_int((long long) strlen(long_email), 245, "a 245-byte address");
    ok(EMAIL(long_email) == NULL, "245 bytes accepted");

    /* ---- password */
    ok(PW("correct horse battery", NULL) == NULL, "passphrase accepted");
    ok(PW("Tr0ub4dor&3", "a@b.co") == NULL, "ordinary password accepted");
    ok(PW("12345678a", NULL) == NULL, "9 characters not in the list");
    ok(PW("        x", NULL) == NULL, "spaces are characters");
    is_str(PW("short", NULL), "password must be at least 8 characters",
           "5 characters");
    is_str(PW("1234567", NULL), "password must be at least 8 characters",
           "7 characters");
    /* 7 two-byte characters are 14 bytes but 7 characters */
    is_str(PW("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
              NULL),
           "password must be at least 8 characters",
           "characters, not bytes");
    ok(PW("\xc3\xa9t\xc3\xa9-\xc3\xa0-Paris", NULL) == NULL,
       "UTF-8 password accepted");
    is_str(PW("password", NULL), "password is too common: choose another one",
           "password");
    is_str(PW("PassWord123", NULL),
           "password is too common: choose another one", "case-blind list");
    is_str(PW("12345678", NULL), "password is too common: choose another one",
           "12345678");
    is_str(PW("aaaaaaaaaaaa", NULL),
           "password must not be one character repeated", "aaaa...");
    is_str(PW("\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
              "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", NULL),
           "password must not be one character repeated", "euro x 8");
    ok(PW("abababab", NULL) == NULL, "two characters alternating pass");
    is_str(PW("Alice.Smith@example.com", "alice.smith@example.com"),
           "password must not be the email address", "the email itself");
    is_str(PW("alice.smith", "alice.smith@example.com"),
           "password must not be the email address", "the local part");
    ok(PW("alice.smith", "bob@example.com") == NULL, "another email");

    memset(pw, 'x', 1024);
    pw[0] = 'y';
    pw[1024] = '\0';
    ok(PW(pw, NULL) == NULL, "1024 characters accepted");
    pw[1024] = 'z';
    pw[1025] = '\0';
    is_str(PW(pw, NULL), "password must be at most 1024 characters",
           "1025 characters refused");
    for (i = 0; i < 1024; i++) {
        memcpy(pw + 4 * i, "\xf0\x9f\x94\x91", 4);
    }
    pw[4096] = '\0';
    is_str(PW(pw, NULL), "password must not be one character repeated",
           "1024 four-byte characters counted as characters");
    pw[0] = 'a';
    for (i = 0; i < 1023; i++) {
        memcpy(pw + 1 + 4 * i, "\xf0\x9f\x94\x91", 4);
    }
    pw[4093] = '\0';
    ok(PW(pw, NULL) == NULL, "4093 bytes, 1024 characters accepted");

    /* ---- name */
    ok(NAME("Alice") == NULL, "name accepted");
    ok(NAME("Ren\xc3\xa9 O'Neil-Smith") == NULL, "UTF-8 name accepted");
    is_str(NAME(""), "name must not be empty", "empty");
    is_str(NAME("   "), "name must not be blank", "blank");
    is_str(NAME("a\nb"), "name must not contain control characters", "LF");
    is_str(NAME("a\x7f"), "name must not contain control characters", "DEL");
    is_str(NAME("a\xc2\x85"), "name must not contain control characters",
           "NEL (C1)");
    memset(pw, 'n', 101);
    pw[101] = '\0';
    is_str(NAME(pw), "name must be at most 100 characters", "101");
    pw[100] = '\0';
    ok(NAME(pw) == NULL, "100 accepted");

    return done_testing();
}
