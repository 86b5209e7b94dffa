"""GET /rest/v1/ describes the exposed schema as a valid OpenAPI 3.0.3 document."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from gatehouse.core.db import Database
from gatehouse.rest.openapi import openapi
from gatehouse.rest.schema import ColumnInfo, FunctionArg, FunctionInfo, SchemaCache, TableInfo
from tests.rest.test_schema import FIXTURE_SQL

SERVER = "http://localhost:8000/rest/v1"


@pytest.fixture(scope="module")
async def cache(db: Database) -> SchemaCache:
    async with db.admin.acquire() as conn:
        await conn.execute(FIXTURE_SQL)
        return await SchemaCache.load(conn, ("public", "private"))


@pytest.fixture(scope="module")
def doc(cache: SchemaCache) -> dict[str, Any]:
    return openapi(cache, "public", server_url=SERVER)


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        _, kind, name = node["$ref"].rsplit("/", 2)
        node = doc["components"][kind][name]
    return node


def test_valid_openapi_3_0_3(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"] == "3.0.3"
    assert doc["servers"] == [{"url": SERVER}]
    assert json.loads(json.dumps(doc)) == doc  # plain JSON, ready to serve


def test_other_schemas_validate(cache: SchemaCache) -> None:
    private = openapi(cache, "private", server_url=SERVER, title="Private")
    validate(private)
    assert private["info"]["title"] == "Private"
    assert set(private["paths"]) == {"/", "/secrets", "/rpc/hidden"}
    with pytest.raises(ValueError):
        openapi(cache, "auth", server_url=SERVER)


def test_paths(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    for name in ("countries", "cities", "projects", "tasks", "events", "big_countries", "country_stats", "profiles"):
        assert f"/{name}" in paths
    for name in ("add", "countries_on", "first_country", "touch", "greet", "echo", "total", "swap", "city_list"):
        assert f"/rpc/{name}" in paths
    for hidden in ("/secrets", "/rpc/unnamed", "/rpc/handle_new_user", "/rpc/noop", "/rpc/hidden"):
        assert hidden not in paths
    assert "get" in paths["/"]


def test_methods_follow_updatability(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    assert set(paths["/countries"]) == {"get", "post", "patch", "delete"}
    assert set(paths["/big_countries"]) == {"get", "post", "patch", "delete"}
    assert set(paths["/country_stats"]) == {"get"}
    assert set(paths["/city_names"]) == {"get"}


def test_read_parameters(doc: dict[str, Any]) -> None:
    get = doc["paths"]["/countries"]["get"]
    params = [resolve(doc, p) for p in get["parameters"]]
    by_name = {(p["in"], p["name"]): p for p in params}
    for name in ("select", "order", "limit", "offset", "id", "code", "continent", "created_at"):
        assert ("query", name) in by_name
        assert by_name[("query", name)]["required"] is False
    assert by_name[("query", "code")]["schema"] == {"type": "string"}  # filters are op.value strings
    assert {("header", "Range"), ("header", "Prefer")} <= set(by_name)
    assert set(get["responses"]) >= {"200", "206", "400", "401", "403", "406"}
    ok = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"type": "array", "items": {"$ref": "#/components/schemas/countries"}}
    assert "application/vnd.pgrst.object+json" in get["responses"]["200"]["content"]


def test_error_responses_carry_the_postgrest_shape(doc: dict[str, Any]) -> None:
    response = resolve(doc, doc["paths"]["/countries"]["post"]["responses"]["409"])
    error = resolve(doc, response["content"]["application/json"]["schema"])
    assert set(error["properties"]) == {"code", "details", "hint", "message"}
    assert error["properties"]["code"]["type"] == "string"


def test_write_operations(doc: dict[str, Any]) -> None:
    path = doc["paths"]["/countries"]
    post = path["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][0] == {"$ref": "#/components/schemas/countries"}
    assert body["oneOf"][1]["type"] == "array"
    assert set(post["responses"]) >= {"201", "400", "409"}
    assert {resolve(doc, p)["name"] for p in post["parameters"]} >= {"on_conflict", "columns", "Prefer"}
    patch = path["patch"]
    patch_body = patch["requestBody"]["content"]["application/json"]["schema"]
    assert "required" not in patch_body and "code" in patch_body["properties"]
    assert set(patch["responses"]) >= {"200", "204"}
    delete_params = {resolve(doc, p)["name"] for p in path["delete"]["parameters"]}
    assert {"id", "code", "Prefer"} <= delete_params


def test_table_schemas(doc: dict[str, Any]) -> None:
    countries = doc["components"]["schemas"]["countries"]
    assert countries["type"] == "object"
    assert countries["description"] == "Countries of the world"
    assert countries["required"] == ["code", "name"]  # NOT NULL without a default
    p = countries["properties"]
    assert list(p) == [
        "id", "code", "name", "continent", "tags", "population", "area", "founded", "data", "name_upper", "created_at",
    ]
    assert p["id"]["type"] == "integer" and p["id"]["format"] == "int32"
    assert "<pk/>" in p["id"]["description"]
    assert p["code"]["maxLength"] == 2 and p["code"]["description"].startswith("ISO 3166-1 alpha-2")
    assert p["continent"] == {
        "type": "string", "enum": ["africa", "americas", "asia", "europe", "oceania"], "nullable": True,
    }
    assert p["tags"] == {"type": "array", "items": {"type": "string"}}
    assert p["population"] == {"type": "integer", "format": "int64", "nullable": True}
    assert p["area"] == {"type": "number", "nullable": True}
    assert p["founded"] == {"type": "string", "format": "date", "nullable": True}
    assert p["data"] == {}
    assert p["name_upper"]["readOnly"] is True
    assert p["created_at"] == {"type": "string", "format": "date-time"}

    cities = doc["components"]["schemas"]["cities"]["properties"]
    assert cities["name"] == {"type": "string", "maxLength": 100}
    assert "<fk table='countries' column='id'/>" in cities["country_id"]["description"]
    assert "<fk table='users' column='id'/>" in cities["mayor"]["description"]
    assert cities["mayor"]["format"] == "uuid"
    assert cities["continents"]["items"]["enum"][0] == "africa"
    assert cities["visited_on"]["items"] == {"type": "string", "format": "date"}


def test_profiles_from_the_builtin_migration(doc: dict[str, Any]) -> None:
    profiles = doc["components"]["schemas"]["profiles"]
    assert list(profiles["properties"]) == ["id", "updated_at", "username", "full_name", "avatar_url", "website"]
    assert profiles["required"] == ["id"]
    assert profiles["properties"]["id"]["format"] == "uuid"
    assert profiles["properties"]["updated_at"] == {"type": "string", "format": "date-time", "nullable": True}
    assert set(doc["paths"]["/profiles"]) == {"get", "post", "patch", "delete"}


def test_rpc(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    add = paths["/rpc/add"]
    assert set(add) == {"get", "post"}  # immutable: GET allowed
    body = add["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {
        "type": "object",
        "properties": {"a": {"type": "integer", "format": "int32"}, "b": {"type": "integer", "format": "int32"}},
        "required": ["a"],
    }
    assert add["post"]["description"] == "Adds two numbers"
    assert add["post"]["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "integer"
    get_params = {p["name"]: p for p in add["get"]["parameters"] if "name" in p}
    assert get_params["a"]["required"] is True and get_params["b"]["required"] is False

    assert set(paths["/rpc/touch"]) == {"post"}  # volatile: POST only
    assert set(paths["/rpc/touch"]["post"]["responses"]) >= {"200", "204"}

    on = paths["/rpc/countries_on"]["post"]
    rows = on["responses"]["200"]["content"]["application/json"]["schema"]
    assert rows == {"type": "array", "items": {"$ref": "#/components/schemas/countries"}}
    assert {resolve(doc, p)["name"] for p in on["parameters"]} >= {"select", "order", "limit"}
    first = paths["/rpc/first_country"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert first == {"$ref": "#/components/schemas/countries"}

    greet = paths["/rpc/greet"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert len(greet["oneOf"]) == 2  # overloads
    echo = paths["/rpc/echo"]
    assert set(echo) == {"post"} and echo["post"]["requestBody"]["required"] is True
    total = paths["/rpc/total"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert total["properties"]["nums"] == {"type": "array", "items": {"type": "integer", "format": "int32"}}
    city_list = paths["/rpc/city_list"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert city_list == {"type": "array", "items": {"type": "object"}}


def test_security_schemes(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apikey"] == {**schemes["apikey"], "type": "apiKey", "in": "header", "name": "apikey"}
    assert schemes["bearer"]["scheme"] == "bearer" and schemes["bearer"]["bearerFormat"] == "JWT"
    assert {"apikey": [], "bearer": []} in doc["security"]


def test_awkward_names_stay_valid() -> None:
    """Names that are not URL- or component-key-safe, and columns named like query parameters."""
    def col(name: str, position: int) -> ColumnInfo:
        return ColumnInfo(name, "text", nullable=False, has_default=False, generated=False, position=position)

    tables = [
        TableInfo("public", "my table/{x}", "table", {"select": col("select", 1), "a b": col("a b", 2),
                                                      "a_b": col("a_b", 3)}, (), True, True, True),
        TableInfo("public", "my_table__x_", "table", {"id": col("id", 1)}, ("id",), True, True, True),
        TableInfo("public", "Error", "view", {"id": col("id", 1)}, (), False, False, False),
        TableInfo("public", "ünïcode", "table", {}, (), True, True, True),
    ]
    functions = [FunctionInfo("public", "do it", (FunctionArg("limit", "integer", False, "in"),), "integer", False,
                              None, "stable")]
    doc = openapi(SchemaCache(("public",), tables, (), functions), "public", server_url=SERVER)
    validate(doc)
    assert "/my%20table%2F%7Bx%7D" in doc["paths"] and "/%C3%BCn%C3%AFcode" in doc["paths"]
    assert len(doc["components"]["schemas"]) == 5  # four tables and Error, all distinct
    assert doc["components"]["schemas"]["Error"]["properties"]["code"]  # not replaced by the table
    names = [resolve(doc, p)["name"] for p in doc["paths"]["/my%20table%2F%7Bx%7D"]["get"]["parameters"]]
    assert names.count("select") == 1 and {"a b", "a_b"} <= set(names)


def test_validator_catches_mistakes(doc: dict[str, Any]) -> None:
    """The validation above is real: a broken reference fails it."""
    broken = json.loads(json.dumps(doc))
    broken["paths"]["/countries"]["get"]["responses"]["200"] = {"content": {}}
    with pytest.raises(OpenAPIValidationError):
        validate(broken)
