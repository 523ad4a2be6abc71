import pytest

from sandboxd.errors import Invalid
from sandboxd.monitor.webhooks import check_url


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9000/hook", "http://localhost/hook", "http://10.1.2.3/", "http://192.168.0.5/",
    "http://172.16.0.1/", "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/", "http://[fd00::1]/",
])
def test_private_targets_are_refused(url):
    with pytest.raises(Invalid):
        check_url(url, allow_private=False)
    check_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://example.com/", "/relative", "http://user:pw@8.8.8.8/", "not a url", "file:///etc/passwd"])
def test_malformed_urls_are_refused_even_when_private_is_allowed(url):
    with pytest.raises(Invalid):
        check_url(url, allow_private=True)


def test_public_address_is_accepted():
    check_url("https://8.8.8.8/hook", allow_private=False)
    check_url("http://[2001:4860:4860::8888]:8080/x", allow_private=False)
