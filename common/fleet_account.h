/*
 * fleetgate: the rules an account's fields follow (SPEC section 9):
 * email shape, password policy, display name.  Pure functions, so the
 * module, the unit tests and the fuzzers share them.
 *
 * Each check returns NULL when the value is acceptable, or the message
 * of the 400 VALIDATION_ERROR that refuses it (a static string).
 */

#ifndef FLEET_ACCOUNT_H
#define FLEET_ACCOUNT_H

#include <stddef.h>

#define FLEET_EMAIL_MAX             254     /* RFC 5321 path limit */
#define FLEET_PASSWORD_MIN_CHARS    8
#define FLEET_PASSWORD_MAX_CHARS    1024
#define FLEET_NAME_MAX_CHARS        100

/* addr-spec as mail systems accept it: local@domain.tld, ASCII domain */
const char *fleet_account_email_check(const char *s, size_t len);

/*
 * NIST SP 800-63B: at least 8 characters, no composition rules, every
 * character allowed; refused are the most common passwords, a single
 * repeated character, and the account's own email or its local part
 * (email may be NULL).  pw is valid UTF-8 (the JSON parser checked it).
 */
const char *fleet_account_password_check(const char *pw, size_t len,
    const char *email, size_t email_len);

/* 1 to 100 characters, not only spaces, no control characters */
const char *fleet_account_name_check(const char *s, size_t len);

#endif /* FLEET_ACCOUNT_H */
