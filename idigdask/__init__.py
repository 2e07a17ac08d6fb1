"""idigdask: iDigBio specimen media to training-ready image arrays and CNNs, with Dask.

The route the data takes, one module a stage::

    catalog -> fetch -> decode (process) -> store (build) -> batches -> train / evaluate / predict

Public functions are imported lazily so that ``import idigdask`` stays fast: Keras,
TensorFlow and s3fs load only when a function that needs them is called.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "read_catalog": "catalog",
    "sample": "catalog",
    "attach_labels": "catalog",
    "search_media": "catalog",
    "search_records": "catalog.records",
    "media_url": "catalog",
    "make_sheets": "synthetic",
    "build_dataset": "build",
    "BuildOptions": "build",
    "FetchOptions": "fetch",
    "open_dataset": "store",
    "read_ledger": "store",
    "quality_report": "quality",
    "get_client": "cluster",
    "FeedOptions": "batches",
    "StoreFeed": "loaders.keras",
    "train": "train",
    "TrainOptions": "train",
    "evaluate": "evaluate",
    "EvaluateOptions": "evaluate",
    "predict": "predict",
    "PredictOptions": "predict",
    "explain": "explain",
    "ExplainOptions": "explain",
    "run_demo": "demo",
}

__all__ = sorted(_API) + ["UserError", "MediaError", "__version__"]

from .errors import MediaError, UserError  # noqa: E402  (cheap, no heavy imports)


def __getattr__(name: str) -> Any:
    if name in _API:
        module = importlib.import_module(f".{_API[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'idigdask' has no attribute {name!r}")


#: Functions named like the module that defines them: ``idigdask.train``...
_SAME_NAME = {name for name, module in _API.items() if name == module}


class _Package(types.ModuleType):
    """The package, whose functions keep their names when their modules load.

    Importing a submodule binds it to the package under its name, so the first
    ``from idigdask.train import TrainOptions`` (or any module doing
    ``from .train import ...``) would turn ``idigdask.train`` from the function into
    the module. The submodules stay in ``sys.modules`` under their full names.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SAME_NAME and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .batches import FeedOptions
    from .build import BuildOptions, build_dataset
    from .fetch import FetchOptions
    from .catalog import attach_labels, media_url, read_catalog, sample, search_media
    from .catalog.records import search_records
    from .cluster import get_client
    from .demo import run_demo
    from .evaluate import EvaluateOptions, evaluate
    from .loaders.keras import StoreFeed
    from .explain import ExplainOptions, explain
    from .predict import PredictOptions, predict
    from .quality import quality_report
    from .store import open_dataset, read_ledger
    from .synthetic import make_sheets
    from .train import TrainOptions, train
