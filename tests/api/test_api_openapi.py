"""The API's contract is the committed api/openapi.json: a change to the app that is not in the
document fails here. Regenerate with `python -m api.openapi`."""

from __future__ import annotations

import json

import httpx

from api.openapi import PATH, document
from tests.api.calls import Api


def test_committed_document_matches_the_app() -> None:
    assert PATH.read_text() == document(), "the API changed: run `python -m api.openapi`"


async def test_the_running_app_serves_the_same_document(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        served = (await http.get("/openapi.json")).json()
    assert served == json.loads(PATH.read_text())
