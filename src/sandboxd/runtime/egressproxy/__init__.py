"""The egress proxy: the resolver and TCP proxy that enforce a sandbox's host-name rules (docs/network.md)."""
