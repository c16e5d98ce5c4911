"""The app against its own OpenAPI document, with schemathesis: generated requests (valid and
not) to every operation, authorized with a real key against real Postgres and Redis.

Whatever it sends, the app never answers 5xx, and every status it answers is one the
document declares for that operation, with the media type declared for it. Bounded: a fixed
number of examples per operation, derandomized, so a run takes well under a minute.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    status_code_conformance,
)

from api.app import create_app
from api.deps import KeyCache
from tests.conftest import DEV_KEY

EXAMPLES_PER_OPERATION = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


# The document of the app itself, and the app that the cases call (in-process, over ASGI).
# Building it touches no server; the test's ``client`` fixture provides the database and,
# through its lifespan, the bootstrap key.
APP = create_app()
# Every test empties the database, the key's tenant with it: no lookup may outlive a test.
APP.state.key_cache = KeyCache(0)
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_only_documented_statuses(case: Any, client: TestClient) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {DEV_KEY}"}, checks=CHECKS)
