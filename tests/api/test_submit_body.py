"""A job body the API cannot read says what is wrong with it: JSON sent without its
Content-Type (or as curl -d's form) or an empty body is a 422 that names the body and the
Content-Type it needs, never a field with an empty name."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

BODY = json.dumps({"teacher_ids": ["tch_x"], "dataset_id": "ds_x"})


def test_json_sent_as_a_form_is_422_naming_the_body_and_content_type(client: TestClient) -> None:
    resp = client.post(
        "/v1/jobs",
        content=BODY,
        headers={"Content-Type": "application/x-www-form-urlencoded"},  # curl -d's default
    )
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert [e["field"] for e in problem["errors"]] == ["body"]
    assert "Content-Type: application/json" in problem["detail"]
    assert "application/x-www-form-urlencoded" in problem["detail"]


def test_an_empty_body_is_422_naming_the_body(client: TestClient) -> None:
    resp = client.post("/v1/jobs", content=b"", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    errors = resp.json()["errors"]
    assert [e["field"] for e in errors] == ["body"] and errors[0]["message"]


def test_json_without_a_content_type_is_422_saying_which_header_is_missing(
    client: TestClient,
) -> None:
    resp = client.post("/v1/jobs", content=BODY)  # no Content-Type at all
    assert resp.status_code == 422
    problem = resp.json()
    assert [e["field"] for e in problem["errors"]] == ["body"]
    assert problem["detail"] == (
        "body: send a JSON body with Content-Type: application/json (got none)"
    )
