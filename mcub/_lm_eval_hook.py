"""Makes lm-eval's own command line know the `mcub` model: when lm-eval imports its registry, the model is registered
there lazily (by name, so nothing of mcub is imported until it is used). Loaded at interpreter start by the
`mcub-lm-eval.pth` file that installing mcub puts into site-packages; it costs one import of this small module."""

import importlib.util
import sys
from importlib.abc import MetaPathFinder

REGISTRY_MODULE = "lm_eval.api.registry"
MODEL_TARGET = "mcub.lmeval:McubLM"


def _register(registry) -> None:
    registry.model_registry.register("mcub", target=MODEL_TARGET)


class _RegisterOnImport(MetaPathFinder):
    """Wraps the loading of lm-eval's registry module to register `mcub` right after it runs."""

    def find_spec(self, name, path=None, target=None):
        if name != REGISTRY_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _register(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if REGISTRY_MODULE in sys.modules:
        _register(sys.modules[REGISTRY_MODULE])
    elif not any(isinstance(finder, _RegisterOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())


install()
