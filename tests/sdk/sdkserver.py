from support.server import IN_CI, real_problem, running_server  # noqa: F401  (moved to tests/support)
