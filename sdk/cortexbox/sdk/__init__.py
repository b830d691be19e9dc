"""Author-side SDK: implement a Model, and the SDK serves it over cortexbox.model.v1.

    from cortexbox.sdk import Model, Output, serve

    class MyModel(Model):
        model_id = "my-model"
        def load(self): ...
        def layers(self): return [Output("features", (512,))]
        def activations(self, stimuli, layers): ...

    serve(MyModel())   # or: python -m cortexbox.sdk serve my_module:MyModel

Language models subclass TextModel and implement `digest(parts, layers, behaviours)`, which
receives one whole cumulative context at a time.
"""

from cortexbox.sdk.model import Model, Output, Stimulus, StimulusError, TextModel
from cortexbox.sdk.server import ModelServicer, serve

__all__ = ["Model", "Output", "Stimulus", "StimulusError", "TextModel", "ModelServicer", "serve"]
