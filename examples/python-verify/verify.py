#!/usr/bin/env python3
"""Verify a Lanyard task token with PyJWT and OIDC discovery only.

    python3 verify.py ISSUER_URL AUDIENCE TOKEN [TOOL]

ISSUER_URL is the server's --public-url (its bundle endpoint). Nothing else
is configured: the discovery document names the JWKS, the JWKS holds the
keys. Exit 0 and the claims as JSON, or exit 1 and one line saying why.

What this does not do: follow the revocation feed. A token for a task that
ended a moment ago still verifies here until it expires (at most 5 minutes);
services that must refuse it at once use lanyard-verify, which follows
/v1/revocations.
"""

import json
import sys
import urllib.request

import jwt  # PyJWT, with its "crypto" extra for ES256


def fetch_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def verify(issuer, audience, token, tool=None):
    discovery = fetch_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
    header = jwt.get_unverified_header(token)
    if header.get("alg") != "ES256":
        raise ValueError(f"unexpected alg {header.get('alg')!r}")
    keys = fetch_json(discovery["jwks_uri"])["keys"]
    jwk = next((k for k in keys if k.get("kid") == header.get("kid")), None)
    if jwk is None:
        raise ValueError(f"unknown kid {header.get('kid')!r}")
    # A task token is signed with a task-token key; a plain JWT-SVID is not one.
    if jwk.get("lanyard_purpose") != "task-token":
        raise ValueError("not a task token (signed by a JWT-SVID key)")
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],  # pinned: never none, never HMAC
        audience=audience,
        issuer=discovery["issuer"],
        options={"require": ["exp", "iat", "iss", "sub", "aud", "jti"]},
        leeway=30,
    )
    if not isinstance(claims["aud"], str):
        raise ValueError("a task token has exactly one audience")
    if tool is not None:
        tools = [d.get("identifier") for d in claims.get("authorization_details", [])]
        if tool not in tools:
            raise ValueError(f"tool {tool} is not in the token (it grants {', '.join(tools)})")
    return claims


def main(argv):
    if len(argv) not in (4, 5):
        print("usage: verify.py ISSUER_URL AUDIENCE TOKEN [TOOL]", file=sys.stderr)
        return 2
    try:
        claims = verify(*argv[1:])
    except (jwt.PyJWTError, ValueError, KeyError, OSError) as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
