import json
from pathlib import Path

import pytest

from bot.emr import signing

VECTORS = json.loads((Path(__file__).with_name("fixtures") / "acs3_vectors.json").read_text())


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_signer_reproduces_vector(vector):
    headers = dict(vector["signed_headers"])
    token = headers.pop(signing.SECURITY_TOKEN, None)
    headers.pop(signing.ACCESS_KEY_ID, None)
    headers.pop(signing.CONTENT_SHA256)
    cred = signing.Credential(VECTORS["ak_id"], VECTORS["ak_secret"], token)
    signed = signing.sign(
        method=vector["method"],
        path=vector["path"],
        query=vector["query"],
        headers=headers,
        body=vector["body"].encode(),
        credential=cred,
    )
    assert signed["authorization"] == vector["authorization"]
    for name, value in vector["signed_headers"].items():
        assert signed[name] == value


def test_path_segments_and_query_are_rfc3986_encoded():
    assert signing.encode_path("api", "w 1", "a/b", "ü~") == "/api/w%201/a%2Fb/%C3%BC~"
    assert signing.canonical_query({"b": "x y*", "a": "1", "c": None}) == "a=1&b=x%20y%2A"


def test_parse_authorization_rejects_other_schemes():
    with pytest.raises(ValueError):
        signing.parse_authorization("Bearer abc")
    with pytest.raises(ValueError):
        signing.parse_authorization("ACS3-HMAC-SHA256 Credential=a,Signature=b")
