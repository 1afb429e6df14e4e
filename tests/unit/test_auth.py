"""The bearer-token check both HTTP APIs share (``geecache.auth``), over raw header bytes."""

from geecache.auth import CHALLENGE, authorized, bearer, expected_bearer


def test_no_token_means_no_check():
    assert expected_bearer(None) is None and expected_bearer("") is None
    assert authorized(None, None) and authorized(b"Bearer anything", None)


def test_the_expected_header_is_the_bearer_value():
    assert bearer("s3cret") == "Bearer s3cret"
    assert expected_bearer("s3cret") == b"Bearer s3cret"
    assert authorized(b"Bearer s3cret", expected_bearer("s3cret"))


def test_missing_wrong_or_undecodable_headers_are_refused():
    expected = expected_bearer("s3cret")
    for header in (None, b"", b"Bearer s3cre", b"Bearer s3cret ", b"bearer s3cret", b"s3cret",
                   b"Bearer \xff\xfe"):
        assert not authorized(header, expected), header


def test_challenge_names_the_scheme():
    assert CHALLENGE.startswith("Bearer ")
