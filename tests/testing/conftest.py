from tests.models.conftest import fake, make_gateway, pytest_pyfunc_call, sleeps

__all__ = ["fake", "make_gateway", "pytest_pyfunc_call", "sleeps"]
