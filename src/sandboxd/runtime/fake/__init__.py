"""The fake backend: the real agent as an ordinary host process. For fast API tests without root."""
from sandboxd.runtime.fake.backend import FakeBackend

__all__ = ["FakeBackend"]
