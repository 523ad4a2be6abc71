from support.database import create_database, drop_database  # noqa: F401  (moved to tests/support)
from support.server import CPServer  # noqa: F401
