"""Signs and validates fedmsg messages with the real fedmsg 1.1.7 crypto
(fedmsg.crypto with the x509_ng backend: cryptography and pyOpenSSL), for
fedhub's interoperability tests.

    python fedmsg_crypto.py sign < SPEC
        SPEC: {"ssldir": DIR, "items": [{"certname": NAME, "message": {...}}, ...]}
        prints, per item, the signed message as fedmsg puts it on the wire
        (fedmsg.encoding.dumps), one per line.

    python fedmsg_crypto.py validate < SPEC
        SPEC: {"config": {fedmsg config keys}, "messages": [BODY_TEXT, ...]}
        prints, per message, {"valid": bool, "error": null or text}: what
        fedmsg.crypto.validate says (an exception, such as a certificate that is
        not PEM, is reported as invalid with its text, as moksha drops the message).
"""

import json
import logging
import sys

import fedmsg.crypto
import fedmsg.crypto.x509_ng as x509_ng
import fedmsg.encoding


def main():
    logging.basicConfig(level=logging.CRITICAL)
    assert x509_ng._cryptography, "fedmsg's x509 backend failed to import"
    mode = sys.argv[1]
    spec = json.load(sys.stdin)
    if mode == "sign":
        for item in spec["items"]:
            signed = fedmsg.crypto.sign(
                item["message"],
                crypto_backend="x509",
                ssldir=spec["ssldir"],
                certname=item["certname"],
            )
            print(fedmsg.encoding.dumps(signed), flush=True)
    elif mode == "validate":
        for text in spec["messages"]:
            try:
                valid = bool(fedmsg.crypto.validate(json.loads(text), **spec["config"]))
                error = None
            except Exception as e:  # moksha drops a message whose validation raises
                valid, error = False, "%s: %s" % (type(e).__name__, e)
            print(json.dumps({"valid": valid, "error": error}), flush=True)
    else:
        sys.exit("unknown mode %r" % mode)


if __name__ == "__main__":
    main()
