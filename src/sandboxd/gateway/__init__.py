"""The gateway: one port for every sandbox's agent (see proxy.py)."""
