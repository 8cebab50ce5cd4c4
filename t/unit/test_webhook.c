/*
 * Unit tests: payment webhook signatures (x-webhook-signature, SPEC 8).
 */

#include "tap.h"
#include "fleet_webhook.h"

#define SECRET      "whsec-test-secret"
#define SECRET_LEN  (sizeof(SECRET) - 1)


static int
verify(const char *body, const char *header)
{
    return fleet_webhook_verify((const unsigned char *) body, strlen(body),
                                (const unsigned char *) SECRET, SECRET_LEN,
                                (const unsigned char *) header,
                                strlen(header));
}


int
main(void)
{
    char        sig[FLEET_WEBHOOK_SIG_LEN + 1], bad[FLEET_WEBHOOK_SIG_LEN + 8];
    size_t      i;
    const char *body = "{\"chargeId\":\"ch_1\",\"status\":\"SUCCEEDED\","
                       "\"timestamp\":1758358335794}";

    /* RFC 4231 test case 2 */
    ok(fleet_webhook_sign((const unsigned char *) "what do ya want for "
                          "nothing?", 28, (const unsigned char *) "Jefe", 4,
                          sig) == 0, "sign succeeds");
    is_str(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839d"
                "ec58b964ec3843", "RFC 4231 test case 2");

    /* RFC 4231 test case 1: 20 bytes of 0x0b, "Hi There" */
    ok(fleet_webhook_sign((const unsigned char *) "Hi There", 8,
                          (const unsigned char *) "\x0b\x0b\x0b\x0b\x0b\x0b"
                          "\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b"
                          "\x0b\x0b", 20, sig) == 0
       && strcmp(sig, "sha256=b0344c61d8db38535ca8afceaf0bf12b881dc200c9833d"
                      "a726e9376c2e32cff7") == 0,
       "RFC 4231 test case 1");

    /* an empty body has a signature too */
    ok(fleet_webhook_sign((const unsigned char *) "", 0,
                          (const unsigned char *) "key", 3, sig) == 0
       && strcmp(sig, "sha256=5d5d139563c95b5967b9bd9a8c9b233a9dedb45072794cd"
                      "232dc1b74832607d0") == 0,
       "empty body");

    is_int(fleet_webhook_sign((const unsigned char *) "x", 1,
                              (const unsigned char *) "", 0, sig), -1,
           "an empty secret signs nothing");

    ok(fleet_webhook_sign((const unsigned char *) body, strlen(body),
                          (const unsigned char *) SECRET, SECRET_LEN, sig)
       == 0, "sign the test body");
    is_int(strlen(sig), FLEET_WEBHOOK_SIG_LEN, "length sha256= + 64");

    is_int(verify(body, sig), 1, "its own signature verifies");

    strcpy(bad, sig);
    for (i = 0; bad[i]; i++) {
        if (bad[i] >= 'a' && bad[i] <= 'z') {
            bad[i] = (char) (bad[i] - 'a' + 'A');
        }
    }
    is_int(verify(body, bad), 1, "upper-case scheme and hex verify");

    strcpy(bad, sig);
    bad[FLEET_WEBHOOK_SIG_LEN - 1] = bad[FLEET_WEBHOOK_SIG_LEN - 1] == '0'
                                     ? '1' : '0';
    is_int(verify(body, bad), 0, "last digit changed");

    strcpy(bad, sig);
    bad[7] = bad[7] == 'a' ? 'b' : 'a';
    is_int(verify(body, bad), 0, "first digit changed");

    is_int(verify("{\"chargeId\":\"ch_1\",\"status\":\"FAILED\","
                  "\"timestamp\":1758358335794}", sig), 0,
           "another body does not verify");
    is_int(verify(body, sig + 7), 0, "bare hex without the scheme");

    strcpy(bad, "sha1=");
    strcat(bad, sig + 7);
    is_int(verify(body, bad), 0, "sha1= scheme");

    strcpy(bad, "sha512");
    strcat(bad, sig + 6);
    is_int(verify(body, bad), 0, "sha512= scheme");

    strcpy(bad, sig);
    bad[6] = ':';
    is_int(verify(body, bad), 0, "sha256: instead of sha256=");

    strcpy(bad, sig);
    bad[0] = 0x13;  /* 0x13 | 0x20 is 's': no folding of non-letters */
    is_int(verify(body, bad), 0, "control character in the scheme");

    strcpy(bad, sig);
    bad[20] = 'g';
    is_int(verify(body, bad), 0, "a non-hex digit");

    strcpy(bad, sig);
    strcat(bad, "0");
    is_int(verify(body, bad), 0, "one digit too many");

    strcpy(bad, sig);
    bad[FLEET_WEBHOOK_SIG_LEN - 1] = '\0';
    is_int(verify(body, bad), 0, "one digit too few");

    is_int(verify(body, ""), 0, "empty header");
    is_int(fleet_webhook_verify((const unsigned char *) body, strlen(body),
                                (const unsigned char *) SECRET, SECRET_LEN,
                                NULL, 0), 0, "no header");
    is_int(fleet_webhook_verify((const unsigned char *) body, strlen(body),
                                (const unsigned char *) "", 0,
                                (const unsigned char *) sig, strlen(sig)), 0,
           "an empty secret verifies nothing");
    is_int(fleet_webhook_verify((const unsigned char *) body, strlen(body),
                                (const unsigned char *) "other", 5,
                                (const unsigned char *) sig, strlen(sig)), 0,
           "another secret does not verify");

    return done_testing();
}
