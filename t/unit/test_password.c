/*
 * Unit tests: PBKDF2 password hashes in Django's encoding.
 */

#include "tap.h"
#include "fleet_password.h"


int
main(void)
{
    char  h[FLEET_PASSWORD_HASH_MAX + 1], h2[FLEET_PASSWORD_HASH_MAX + 1];

    /* computed independently with Python's hashlib.pbkdf2_hmac */
    const char *django = "pbkdf2_sha256$1000$seasalt$"
                         "JgZryXe2Ga8ysg6XbzkLpTdyPQrHqsinbL9BnnhgX4A=";

    is_int(fleet_password_verify("l\xc3\xa8tmein", 8, django, strlen(django)),
           1, "known vector verifies");
    is_int(fleet_password_verify("letmein", 7, django, strlen(django)),
           0, "wrong password");

    is_int(fleet_password_hash("secret-pw", 9, 2000, h, sizeof(h)), 0,
           "hash");
    ok(strncmp(h, "pbkdf2_sha256$2000$", 19) == 0, "encoding prefix: %s", h);
    is_int(fleet_password_verify("secret-pw", 9, h, strlen(h)), 1,
           "roundtrip");
    is_int(fleet_password_verify("secret-pX", 9, h, strlen(h)), 0,
           "one character off");

    is_int(fleet_password_hash("secret-pw", 9, 2000, h2, sizeof(h2)), 0,
           "second hash");
    ok(strcmp(h, h2) != 0, "salts differ");

    is_int(fleet_password_verify("x", 1, "plaintext", 9), -1,
           "not an encoded hash");
    is_int(fleet_password_verify("x", 1, "pbkdf2_sha256$0$s$h", 19), -1,
           "zero iterations");
    is_int(fleet_password_verify("x", 1,
                                 "pbkdf2_sha256$99999999999$s$"
                                 "JgZryXe2Ga8ysg6XbzkLpTdyPQrHqsinbL9BnnhgX4A=",
                                 72), -1, "iterations out of range");
    is_int(fleet_password_verify("x", 1, "pbkdf2_sha256$1000$seasalt$abc", 30),
           -1, "short hash");
    is_int(fleet_password_hash("x", 1, 0, h, sizeof(h)), -1,
           "zero iterations refused when hashing");
    is_int(fleet_password_hash("x", 1, 1000, h, 10), -1, "small buffer");

    return done_testing();
}
