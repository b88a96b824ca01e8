"""The sticky cookie a real proxy inserts: Secure on a listener that terminates TLS,
not on a plain one; HttpOnly and SameSite=Lax on both; each configurable."""
from __future__ import annotations

import pytest

from tests.proxy.e2e.support import backend_entry, request
from tests.proxy.tls.conftest import client_context
from tests.proxy.tls.support import tls_request


def sticky_config(backends, **sticky) -> dict:
    return {
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {
            "plain": {"bind": "127.0.0.1:0", "routes": ["all"]},
            "secure": {"bind": "127.0.0.1:0", "routes": ["all"],
                       "tls": {"certificates": [{"pki": "www.lab.test"}]}},
        },
        "routes": {"all": {"forward": "p"}},
        "pools": {"p": {"sticky": {"mode": "cookie", "secret": "k", **sticky},
                        "backends": [backend_entry(backends["b1"])]}},
    }


def attributes(set_cookie: str) -> list[str]:
    return [a.strip() for a in set_cookie.split(";")[1:]]


def test_default_attributes_on_tls_and_plain_listeners(tls_proxy, backends, lab_pki):
    proxy = tls_proxy(sticky_config(backends))
    over_tls = tls_request(proxy.port("secure"), "www.lab.test", client_context(lab_pki))
    cookie = over_tls.response.headers["set-cookie"]
    assert cookie.startswith("LBSTICKY=b1.")
    assert attributes(cookie)[2:] == ["Secure", "HttpOnly", "SameSite=Lax"]
    plain = request(proxy.port("plain")).headers["set-cookie"]
    assert attributes(plain)[2:] == ["HttpOnly", "SameSite=Lax"]


@pytest.mark.parametrize("settings,tls_tail,plain_tail", [
    ({"secure": "never", "http_only": False, "same_site": "off"}, [], []),
    ({"secure": "always", "same_site": "Strict"}, ["Secure", "HttpOnly", "SameSite=Strict"],
     ["Secure", "HttpOnly", "SameSite=Strict"]),
    ({"same_site": "None", "secure": "always", "http_only": False},
     ["Secure", "SameSite=None"], ["Secure", "SameSite=None"]),
])
def test_each_attribute_is_configurable(tls_proxy, backends, lab_pki, settings, tls_tail,
                                        plain_tail):
    proxy = tls_proxy(sticky_config(backends, **settings))
    over_tls = tls_request(proxy.port("secure"), "www.lab.test", client_context(lab_pki))
    assert attributes(over_tls.response.headers["set-cookie"])[2:] == tls_tail
    assert attributes(request(proxy.port("plain")).headers["set-cookie"])[2:] == plain_tail
