"""Shared fixtures of the unit tests."""

import pytest

from reproduce.data import locate
from reproduce.errors import UserError


@pytest.fixture(scope="session")
def fashion_mnist() -> None:
    """Skip, saying how to get it, where Debian's Fashion-MNIST is not installed."""
    try:
        locate("fashion_mnist", download=False)
    except UserError as error:
        pytest.skip(str(error))
