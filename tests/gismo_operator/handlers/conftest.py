"""Fixtures of the handler tests: ``api``, kmock with the Gismo and KubeRay resources declared.

(``_ray_fixtures`` is importable by name: pytest puts tests/gismo_operator on sys.path for its
conftest.)
"""

from __future__ import annotations

import kmock
import pytest
from _ray_fixtures import declare_resources


@pytest.fixture()
def api(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    declare_resources(kmock)
    return kmock
