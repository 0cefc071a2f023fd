"""The API against its own OpenAPI schema, with schemathesis and all of its checks, in process.

Every operation gets generated requests, valid and invalid: no 5xx, every status and body as the
schema says, schema-valid requests accepted, schema-invalid ones refused. The few statuses a
schema-valid request may still get (an upload that is no image, an id that names nothing, a path
outside the allowed roots) are listed, with why, in schemathesis.toml.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from app.api.auth import create_key
from app.main import create_app
from tests.helpers.service import make_settings, stack

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = 25


# The app is made at import (schemathesis reads its schema to generate the tests); its database
# and data are set up by the fixture, before its lifespan starts. The schema is read from the app
# object, not over ASGI: a request at import would start the app's lifespan (its snapshot refresher)
# and never end it, leaving a thread polling a database the fixture deletes.
TMP = Path(tempfile.mkdtemp(prefix="crossmodal-contract-"))
URL = f"sqlite:///{TMP / 'db.sqlite'}"
SETTINGS = make_settings(TMP, URL)
APP = create_app(SETTINGS)
schema = schemathesis.openapi.from_dict(
    APP.openapi(), config=SchemathesisConfig.from_path(str(ROOT / "schemathesis.toml"))
)
schema.app = APP  # cases are called on the app in process, as from_asgi would
# A job's event stream ends only when the job does, and no worker runs these jobs: read a stream's first
# event, not up to 20 events or the 10 s request timeout (10 s of silence for each request on a queued
# job). What is checked of a stream, its status and media type, is there with the first event.
schema.config.max_stream_events = 1


@pytest.fixture(scope="module")
def api():
    with stack(TMP, URL, n=30) as s:  # the same data dir and database as SETTINGS, which APP serves
        with s.session_factory() as session:
            row, key = create_key(session, "contract", "admin")
            spares = [create_key(session, f"spare {i}", "search")[0].id for i in range(3)]
            session.commit()
        # One client for every case, entered once: its lifespan loads the model and indexes once
        # (a client per call would start and stop the app's lifespan for each request).
        with asgi.get_client(APP, max_stream_events=1) as client:
            yield key, row.id, spares, client
    shutil.rmtree(TMP, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
def test_the_api_keeps_its_contract(case, api):
    key, own_key_id, spares, client = api
    if case.method == "DELETE" and case.path.startswith("/v1/admin/keys/"):
        if str(case.path_parameters.get("key_id")).lstrip("0") == str(own_key_id):  # "1", 1 or "01"
            case.path_parameters["key_id"] = spares[0]  # revoking the test's own key would end the test
    case.call_and_validate(session=client, headers={"Authorization": f"Bearer {key}"})
