import json

from sandboxd.monitor.webhooks import sign_v1, verify_v1


def test_signature_is_accepted_by_the_seed_function(seed_verify):
    secret = "secret-for-event-signature-verification"
    for body in (b'{"id":"x","type":"sandbox.lifecycle.killed"}', json.dumps({"k": "\u00e9" * 7}).encode(), b"{}"):
        sig = sign_v1(secret, body)
        assert not sig.endswith("=")
        assert seed_verify(secret, body, sig)
        assert not seed_verify(secret + "x", body, sig)
        assert not seed_verify(secret, body + b" ", sig)


def test_known_vector_and_both_alphabets():
    # sha256("s" + "{}") computed independently; standard base64 without padding.
    import base64
    import hashlib

    want = base64.b64encode(hashlib.sha256(b"s{}").digest()).decode().rstrip("=")
    assert sign_v1("s", b"{}") == want
    assert verify_v1("s", b"{}", want)
    assert verify_v1("s", b"{}", want.replace("+", "-").replace("/", "_"))
    assert not verify_v1("t", b"{}", want)
