"""Render the kustomizations under k8s/ for the tests (kustomize itself cannot be installed here).

Covers what the shipped overlays use, with kustomize's meaning: ``resources`` (files and
directories), ``images`` (name -> newName:newTag) and ``patches`` with a ``target`` (kind, name) and
an inline JSON-6902 ``patch`` (applied by jsonpatch). Anything else is refused, so an overlay that
starts using more cannot pass unnoticed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonpatch
import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "images", "patches"}


def render(directory: Path) -> list[dict]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise NotImplementedError(
            f"{directory}: kustomization fields {sorted(unknown)} are not rendered here"
        )
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    docs = copy.deepcopy(docs)
    for image in spec.get("images", []):
        for doc in docs:
            _retag(doc, image)
    for patch in spec.get("patches", []):
        target = patch["target"]
        matched = [
            i
            for i, d in enumerate(docs)
            if d.get("kind") == target.get("kind") and d.get("metadata", {}).get("name") == target.get("name")
        ]
        if not matched:
            raise ValueError(f"{directory}: patch target {target} matches no resource")
        operations = jsonpatch.JsonPatch(yaml.safe_load(patch["patch"]))
        for i in matched:
            docs[i] = operations.apply(docs[i])
    return docs


def _retag(node, image: dict) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str) and value.split(":")[0] == image["name"]:
                tag = image.get("newTag", value.split(":")[1] if ":" in value else "latest")
                node[key] = f"{image.get('newName', image['name'])}:{tag}"
            else:
                _retag(value, image)
    elif isinstance(node, list):
        for item in node:
            _retag(item, image)
