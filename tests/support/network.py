"""A whole answer of GET /v1/sandboxes/{id}/network (docs/network.md), header rules included: what the SDK
and CLI tests give their clients to read."""

NETWORK_ANSWER = {
    "id": "sb1", "object": "sandbox.network", "allow_out": ["www.example.test"], "deny_out": ["0.0.0.0/0"],
    "dns_servers": None,
    "rules": {"api.example.test": [{"transform": {"headers": {"Authorization": "Bearer s3cret"}}}]},
    "egress_proxy": {"address": "socks.example.test:1080", "username": "agent", "tls": True},
    "denied": {"packets": 3, "bytes": 180, "destinations": ["203.0.113.81"],
               "refusals": [{"time": 1796000000.1, "destination": "www.example.test", "address": "203.0.113.81",
                             "port": 443, "reason": "name_not_resolved"}]},
    "usage": [{"destination": "www.example.test", "connections": 2, "bytes_sent": 402, "bytes_received": 1380,
               "denied": 1},
              {"destination": "198.51.100.7", "connections": 1, "bytes_sent": 60, "bytes_received": None,
               "denied": 0}],
    "request_id": "req_1",
}
