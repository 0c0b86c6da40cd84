"""The model SDK: write `score` (and, if you like, `learn` and `health`), get a model server that
speaks Fogline's score/health/callback contract over HTTP or AMQP (docs/models.md).

    from fogline.sdk import Model, serve

    class Doubler(Model):
        def score(self, readings):
            return [{"double": r.values["x"] * 2} for r in readings]

    if __name__ == "__main__":
        serve(Doubler())

A function works too: `serve(score=lambda readings: [...])`. The manifest's `parameters` reach
the model through `parameters()`.
"""

from fogline.sdk.contract import Output, Reading, ScoreRequest
from fogline.sdk.model import FunctionModel, Model
from fogline.sdk.parameters import parameters
from fogline.sdk.serve import serve

__all__ = ["FunctionModel", "Model", "Output", "Reading", "ScoreRequest", "parameters", "serve"]
