"""The integration tier: everything here is marked `integration`, so `-m "not integration"`
leaves it out wherever the tests are run from."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
