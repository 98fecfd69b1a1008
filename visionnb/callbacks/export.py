"""Deprecated: ONNX and TensorRT export moved to `visionnb.deploy.onnx` and `visionnb.deploy.tensorrt`.

Written by hand, not exported from a notebook: it keeps `from visionnb.callbacks.export import ...` working for
code written before the move, and says where each name went. It will be removed in a later release."""
import importlib, warnings

_MOVED = ('visionnb.deploy.onnx', 'visionnb.deploy.tensorrt')


def _home(name):
    "The module of `visionnb.deploy` that now defines `name`, or None."
    for module in map(importlib.import_module, _MOVED):
        if name in getattr(module, '__all__', ()) or (name.startswith('_') and hasattr(module, name)): return module
    return None


def __getattr__(name):
    module = _home(name)
    if module is None: raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    warnings.warn(f'visionnb.callbacks.export is deprecated: import {name} from {module.__name__}', DeprecationWarning,
                  stacklevel=2)
    return getattr(module, name)


def __dir__(): return sorted({n for m in map(importlib.import_module, _MOVED) for n in m.__all__})
