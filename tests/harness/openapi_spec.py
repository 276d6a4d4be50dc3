"""The Client-Server API's OpenAPI, as one document.

The Matrix spec keeps the API in one OpenAPI 3.1 file per section
(``data/api/client-server/*.yaml``), each with its own ``servers`` base path
(``/_matrix/client/v3``, ``/_matrix/client/v1``, ``/_matrix``, ``/.well-known``) and with
``$ref``s into shared files (``definitions/``, ``../../event-schemas/``) and into its own
``#/components``. ``load_client_server_api`` reads them all, inlines every ``$ref``
(relative to the file that holds it; a reference back into itself becomes ``{}``, "any"),
prefixes each path with its file's base path and merges the paths into one document that a
fuzzer (schemathesis) can take as a dict.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

# The spec sits beside the repository: ``../shared/matrix-spec`` (CI lays ``shared/`` there).
DEFAULT_SPEC_ROOT = Path(__file__).resolve().parents[3] / "shared" / "matrix-spec"
CLIENT_SERVER_DIR = Path("data") / "api" / "client-server"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def spec_root() -> Path:
    """The matrix-spec checkout: ``$PEYVAND_MATRIX_SPEC`` or ``../shared/matrix-spec``."""
    return Path(os.environ.get("PEYVAND_MATRIX_SPEC", DEFAULT_SPEC_ROOT))


class _Resolver:
    """Inlines ``$ref``s across files; each file is parsed once."""

    def __init__(self) -> None:
        self._files: dict[Path, Any] = {}

    def document(self, path: Path) -> Any:
        path = path.resolve()
        if path not in self._files:
            with path.open(encoding="utf-8") as handle:
                self._files[path] = yaml.safe_load(handle)
        return self._files[path]

    def resolve(self, node: Any, base: Path, stack: tuple[tuple[Path, str], ...] = ()) -> Any:
        """``node`` (found in the file ``base``) with every ``$ref`` in it replaced by what
        it points to; siblings of a ``$ref`` (OpenAPI 3.1 allows some) are kept."""
        if isinstance(node, list):
            return [self.resolve(item, base, stack) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            file_part, _, pointer = ref.partition("#")
            target_file = (base.parent / file_part).resolve() if file_part else base.resolve()
            key = (target_file, pointer)
            if key in stack:
                return {}  # a recursive schema: stop with "anything"
            target = _follow(self.document(target_file), pointer)
            resolved = self.resolve(target, target_file, (*stack, key))
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if siblings and isinstance(resolved, dict):
                return {**resolved, **self.resolve(siblings, base, stack)}
            return copy.deepcopy(resolved)
        return {key: self.resolve(value, base, stack) for key, value in node.items()}


def _follow(document: Any, pointer: str) -> Any:
    """The part of ``document`` at the JSON pointer ``pointer`` ("" or "/a/b")."""
    node = document
    for part in pointer.split("/")[1:] if pointer else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _base_path(document: dict[str, Any]) -> str:
    for server in document.get("servers", []):
        base = server.get("variables", {}).get("basePath", {}).get("default")
        if isinstance(base, str):
            return base.rstrip("/")
    return ""


def load_client_server_api(root: Path | None = None) -> dict[str, Any]:
    """The whole Client-Server API as one OpenAPI 3.1 dict, with no ``$ref`` left and
    full paths (``/_matrix/client/v3/rooms/{roomId}/send/...``)."""
    directory = (root or spec_root()) / CLIENT_SERVER_DIR
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no OpenAPI files in {directory}")
    resolver = _Resolver()
    paths: dict[str, dict[str, Any]] = {}
    security_schemes: dict[str, Any] = {}
    for path in files:
        raw = resolver.document(path)
        if not isinstance(raw, dict) or "paths" not in raw:
            continue
        document = resolver.resolve(raw, path)
        security_schemes.update(document.get("components", {}).get("securitySchemes", {}))
        base = _base_path(raw)
        for template, item in document["paths"].items():
            # Two sections define a path again with a trailing space ("/events ",
            # "/rooms/{roomId}/invite "): the first definition is kept.
            merged = paths.setdefault(base + template.strip(), {})
            for method, operation in item.items():
                if method not in merged:
                    merged[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Matrix Client-Server API (merged)", "version": "1.0.0"},
        "paths": paths,
        "components": {"securitySchemes": security_schemes},
    }
