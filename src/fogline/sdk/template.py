"""`fogline model init NAME`: a model project that works as written."""

from __future__ import annotations

from pathlib import Path

MODEL_PY = '''"""{name}: a Fogline model. Change `score`; keep the rest.

Run it on its own with `FOGLINE_MODEL_PORT=8080 python model.py`, test it with
`python -m pytest`, and submit the directory with `fogline model submit .`.
"""

from fogline.sdk import Model, serve


class {cls}(Model):
    def __init__(self) -> None:
        self.seen = 0  # a stateful model may keep what it learns between calls

    def score(self, readings):
        """One output dict per reading (keys: the manifest's output columns)."""
        results = []
        for reading in readings:
            self.seen += 1
            value = reading.values["value"]
            results.append({{"score": float(value), "label": "high" if value > 100 else "ok"}})
        return results

    def health(self):
        return True


if __name__ == "__main__":
    serve({cls}())
'''

MANIFEST = """manifest:
  name: {name}
  version: 0.1.0
  description: {name}, made with fogline model init
  model:
    type: http
    scoreEndpoint: /score
    healthCheckEndpoint: /health
    hosted: internal
    stateful: true
    async: false
    local:
      command: [python, model.py]
      # requirements: requirements.txt   # its own virtualenv, with these packages
      limits: {{memoryMb: 512, cpus: 1}}
  trigger:
    type: REAL_TIME
  inputs:
    - {{dataColumnName: value}}
  outputs:
    - {{dataColumnName: score}}
    - {{dataColumnName: label, readAsString: true}}
"""

TEST_PY = """from fogline.sdk import Reading

from model import {cls}


def test_scores_each_reading() -> None:
    model = {cls}()
    out = model.score([Reading("a1", 1, {{"value": 5.0}}), Reading("a1", 2, {{"value": 500.0}})])
    assert out == [{{"score": 5.0, "label": "ok"}}, {{"score": 500.0, "label": "high"}}]
"""


def write_template(directory: Path, name: str) -> list[Path]:
    """Write the project; refuses to overwrite anything."""
    cls = "".join(part.capitalize() for part in name.replace("_", "-").split("-")) or "Model"
    files = {
        "model.py": MODEL_PY.format(name=name, cls=cls),
        "fogline.yaml": MANIFEST.format(name=name),
        "test_model.py": TEST_PY.format(cls=cls),
    }
    existing = [directory / f for f in files if (directory / f).exists()]
    if existing:
        raise FileExistsError(", ".join(str(p) for p in existing))
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file, text in files.items():
        (directory / file).write_text(text)
        written.append(directory / file)
    return written
