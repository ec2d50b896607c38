"""The API docs page (``GET /api/docs``): the OpenAPI schema drawn as one HTML page on the server.

No Swagger UI or ReDoc bundle and nothing from a CDN: the page is plain HTML (Jinja2, autoescaped) that works
offline and under the app's strict Content-Security-Policy. Each operation shows its parameters with types and
bounds, its request body (a tool's options with their ranges and help) and its answers.
"""

from __future__ import annotations

import json
from typing import Any

import jinja2

__all__ = ["docs_page", "operations"]

METHOD_ORDER = ("get", "post", "put", "patch", "delete")


def _resolve(schema: dict[str, Any], node: Any, depth: int = 0) -> Any:
    """``node`` with its ``$ref``s into ``#/components/schemas`` followed (a few levels: options models are flat)."""
    if depth > 6:
        return node
    if isinstance(node, dict):
        if "$ref" in node and node["$ref"].startswith("#/components/schemas/"):
            target = schema.get("components", {}).get("schemas", {}).get(node["$ref"].rsplit("/", 1)[-1], {})
            return _resolve(schema, {**target, **{k: v for k, v in node.items() if k != "$ref"}}, depth + 1)
        return {k: _resolve(schema, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(schema, v, depth + 1) for v in node]
    return node


def _type(node: dict[str, Any]) -> str:
    """'integer, 1 to 4096', 'one of fp32, bf16', 'string or null' — a schema in words."""
    members = node.get("anyOf") or node.get("oneOf")
    if members:
        return " or ".join(dict.fromkeys(_type(m) for m in members))
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    kind = node.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and isinstance(node.get("items"), dict):
        kind = f"list of {_type(node['items'])}"
    low, high = node.get("minimum", node.get("exclusiveMinimum")), node.get("maximum", node.get("exclusiveMaximum"))
    if low is not None and high is not None:
        kind += f", {low} to {high}"
    elif low is not None:
        kind += f", ≥ {low}"
    elif high is not None:
        kind += f", ≤ {high}"
    return kind


def _fields(node: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(node.get("required", []))
    return [{"name": name, "type": _type(prop), "required": name in required, "default": json.dumps(prop["default"]) if "default" in prop
             else "", "help": prop.get("description", ""), "nested": _fields(prop) if prop.get("properties") else []}
            for name, prop in node.get("properties", {}).items()]


def operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation of the schema, in path order, as the docs page shows it."""
    out = []
    for path, ops in sorted(schema.get("paths", {}).items()):
        for method in sorted(ops, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 9):
            op = _resolve(schema, ops[method])
            body = op.get("requestBody", {}).get("content", {})
            params = [{"name": p["name"], "in": p["in"], "type": _type(p.get("schema", {})), "required": p.get("required", False),
                       "default": json.dumps(p["schema"]["default"]) if "default" in p.get("schema", {}) else "",
                       "help": p.get("description", "")} for p in op.get("parameters", [])]
            json_body = body.get("application/json", {}).get("schema")
            out.append({"method": method.upper(), "path": path, "summary": op.get("summary", ""), "description": op.get("description", ""),
                        "tag": (op.get("tags") or ["api"])[0], "id": op.get("operationId", f"{method}{path}"), "params": params,
                        "body_types": [k for k in body if k != "application/json"], "body": _fields(json_body) if json_body else [],
                        "responses": [{"code": code, "text": answer.get("description", "")}
                                      for code, answer in op.get("responses", {}).items()]})
    return out


PAGE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} — docs</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/docs.css"></head>
<body><header><h1>{{ title }} <small>{{ version }}</small></h1><p>{{ description }}</p>
<p>The machine-readable schema: <a href="/api/openapi.json">/api/openapi.json</a>. The app: <a href="/">/</a>.
Every error is a JSON object with a one-line <code>error</code>; a refused field or option is named in <code>field</code>
with its allowed range.</p>
<nav>{% for tag, ops in groups %}<a href="#{{ tag }}">{{ tag }} ({{ ops|length }})</a> {% endfor %}</nav></header>
{% for tag, ops in groups %}<section id="{{ tag }}"><h2>{{ tag }}</h2>
{% for op in ops %}<article id="{{ op.id }}">
<h3><span class="method {{ op.method|lower }}">{{ op.method }}</span> <code>{{ op.path }}</code></h3>
<p>{{ op.summary }}</p>{% if op.description %}<p class="muted">{{ op.description }}</p>{% endif %}
{% if op.params %}<table><tr><th>parameter</th><th>in</th><th>type</th><th>default</th><th>what</th></tr>
{% for p in op.params %}<tr><td><code>{{ p.name }}</code>{% if p.required %} *{% endif %}</td><td>{{ p.in }}</td><td>{{ p.type }}</td>
<td>{{ p.default }}</td><td>{{ p.help }}</td></tr>{% endfor %}</table>{% endif %}
{% if op.body %}<h4>JSON body</h4><table><tr><th>field</th><th>type</th><th>default</th><th>what</th></tr>
{% for f in op.body %}<tr><td><code>{{ f.name }}</code>{% if f.required %} *{% endif %}</td><td>{{ f.type }}</td><td>{{ f.default }}</td>
<td>{{ f.help }}</td></tr>{% for n in f.nested %}<tr class="nested">
<td><code>{{ f.name }}.{{ n.name }}</code>{% if n.required %} *{% endif %}</td>
<td>{{ n.type }}</td><td>{{ n.default }}</td><td>{{ n.help }}</td></tr>{% endfor %}{% endfor %}</table>{% endif %}
{% if op.body_types %}<p class="muted">body: {{ op.body_types|join(", ") }}</p>{% endif %}
<p class="muted">answers: {% for r in op.responses %}<b>{{ r.code }}</b> {{ r.text }}{% if not loop.last %} · {% endif %}{% endfor %}</p>
</article>{% endfor %}</section>{% endfor %}
</body></html>""")


def docs_page(schema: dict[str, Any]) -> str:
    """The HTML docs page of an OpenAPI schema, grouped by tag."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for op in operations(schema):
        groups.setdefault(op["tag"], []).append(op)
    info = schema.get("info", {})
    return PAGE.render(title=info.get("title", "API"), version=info.get("version", ""), description=info.get("description", ""),
                       groups=sorted(groups.items(), key=lambda item: (item[0] != "api", item[0])))
