"""The OpenAPI document covers every route, validates, and the docs page works offline."""
from __future__ import annotations

import re

import requests
from openapi_spec_validator import validate


def test_every_flask_route_is_in_the_document_and_it_validates(app, live_server):
    document = requests.get(f"{live_server}/api/openapi.json", timeout=5).json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/agent/"):
            continue  # the alias prefix: the same views as /api/agents/, documented once
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in document["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in document["paths"][path], (method, path)


def test_v1_operations_are_deprecated_and_v2_are_not(live_server):
    paths = requests.get(f"{live_server}/api/openapi.json", timeout=5).json()["paths"]
    assert paths["/api/agents/execute"]["post"]["deprecated"] is True
    assert paths["/api/agents/{run_id}/status"]["get"]["deprecated"] is True
    assert "deprecated" not in paths["/api/agents/v2/thread/{thread_id}/runs"]["post"]


def test_bodies_errors_and_auth_come_from_the_validating_models(live_server):
    document = requests.get(f"{live_server}/api/openapi.json", timeout=5).json()
    submit = document["paths"]["/api/agents/v2/thread/{thread_id}/runs"]["post"]
    body_ref = submit["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = document["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    variants = {v["properties"]["agent"]["const"]: v for v in body["oneOf"]}
    assert {"echo", "demo"} <= set(variants)
    assert variants["demo"]["properties"]["input"]["properties"]["steps"]["maximum"] == 20
    assert variants["echo"]["required"] == ["agent"]  # echo accepts a null input
    assert variants["demo"]["required"] == ["agent", "input"]
    assert all(v["additionalProperties"] is False for v in variants.values())
    assert submit["security"] == [{"bearerAuth": []}]
    assert "application/problem+json" in submit["responses"]["422"]["content"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_docs_page_loads_only_local_assets(live_server):
    page = requests.get(f"{live_server}/api/docs", timeout=5)
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources)
    for source in sources:
        assert requests.get(live_server + source, timeout=5).status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in page.text  # no inline script


def test_both_prefixes_serve_every_route(app):
    rules = {(r.rule, frozenset(r.methods - {"HEAD", "OPTIONS"})) for r in app.url_map.iter_rules()}
    agents = {(rule.replace("/api/agents/", "/api/PREFIX/", 1), m) for rule, m in rules
              if rule.startswith("/api/agents/")}
    agent = {(rule.replace("/api/agent/", "/api/PREFIX/", 1), m) for rule, m in rules
             if rule.startswith("/api/agent/")}
    assert agents == agent and len(agents) >= 15  # 7 v1 + 8 v2 (socket included)


def test_each_route_is_documented_once_under_api_agents_and_v2_comes_before_v1(live_server):
    document = requests.get(f"{live_server}/api/openapi.json", timeout=5).json()
    paths = list(document["paths"])
    assert not [p for p in paths if p.startswith("/api/agent/")]
    api = [p for p in paths if p.startswith("/api/agents/")]
    v2 = [i for i, p in enumerate(api) if p.startswith("/api/agents/v2/")]
    assert v2 and v2 == list(range(len(v2)))  # every v2 path before the first v1 one
    assert [t["name"] for t in document["tags"]][:2] == ["v2", "v1"]


def test_the_documented_limits_of_query_numbers_are_the_servers(live_server):
    from domain.events import MAX_SEQ
    from webapp.runs import CURSOR_MAX_LENGTH

    paths = requests.get(f"{live_server}/api/openapi.json", timeout=5).json()["paths"]
    def params(path: str) -> dict:
        return {p["name"]: p["schema"] for p in paths[path]["get"]["parameters"]}

    events = params("/api/agents/v2/{run_id}/events")
    assert events["after"]["maximum"] == MAX_SEQ
    cursor = params("/api/agents/v2/runs")["cursor"]
    assert cursor["pattern"] == "^[A-Za-z0-9_-]+$" and cursor["maxLength"] == CURSOR_MAX_LENGTH


def test_every_v1_operation_documents_413(live_server):
    paths = requests.get(f"{live_server}/api/openapi.json", timeout=5).json()["paths"]
    for path, operations in paths.items():
        if path.startswith("/api/agents/") and not path.startswith("/api/agents/v2/"):
            for method, operation in operations.items():
                assert "413" in operation["responses"], (method, path)
