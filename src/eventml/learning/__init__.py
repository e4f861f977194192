"""The learning loop (DESIGN §7): labels → training view → train → replay → promote.

- :mod:`eventml.learning.labels`: ``append_labels`` (what ``POST /api/labels`` calls, after
  ``labels_from_json`` on the body),
  ``read_label_file`` (``eventml label``);
- :mod:`eventml.learning.views`: ``build_view`` (``eventml view``), ``write_view``, ``read_view``;
- :mod:`eventml.learning.train`: ``train`` (``eventml train``): scikit-learn → ONNX → push;
- :mod:`eventml.learning.replay`: ``replay`` (``eventml replay``), metrics in ``metrics``;
- :mod:`eventml.learning.promote`: ``promote`` (``eventml promote``) behind a replay gate;
- :mod:`eventml.learning.report`: the replay as a self-contained HTML page;
- :mod:`eventml.learning.cli`: ``register(app)`` adds the commands to ``eventml``.
"""

from eventml.learning.labels import LabelSummary, append_labels, labels_from_json, read_label_file
from eventml.learning.promote import Gate, Promotion, promote
from eventml.learning.replay import Replay, replay
from eventml.learning.train import TrainResult, train
from eventml.learning.views import View, ViewSpec, build_view, read_view, write_view

__all__ = [
    "Gate",
    "LabelSummary",
    "Promotion",
    "Replay",
    "TrainResult",
    "View",
    "ViewSpec",
    "append_labels",
    "build_view",
    "labels_from_json",
    "promote",
    "read_label_file",
    "read_view",
    "replay",
    "train",
    "write_view",
]
