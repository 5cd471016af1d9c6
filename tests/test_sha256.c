/*
 * test_sha256.c: SHA-256 (the fast libcrypto one and the plain C reference) against the NIST
 * FIPS 180-4 example vectors and against each other on random inputs of every length up to
 * 1 KB and split at random, incremental hashing split at every offset against the one-shot
 * hash, HMAC-SHA256 against RFC 4231, and the constant-time comparison.
 */
#include "tests/test.h"
#include "util/sha256.h"

static void check_hex(const uint8_t d[32], const char *want, const char *what) {
    char hex[65];
    sha256_hex(d, hex);
    CHECK_MSG(strcmp(hex, want) == 0, "%s: got %s, want %s", what, hex, want);
}

static void sha256_ref(const void *data, size_t n, uint8_t out[32]) {
    sha256_ref_ctx c;
    sha256_ref_init(&c);
    sha256_ref_update(&c, data, n);
    sha256_ref_final(&c, out);
}

static void check_sha(const void *data, size_t n, const char *want, const char *what) {
    uint8_t d[32];
    sha256(data, n, d);
    check_hex(d, want, what);
    sha256_ref(data, n, d);
    check_hex(d, want, what);
}

TEST(fast_equals_reference) {
    static uint8_t msg[1024];
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < sizeof msg; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        msg[i] = (uint8_t)x;
    }
    for (size_t n = 0; n <= sizeof msg; n++) {
        uint8_t a[32], b[32];
        sha256_ctx c;
        sha256_ref_ctx r;
        size_t cut = n ? (size_t)(x % n) : 0;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        sha256_init(&c);
        sha256_update(&c, msg, cut);
        sha256_update(&c, msg + cut, n - cut);
        sha256_final(&c, a);
        sha256_ref_init(&r);
        sha256_ref_update(&r, msg, n - cut);
        sha256_ref_update(&r, msg + n - cut, cut);
        sha256_ref_final(&r, b);
        CHECK_MSG(memcmp(a, b, 32) == 0, "length %zu: fast and reference differ", n);
    }
}

TEST(nist_short_messages) {
    check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty");
    check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_sha(m448, strlen(m448),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "448 bits");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    check_sha(m896, strlen(m896),
              "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1", "896 bits");
}

TEST(nist_million_a) {
    /* Fed in uneven pieces so the buffering path is exercised too. */
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    sha256_ctx c;
    sha256_init(&c);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        sha256_update(&c, chunk, n);
        left -= n;
    }
    uint8_t d[32];
    sha256_final(&c, d);
    check_hex(d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "1e6 x a");
}

TEST(incremental_equals_one_shot_at_every_split) {
    uint8_t msg[200], want[32], got[32];
    for (int i = 0; i < 200; i++) msg[i] = (uint8_t)(i * 37 + 11);
    sha256(msg, sizeof msg, want);
    for (size_t cut = 0; cut <= sizeof msg; cut++) {
        sha256_ctx c;
        sha256_init(&c);
        sha256_update(&c, msg, cut);
        sha256_update(&c, msg + cut, sizeof msg - cut);
        sha256_final(&c, got);
        CHECK_MSG(memcmp(got, want, 32) == 0, "split at %zu differs", cut);
    }
    /* and byte by byte, with empty updates between */
    sha256_ctx c;
    sha256_init(&c);
    for (size_t i = 0; i < sizeof msg; i++) {
        sha256_update(&c, msg + i, 1);
        sha256_update(&c, msg, 0);
    }
    sha256_final(&c, got);
    CHECK(memcmp(got, want, 32) == 0);
}

/* Message lengths around the padding boundary (55, 56, 63, 64, 65 bytes) against values
 * computed with Python's hashlib. */
TEST(padding_boundaries) {
    char m[65];
    memset(m, 'x', sizeof m);
    check_sha(m, 55, "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072", "55");
    check_sha(m, 56, "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e", "56");
    check_sha(m, 63, "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2", "63");
    check_sha(m, 64, "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c", "64");
    check_sha(m, 65, "9537c5fdf120482f7d58d25e9ed583f52c02b4e304ea814db1633ad565aed7e9", "65");
}

struct hmac_case {
    const char *name;
    uint8_t key[131];
    size_t keylen;
    const char *data;
    size_t datalen;
    const char *want;
};

TEST(rfc4231_hmac) {
    struct hmac_case cases[6];
    uint8_t dd[50], cd[50];
    memset(dd, 0xdd, sizeof dd);
    memset(cd, 0xcd, sizeof cd);
    /* 1: a 20-byte key of 0x0b */
    cases[0] = (struct hmac_case){"1", {0}, 20, "Hi There", 8,
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"};
    memset(cases[0].key, 0x0b, 20);
    /* 2: a key shorter than the output */
    cases[1] = (struct hmac_case){"2", "Jefe", 4, "what do ya want for nothing?", 28,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"};
    /* 3: 0xaa key, 50 bytes of 0xdd */
    cases[2] = (struct hmac_case){"3", {0}, 20, (const char *)dd, 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"};
    memset(cases[2].key, 0xaa, 20);
    /* 4: key 0x01..0x19, 50 bytes of 0xcd */
    cases[3] = (struct hmac_case){"4", {0}, 25, (const char *)cd, 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"};
    for (int i = 0; i < 25; i++) cases[3].key[i] = (uint8_t)(i + 1);
    /* 6: a 131-byte key, longer than the block, is hashed first */
    const char *d6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    cases[4] = (struct hmac_case){"6", {0}, 131, d6, strlen(d6),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"};
    memset(cases[4].key, 0xaa, 131);
    /* 7: long key and data longer than the block */
    const char *d7 = "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the HMAC "
                     "algorithm.";
    cases[5] = (struct hmac_case){"7", {0}, 131, d7, strlen(d7),
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"};
    memset(cases[5].key, 0xaa, 131);
    for (int i = 0; i < 6; i++) {
        uint8_t mac[32];
        sha256_hmac(cases[i].key, cases[i].keylen, cases[i].data, cases[i].datalen, mac);
        char what[32];
        snprintf(what, sizeof what, "RFC 4231 case %s", cases[i].name);
        check_hex(mac, cases[i].want, what);
    }
}

TEST(constant_time_equal) {
    uint8_t a[32], b[32];
    sha256("x", 1, a);
    memcpy(b, a, 32);
    CHECK(sha256_equal(a, b, 32) == 1);
    CHECK(sha256_equal(a, b, 0) == 1);
    for (int i = 0; i < 32; i++) {
        b[i] ^= 0x80;
        CHECK(sha256_equal(a, b, 32) == 0);
        b[i] ^= 0x80;
    }
}

TEST_MAIN()
