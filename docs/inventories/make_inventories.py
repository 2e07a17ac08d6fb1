"""Write the Sphinx inventories (``*.inv``) the documentation links through.

The docs build has no network, so intersphinx reads these small inventories instead
of the projects' own: each names the external objects the pages refer to and the
address of their documentation. Add a line here when a page names a new object,
then run ``python docs/inventories/make_inventories.py`` and commit the ``.inv``
files. An object that is not listed reads as plain text (``nitpick_ignore_regex`` in
``docs/conf.py``); ``IDIGDASK_DOCS_EXTERNAL=strict`` lists them.

The files are Sphinx inventories, version 2: four header lines, then zlib-compressed
lines ``name domain:role priority uri display-name`` (``$`` in the uri stands for
the name, ``-`` as display name for the name itself).
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# project -> (version, {name: (domain:role, uri)})
INVENTORIES: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "python": ("3", {
        **{n: ("py:class", "library/functions.html#$") for n in
           ("int", "float", "bool", "object")},
        **{n: ("py:class", "library/stdtypes.html#$") for n in
           ("str", "bytes", "bytearray", "list", "dict", "tuple", "set", "frozenset",
            "range", "memoryview")},
        **{n: ("py:data", "library/constants.html#$") for n in ("None", "True", "False")},
        **{n: ("py:exception", "library/exceptions.html#$") for n in
           ("Exception", "ValueError", "TypeError", "KeyError", "OSError",
            "FileNotFoundError", "PermissionError", "RuntimeError", "TimeoutError",
            "ImportError", "ModuleNotFoundError", "NotImplementedError",
            "ConnectionError", "KeyboardInterrupt")},
        "pathlib.Path": ("py:class", "library/pathlib.html#$"),
        "os.PathLike": ("py:class", "library/os.html#$"),
        "os.environ": ("py:data", "library/os.html#$"),
        "tarfile": ("py:module", "library/tarfile.html#module-tarfile"),
        "zipfile": ("py:module", "library/zipfile.html#module-zipfile"),
        "asyncio": ("py:module", "library/asyncio.html#module-asyncio"),
        "logging": ("py:module", "library/logging.html#module-logging"),
        "logging.Logger": ("py:class", "library/logging.html#$"),
        "subprocess.run": ("py:function", "library/subprocess.html#$"),
        "subprocess.CalledProcessError": ("py:exception", "library/subprocess.html#$"),
        "dataclasses.dataclass": ("py:function", "library/dataclasses.html#$"),
        "dataclasses.replace": ("py:function", "library/dataclasses.html#$"),
        "hashlib.sha256": ("py:function", "library/hashlib.html#$"),
        "uuid.UUID": ("py:class", "library/uuid.html#$"),
        "ipaddress.ip_network": ("py:function", "library/ipaddress.html#$"),
        "ipaddress.IPv4Network": ("py:class", "library/ipaddress.html#$"),
        "ipaddress.IPv6Network": ("py:class", "library/ipaddress.html#$"),
        "http.server.ThreadingHTTPServer": ("py:class", "library/http.server.html#$"),
        "urllib.parse.urlsplit": ("py:function", "library/urllib.parse.html#$"),
        "typing.Any": ("py:data", "library/typing.html#$"),
        **{f"collections.abc.{n}": ("py:class", "library/collections.abc.html#$") for n in
           ("Iterable", "Iterator", "Mapping", "MutableMapping", "Sequence", "Callable")},
    }),
    "numpy": ("2", {
        **{f"numpy.{n}": ("py:class", "reference/generated/$.html#$") for n in
           ("ndarray", "dtype")},
        **{f"numpy.{n}": ("py:class", "reference/arrays.scalars.html#$") for n in
           ("uint8", "int64", "float32", "float64", "bool_")},
        **{f"numpy.{n}": ("py:function", "reference/generated/$.html#$") for n in
           ("asarray", "array", "zeros", "stack", "mean", "std", "histogram",
            "bincount", "argsort")},
        "numpy.random.Generator": ("py:class", "reference/random/generator.html#$"),
        "numpy.random.default_rng": ("py:function", "reference/random/generator.html#$"),
    }),
    "pandas": ("2", {
        **{f"pandas.{n}": ("py:class", "reference/api/$.html#$") for n in
           ("DataFrame", "Series", "Index", "Categorical", "Timestamp")},
        **{f"pandas.{n}": ("py:function", "reference/api/$.html#$") for n in
           ("read_parquet", "read_csv", "concat", "merge")},
        **{f"pandas.DataFrame.{n}": ("py:method", "reference/api/$.html#$") for n in
           ("to_parquet", "to_csv", "merge", "groupby", "value_counts")},
    }),
    "dask": ("2025", {
        **{f"dask.dataframe.{n}": ("py:class", "generated/$.html#$") for n in
           ("DataFrame", "Series")},
        **{f"dask.dataframe.{n}": ("py:function", "generated/$.html#$") for n in
           ("read_parquet", "read_csv", "from_pandas", "from_delayed")},
        **{f"dask.dataframe.DataFrame.{n}": ("py:method", "generated/$.html#$") for n in
           ("compute", "persist", "to_parquet", "map_partitions", "sample")},
        "dask.array.Array": ("py:class", "generated/$.html#$"),
        **{f"dask.config.{n}": ("py:function", "configuration.html#$") for n in
           ("set", "get", "refresh", "update_defaults", "collect")},
        "dask.compute": ("py:function", "api.html#$"),
        "dask.persist": ("py:function", "api.html#$"),
        "dask.delayed": ("py:function", "delayed-api.html#dask.delayed.delayed"),
        "configuration": ("std:doc", "configuration.html"),
    }),
    "distributed": ("2025", {
        **{f"distributed.{n}": ("py:class", "api.html#$") for n in
           ("Client", "LocalCluster", "Future", "SpecCluster")},
        **{f"distributed.Client.{n}": ("py:method", "api.html#$") for n in
           ("submit", "map", "scatter", "gather", "close", "wait_for_workers",
            "run", "upload_file")},
        **{f"distributed.{n}": ("py:function", "api.html#$") for n in
           ("get_client", "as_completed", "wait", "default_client")},
        "distributed.deploy.Adaptive": ("py:class", "adaptive.html#$"),
        "distributed.worker.Worker": ("py:class", "worker.html#$"),
        "distributed.nanny.Nanny": ("py:class", "worker.html#$"),
    }),
    "xarray": ("2025", {
        **{f"xarray.{n}": ("py:class", "generated/$.html#$") for n in
           ("Dataset", "DataArray")},
        **{f"xarray.{n}": ("py:function", "generated/$.html#$") for n in
           ("open_zarr", "open_dataset")},
        **{f"xarray.Dataset.{n}": ("py:method", "generated/$.html#$") for n in
           ("to_zarr", "isel", "sel", "compute")},
    }),
    "zarr": ("3", {
        "zarr.Array": ("py:class", "api/zarr/array/#$"),
        "zarr.Group": ("py:class", "api/zarr/group/#$"),
    }),
    "fsspec": ("2025", {
        **{f"fsspec.{n}": ("py:function", "api.html#$") for n in
           ("open", "open_files", "filesystem", "get_mapper")},
        "fsspec.core.url_to_fs": ("py:function", "api.html#$"),
        "fsspec.spec.AbstractFileSystem": ("py:class", "api.html#$"),
        "fsspec.asyn.AsyncFileSystem": ("py:class", "api.html#$"),
        "fsspec.asyn.sync": ("py:function", "async.html"),
        "fsspec.mapping.FSMap": ("py:class", "api.html#$"),
        "fsspec.implementations.http.HTTPFileSystem": ("py:class", "api.html#$"),
        "fsspec.implementations.local.LocalFileSystem": ("py:class", "api.html#$"),
        "fsspec.implementations.memory.MemoryFileSystem": ("py:class", "api.html#$"),
    }),
    # keras.io is not written with Sphinx; these are its pages for the same objects.
    "keras": ("3", {
        "keras.Model": ("py:class", "api/models/model/"),
        "keras.Sequential": ("py:class", "api/models/sequential/"),
        "keras.Model.fit": ("py:method", "api/models/model_training_apis/#fit-method"),
        "keras.Model.predict": ("py:method",
                                "api/models/model_training_apis/#predict-method"),
        "keras.models.load_model": ("py:function",
                                    "api/models/model_saving_apis/model_saving_and_loading/"
                                    "#load_model-function"),
        "keras.utils.PyDataset": ("py:class", "api/utils/python_utils/#pydataset-class"),
        # the class's own module, as its subclasses name their base
        "keras.src.trainers.data_adapters.py_dataset_adapter.PyDataset": (
            "py:class", "api/utils/python_utils/#pydataset-class"),
        "keras.callbacks.Callback": ("py:class", "api/callbacks/base_callback/"),
        "keras.callbacks.ModelCheckpoint": ("py:class", "api/callbacks/model_checkpoint/"),
        "keras.optimizers.Adam": ("py:class", "api/optimizers/adam/"),
        "keras.applications": ("py:module", "api/applications/"),
    }),
    "aiohttp": ("3", {
        "aiohttp.ClientSession": ("py:class", "client_reference.html#$"),
        "aiohttp.ClientTimeout": ("py:class", "client_reference.html#$"),
        "aiohttp.ClientResponse": ("py:class", "client_reference.html#$"),
    }),
    "dask_jobqueue": ("0.9", {
        **{f"dask_jobqueue.{n}": ("py:class", "en/latest/generated/$.html#$") for n in
           ("SLURMCluster", "SGECluster", "PBSCluster", "LSFCluster", "HTCondorCluster",
            "OARCluster", "MoabCluster", "JobQueueCluster")},
    }),
}

#: The documentation root of each inventory (``docs/conf.py`` reads it).
URLS = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "pandas": "https://pandas.pydata.org/docs/",
    "dask": "https://docs.dask.org/en/stable/",
    "distributed": "https://distributed.dask.org/en/stable/",
    "xarray": "https://docs.xarray.dev/en/stable/",
    "zarr": "https://zarr.readthedocs.io/en/stable/",
    "fsspec": "https://filesystem-spec.readthedocs.io/en/latest/",
    "keras": "https://keras.io/",
    "aiohttp": "https://docs.aiohttp.org/en/stable/",
    "dask_jobqueue": "https://jobqueue.dask.org/",
}


def inventory_bytes(project: str, version: str, objects: dict[str, tuple[str, str]]) -> bytes:
    """One inventory file's bytes: the plain header and the compressed object lines."""
    header = ("# Sphinx inventory version 2\n"
              f"# Project: {project}\n"
              f"# Version: {version}\n"
              "# The remainder of this file is compressed using zlib.\n").encode()
    lines = []
    for name, (role, uri) in sorted(objects.items()):
        priority = "-1" if role == "std:doc" else "1"
        display = "-" if role != "std:doc" else name.replace("-", " ").title()
        lines.append(f"{name} {role} {priority} {uri} {display}\n")
    return header + zlib.compress("".join(lines).encode(), 9)


def main() -> None:
    for project, (version, objects) in INVENTORIES.items():
        path = HERE / f"{project}.inv"
        path.write_bytes(inventory_bytes(project, version, objects))
        print(f"{path.name}: {len(objects)} objects")


if __name__ == "__main__":
    main()
