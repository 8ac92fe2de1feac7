"""OpenAPI text for the endpoints that stream their multipart bodies themselves."""
from __future__ import annotations


def multipart_body(*required: str, optional: tuple[str, ...] = (), description: str | None = None,
                   json_fields: dict[str, str] | None = None) -> dict:
    """A multipart body of image files named `required` and `optional`, and optional JSON parts (name -> help)."""
    properties = {name: {"type": "string", "format": "binary",
                         "description": description or "image: .mha, .nii.gz, .nrrd or .nii"}
                  for name in (*required, *optional)}
    properties.update({name: {"type": "string", "contentMediaType": "application/json", "description": text}
                       for name, text in (json_fields or {}).items()})
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "properties": properties, "required": list(required)}}}}}
