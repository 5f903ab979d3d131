"""The networks of the suite and the contract every backend implements."""
import math

from .networks import NETWORKS, Network, register_network  # noqa: F401
from .ops import Ops  # noqa: F401


def get_network(name: str):
    """A network by name; unknown names raise ValueError listing the known ones."""
    try:
        return NETWORKS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(NETWORKS)}") from None


# Hyperparameters with a domain: (low, high, what the domain is), both ends allowed.
RANGES = {
    "lr": (1e-12, 1e6, "the learning rate must be positive"),
    "eta": (1e-12, 1e6, "the learning rate must be positive"),
    "beta": (0.0, 0.999999, "momentum's beta lies in [0, 1)"),
    "beta1": (0.0, 0.999999, "Adam's beta1 lies in [0, 1)"),
    "beta2": (0.0, 0.999999, "Adam's beta2 lies in [0, 1)"),
    "eps": (1e-30, 1.0, "Adam's eps must be positive"),
    "epochs": (1, 10**6, "epochs must be at least 1"),
    "batch_size": (0, 10**8, "batch_size is 0 (full batch) or a positive number"),
}


def config_for(network, overrides: dict | None = None) -> dict:
    """The write-up's hyperparameters with the caller's overrides applied."""
    config = dict(network.defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in config:
            raise ValueError(f"model {network.name!r} has no hyperparameter {key!r}; "
                             f"it has {', '.join(config)}")
        kind = type(config[key])
        try:
            config[key] = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{network.name} {key}={value!r}: expected {kind.__name__}") from None
        if kind in (int, float) and not math.isfinite(config[key]):
            raise ValueError(f"{network.name} {key}={value!r}: must be a finite number")
        if key == "optimizer":
            from .train import OPTIMIZERS, STATE_BUFFERS
            if config[key] not in OPTIMIZERS:
                raise ValueError(f"{network.name} optimizer={value!r}: choose from {', '.join(OPTIMIZERS)}")
            needs = {"momentum": ("beta",), "adam": ("beta1", "beta2", "eps")}.get(config[key], ())
            missing = [k for k in needs if k not in config]
            if missing and STATE_BUFFERS[config[key]]:
                raise ValueError(f"{network.name} optimizer={value!r}: the model has no "
                                 f"{', '.join(missing)} for it")
        low, high, what = RANGES.get(key, (None, None, ""))
        if low is not None and not low <= config[key] <= high:
            raise ValueError(f"{network.name} {key}={value!r}: {what}")
    return config
