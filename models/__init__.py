"""The networks of the suite and the contract every backend implements."""
from .networks import NETWORKS, Network  # noqa: F401
from .ops import Ops  # noqa: F401


def get_network(name: str):
    """A network by name; unknown names raise ValueError listing the known ones."""
    try:
        return NETWORKS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(NETWORKS)}") from None


def config_for(network, overrides: dict | None = None) -> dict:
    """The write-up's hyperparameters with the caller's overrides applied."""
    config = dict(network.defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in config:
            raise ValueError(f"model {network.name!r} has no hyperparameter {key!r}; "
                             f"it has {', '.join(config)}")
        config[key] = type(config[key])(value)
    return config
