from tests.models.conftest import fake, make_gateway, sleeps

__all__ = ["fake", "make_gateway", "sleeps"]
