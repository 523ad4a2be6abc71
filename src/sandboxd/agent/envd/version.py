"""The envd version sandboxd advertises to E2B clients (the control plane returns it as `envdVersion`).

The SDK gates features on it (docs/clients/e2b.md §1.2, §2). Advertise only what the agent implements:
recursive watch (0.1.4), metrics (0.1.5), disk metrics (0.2.4), the stdin flag (0.3.0), the default
user (0.4.0), CloseStdin (0.5.2), octet-stream/gzip uploads (0.5.7), file metadata as `user.e2b.*` xattrs
(0.6.2), entries in watch events (0.6.3), watching network mounts when asked (0.6.4).
"""
ENVD_VERSION = "0.6.4"
