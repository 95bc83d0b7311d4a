"""The API's OpenAPI 3.1 document, built from the routing table.

Paths, methods and summaries come from the routes (the endpoint's docstring); query
parameters, bodies and responses from the tables below, whose schemas are those of
Airflow 3.3's state-store models.
"""

from __future__ import annotations

import re
from typing import Any, Final

from starlette.routing import Route

from .. import __version__

_INT: Final = {"type": "integer"}
_TIME: Final = {"type": "string", "format": "date-time"}
_NULLABLE_TIME: Final = {"anyOf": [_TIME, {"type": "null"}]}

SCHEMAS: Final[dict[str, Any]] = {
    "TaskStateStoreBody": {
        "type": "object",
        "required": ["value"],
        "properties": {
            "value": {},
            "expires_at": {
                "anyOf": [_TIME, {"type": "string", "const": "default"}, {"type": "null"}]
            },
        },
    },
    "TaskStateStorePatchBody": {
        "type": "object", "required": ["value"], "properties": {"value": {}},
    },
    "TaskStateStoreResponse": {
        "type": "object",
        "required": ["key", "value", "updated_at"],
        "properties": {
            "key": {"type": "string"}, "value": {}, "updated_at": _TIME,
            "expires_at": _NULLABLE_TIME,
        },
    },
    "TaskStateStoreCollectionResponse": {
        "type": "object",
        "required": ["task_state_store", "total_entries"],
        "properties": {
            "task_state_store": {
                "type": "array", "items": {"$ref": "#/components/schemas/TaskStateStoreResponse"},
            },
            "total_entries": _INT,
        },
    },
    "AssetStateStoreBody": {
        "type": "object", "required": ["value"], "properties": {"value": {}},
    },
    "AssetStateStoreLastUpdatedBy": {
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": {"type": "string", "enum": ["task", "watcher", "api"]},
            "dag_id": {"type": ["string", "null"]}, "run_id": {"type": ["string", "null"]},
            "task_id": {"type": ["string", "null"]}, "map_index": {"type": ["integer", "null"]},
        },
    },
    "AssetStateStoreResponse": {
        "type": "object",
        "required": ["key", "value", "updated_at"],
        "properties": {
            "key": {"type": "string"}, "value": {}, "updated_at": _TIME,
            "last_updated_by": {"$ref": "#/components/schemas/AssetStateStoreLastUpdatedBy"},
        },
    },
    "AssetStateStoreCollectionResponse": {
        "type": "object",
        "required": ["asset_state_store", "total_entries"],
        "properties": {
            "asset_state_store": {
                "type": "array", "items": {"$ref": "#/components/schemas/AssetStateStoreResponse"},
            },
            "total_entries": _INT,
        },
    },
    "StateWriter": {
        "type": "object",
        "required": ["kind", "label"],
        "properties": {
            "kind": {"type": "string", "enum": ["task", "cli", "api", "test", "cleanup"]},
            "dag_id": {"type": ["string", "null"]}, "run_id": {"type": ["string", "null"]},
            "task_id": {"type": ["string", "null"]}, "map_index": {"type": ["integer", "null"]},
            "try_number": {"type": ["integer", "null"]}, "host": {"type": ["string", "null"]},
            "user": {"type": ["string", "null"]}, "rollback_to": {"type": ["integer", "null"]},
            "label": {"type": "string"},
        },
    },
    "StateVersion": {
        "type": "object",
        "required": ["version", "value", "deleted", "updated_at", "updated_by"],
        "properties": {
            "version": _INT, "value": {}, "deleted": {"type": "boolean"}, "updated_at": _TIME,
            "updated_by": {"$ref": "#/components/schemas/StateWriter"},
        },
    },
    "KeyHistoryResponse": {
        "type": "object",
        "required": ["key", "versions"],
        "properties": {
            "key": {"type": "string"},
            "versions": {"type": "array", "items": {"$ref": "#/components/schemas/StateVersion"}},
        },
    },
    "AssetEvent": {
        "type": "object",
        "required": ["timestamp", "extra"],
        "properties": {
            "timestamp": _TIME, "extra": {"type": "object"},
            "alias_name": {"type": ["string", "null"]},
            "dag_id": {"type": ["string", "null"]}, "run_id": {"type": ["string", "null"]},
            "task_id": {"type": ["string", "null"]}, "map_index": {"type": ["integer", "null"]},
            "try_number": {"type": ["integer", "null"]},
        },
    },
    "AssetEventsResponse": {
        "type": "object",
        "required": ["asset_id", "name", "uri", "events"],
        "properties": {
            "asset_id": _INT, "name": {"type": "string"}, "uri": {"type": "string"},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/AssetEvent"}},
        },
    },
    "RollbackBody": {
        "type": "object", "required": ["version"], "properties": {"version": _INT},
    },
    "HTTPExceptionResponse": {
        "type": "object", "required": ["detail"], "properties": {"detail": {}},
    },
}  # fmt: skip

#: Query parameters of each endpoint, by the endpoint's name.
QUERY: Final[dict[str, tuple[tuple[str, dict[str, Any]], ...]]] = {
    "list_task_state": (("map_index", _INT), ("limit", _INT), ("offset", _INT)),
    "clear_task_state": (("map_index", _INT), ("all_map_indices", {"type": "boolean"})),
    "get_task_state": (("map_index", _INT),),
    "set_task_state": (("map_index", _INT),),
    "patch_task_state": (("map_index", _INT),),
    "delete_task_state": (("map_index", _INT),),
    "list_asset_state": (("limit", _INT), ("offset", _INT)),
    "list_runs": (("dag_id", {"type": "string"}), ("state", {"type": "string"}), ("limit", _INT)),
    "get_instance": (("map_index", _INT),),
    "get_log": (("map_index", _INT),),
    "find_asset": (("name", {"type": "string"}), ("uri", {"type": "string"})),
    "list_asset_events": (("limit", _INT),),
    "task_state_history": (("map_index", _INT),),
    "rollback_task_state": (("map_index", _INT),),
}
#: Each endpoint's request body schema, by the endpoint's name.
BODY: Final = {
    "set_task_state": "TaskStateStoreBody",
    "patch_task_state": "TaskStateStorePatchBody",
    "set_asset_state": "AssetStateStoreBody",
    "rollback_task_state": "RollbackBody",
    "rollback_asset_state": "RollbackBody",
}
#: Each endpoint's success response schema (None: 204 No Content).
RESPONSE: Final[dict[str, str | None]] = {
    "list_task_state": "TaskStateStoreCollectionResponse",
    "get_task_state": "TaskStateStoreResponse",
    "patch_task_state": "TaskStateStoreResponse",
    "list_asset_state": "AssetStateStoreCollectionResponse",
    "get_asset_state": "AssetStateStoreResponse",
    "task_state_history": "KeyHistoryResponse", "rollback_task_state": "KeyHistoryResponse",
    "asset_state_history": "KeyHistoryResponse", "rollback_asset_state": "KeyHistoryResponse",
    "list_asset_events": "AssetEventsResponse",
    "clear_task_state": None, "set_task_state": None, "delete_task_state": None,
    "clear_asset_state": None, "set_asset_state": None, "delete_asset_state": None,
}  # fmt: skip
_PARAM: Final = re.compile(r"{(\w+)(?::(\w+))?}")


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def operation(route: Route, method: str) -> dict[str, Any]:
    """The OpenAPI operation of one route and method."""
    name = route.name
    doc = (route.endpoint.__doc__ or name).strip().splitlines()[0]
    parameters = [
        {"name": param, "in": "path", "required": True,
         "schema": _INT if converter == "int" else {"type": "string"}}
        for param, converter in _PARAM.findall(route.path)
    ]  # fmt: skip
    parameters += [
        {"name": param, "in": "query", "required": False, "schema": schema}
        for param, schema in QUERY.get(name, ())
    ]
    error = {"content": {"application/json": {"schema": _ref("HTTPExceptionResponse")}}}
    responses: dict[str, Any] = {"401": error, "403": error, "404": error, "422": error}
    if name in RESPONSE and RESPONSE[name] is None:
        responses["204"] = {"description": "Successful Response"}
    else:
        schema = _ref(RESPONSE[name] or "") if RESPONSE.get(name) else {}
        responses["200"] = {
            "description": "Successful Response",
            "content": {"application/json": {"schema": schema}},
        }
    found: dict[str, Any] = {"operationId": name, "summary": doc, "parameters": parameters}
    if name in BODY:
        found["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(BODY[name])}},
        }
    found["responses"] = responses
    return found


def document(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI document of ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PARAM.sub(lambda found: "{" + found[1] + "}", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = operation(route, method)
    return {
        "openapi": "3.1.0",
        "info": {"title": "stateward", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"HTTPBearer": []}],
    }
