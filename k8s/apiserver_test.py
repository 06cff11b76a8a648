"""The API server's published addresses become the NetworkPolicy's host CIDRs."""

from __future__ import annotations

from k8s.apiserver import cidrs_from_slices, host_cidr


def test_every_published_address_becomes_a_host_cidr_once_ipv4_first():
    slices = [
        {"addressType": "IPv6", "endpoints": [{"addresses": ["2001:DB8:0::1"]}]},
        {"addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.20"]}, {"addresses": ["192.0.2.3"]}]},
        # A second slice naming an address again (several API servers, a slice being replaced).
        {"addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.3"], "conditions": {"ready": False}}]},
        {"addressType": "FQDN", "endpoints": [{"addresses": ["apiserver.example.com"]}]},
        {"addressType": "IPv4", "endpoints": None},
    ]
    assert cidrs_from_slices(slices) == ("192.0.2.3/32", "192.0.2.20/32", "2001:db8::1/128")
    assert cidrs_from_slices([]) == ()
    assert host_cidr("10.0.0.1") == "10.0.0.1/32" and host_cidr("fd00::2") == "fd00::2/128"
