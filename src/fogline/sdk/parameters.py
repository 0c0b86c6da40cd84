"""The manifest's `parameters`, as the platform hands them to a model at start."""

from __future__ import annotations

import json
import os
from typing import Any

ENV = "FOGLINE_MODEL_PARAMETERS"


def parameters(**defaults: Any) -> dict[str, Any]:
    """The values this model version runs with: the manifest's parameters (each its `value`,
    or its `default`), over the defaults given here for a model run on its own (tests, a
    notebook) where no platform set them.

        from fogline.sdk import parameters, serve
        serve(Detector(**parameters(threshold=4.0)))

    The platform checked every value against the manifest's types and bounds before the model
    was started: a model does not need to check them again."""
    text = os.environ.get(ENV)
    if not text:
        return dict(defaults)
    try:
        given = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"{ENV} is not JSON: {exc}") from None
    if not isinstance(given, dict):
        raise SystemExit(f"{ENV} is not a JSON object of parameter values")
    return {**defaults, **given}
