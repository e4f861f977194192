"""A pure-numpy PMML 4.x evaluator that scores batches of rows in float64 like JPMML-Evaluator.

Supported: RegressionModel, GeneralRegressionModel, TreeModel, MiningModel and NeuralNetwork
with DataDictionary / MiningSchema treatments, TransformationDictionary / LocalTransformations,
Targets and Output. Anything else is refused at load time with
:class:`~eventml.errors.UnsupportedModel` rather than scored differently.
"""

from . import _general_regression, _mining, _neural, _regression, _tree  # noqa: F401 (registration)
from ._model import PmmlField, PmmlModel, PmmlResult, load_pmml

__all__ = ["PmmlField", "PmmlModel", "PmmlResult", "load_pmml"]
