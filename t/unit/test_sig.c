/*
 * Unit tests: device signatures over HTTP bodies and MQTT messages.
 */

#include <stdlib.h>

#include "tap.h"
#include "fleet_sig.h"

#define SECRET      "modernchabackdoor"
#define SECRET_LEN  (sizeof(SECRET) - 1)


static int
mqtt_verify(const char *msg)
{
    int             rc;
    size_t          len;
    unsigned char  *scratch;

    len = strlen(msg);
    scratch = malloc(len + 1);
    rc = fleet_mqtt_sig_verify((const unsigned char *) msg, len,
                               (const unsigned char *) SECRET, SECRET_LEN,
                               scratch);
    free(scratch);

    return rc;
}


/* signs compact text the way a device does and checks it verifies */
static char *
device_sign(const char *compact)
{
    size_t  len, n;
    char   *out;

    len = strlen(compact);
    out = malloc(len + 80);
    n = fleet_mqtt_sign((const unsigned char *) compact, len,
                        (const unsigned char *) SECRET, SECRET_LEN,
                        (unsigned char *) out);
    out[n] = '\0';

    return n ? out : NULL;
}


static void
test_http_vector(void)
{
    char        hex[65];
    const char *body = "{\"chip_id\":\"24AB3C91\",\"mac_address\":"
                       "\"24:6F:28:AB:3C:91\",\"firmware_version\":"
                       "\"car_wash_v1.00\"}";
    const char *want = "19604ab700d08658c2b44aa88efef97e"
                       "4204bad6df3081ac71fa2362febb5383";
    const char *upper = "19604AB700D08658C2B44AA88EFEF97E"
                        "4204BAD6DF3081AC71FA2362FEBB5383";

    fleet_sig_hex((const unsigned char *) body, strlen(body),
                  (const unsigned char *) SECRET, SECRET_LEN, hex);
    is_str(hex, want, "SPEC section 2 test vector");

    ok(fleet_sig_verify((const unsigned char *) body, strlen(body),
                        (const unsigned char *) SECRET, SECRET_LEN,
                        (const unsigned char *) want, 64) == 1,
       "vector verifies");
    ok(fleet_sig_verify((const unsigned char *) body, strlen(body),
                        (const unsigned char *) SECRET, SECRET_LEN,
                        (const unsigned char *) upper, 64) == 1,
       "uppercase hex verifies");
    ok(fleet_sig_verify((const unsigned char *) body, strlen(body) - 1,
                        (const unsigned char *) SECRET, SECRET_LEN,
                        (const unsigned char *) want, 64) == 0,
       "one byte less fails");
    ok(fleet_sig_verify((const unsigned char *) body, strlen(body),
                        (const unsigned char *) SECRET, SECRET_LEN,
                        (const unsigned char *) want, 63) == 0,
       "short signature fails");
    ok(fleet_sig_verify((const unsigned char *) body, strlen(body),
                        (const unsigned char *) SECRET, SECRET_LEN,
                        (const unsigned char *) "", 0) == 0,
       "empty signature fails");
    ok(fleet_sig_verify((const unsigned char *) body, strlen(body),
                        (const unsigned char *) "x", 1,
                        (const unsigned char *) want, 64) == 0,
       "other secret fails");
    ok(fleet_sig_verify((const unsigned char *) body, strlen(body),
                        (const unsigned char *) SECRET, SECRET_LEN,
                        (const unsigned char *)
                        "19604ab700d08658c2b44aa88efef97e"
                        "4204bad6df3081ac71fa2362febb538g", 64) == 0,
       "non-hex character fails");
}


static void
test_mqtt_roundtrips(void)
{
    size_t       i;
    char        *signed_msg;
    const char  *cases[] = {
        "{\"rssi\":-76,\"status\":\"NORMAL\",\"uptime\":39623,"
        "\"timestamp\":1758358335794}",
        "{\"value\":23.7,\"other\":1.0,\"neg\":-5,\"exp\":1e-7}",
        "{\"name\":\"caf\\u00e9 \\\"quoted\\\" , } { sha256\","
        "\"raw\":\"\xe0\xb8\xa3\xe0\xb8\xb0\xe0\xb8\x9a\"}",
        "{\"a\":{\"b\":[1,{\"c\":\"}\"}],\"sha256\":\"nested is fine\"}}",
        "{}",
        "{\"sha256x\":\"not it\",\"k\":[]}",
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        signed_msg = device_sign(cases[i]);
        ok(signed_msg && mqtt_verify(signed_msg) == 1,
           "signed message %zu verifies", i);

        if (signed_msg) {
            /* one changed byte of the payload must break it */
            signed_msg[1] ^= 0x01;
            ok(mqtt_verify(signed_msg) != 1, "tampered message %zu fails", i);
            free(signed_msg);
        }
    }
}


static void
test_mqtt_forms(void)
{
    char  *s, *pretty;
    char   hex[65];
    const char  *compact = "{\"chip_id\":\"24AB3C91\",\"mac_address\":"
                           "\"24:6F:28:AB:3C:91\",\"firmware_version\":"
                           "\"car_wash_v1.00\"}";

    /* seed 004: pretty-printed message signed over its compact form */
    fleet_sig_hex((const unsigned char *) compact, strlen(compact),
                  (const unsigned char *) SECRET, SECRET_LEN, hex);

    pretty = malloc(512);
    snprintf(pretty, 512,
             "{\n  \"chip_id\": \"24AB3C91\",\n"
             "  \"mac_address\": \"24:6F:28:AB:3C:91\",\n"
             "  \"firmware_version\": \"car_wash_v1.00\",\n"
             "  \"sha256\": \"%s\"\n}\n", hex);
    is_int(mqtt_verify(pretty), 1, "pretty-printed, signed compact");

    /* whitespace inside strings is part of the message */
    snprintf(pretty, 512,
             "{\n  \"chip_id\": \"24AB 3C91\",\n"
             "  \"sha256\": \"%s\"\n}", hex);
    is_int(mqtt_verify(pretty), 0, "string contents are not compacted");
    free(pretty);

    is_int(mqtt_verify("{\"a\":1}"), -1, "no sha256 member");
    is_int(mqtt_verify("{\"sha256\":\"00\",\"a\":1}"), -1,
           "sha256 not last");
    is_int(mqtt_verify("{\"a\":1,\"sha256\":12}"), -1,
           "sha256 not a string");
    is_int(mqtt_verify("[1,2]"), -1, "not an object");
    is_int(mqtt_verify("{\"a\":\"x,\\\"sha256\\\":\\\"y\"}"), -1,
           "sha256 inside a string is not a member");
    is_int(mqtt_verify("{\"a\":1,\"sha256\":\"ab\"} x"), -1,
           "trailing garbage");
    is_int(mqtt_verify(""), -1, "empty");
    is_int(mqtt_verify("{\"a\":\"unterminated"), -1, "unterminated string");

    s = device_sign("{\"a\":1}   ");
    ok(s && mqtt_verify(s) == 1, "trailing whitespace before signing");
    free(s);

    is_int(mqtt_verify("{\"a\":1,\"sha256\":\""
                       "0000000000000000000000000000000000000000000000000000000000000000"
                       "\"}"), 0, "wrong signature");
}


int
main(void)
{
    test_http_vector();
    test_mqtt_roundtrips();
    test_mqtt_forms();

    return done_testing();
}
