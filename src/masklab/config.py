"""Config plumbing shared by every edge: where masklab's configs live, the one compose entry point,
and turning config nodes into plain values.

Hydra's runtime (``@hydra.main``, ``HydraConfig``) stays in the edges; workflows receive the
composed config as data plus explicit paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).parent / "conf")


def to_plain(node: Any) -> Any:
    """A resolved DictConfig/ListConfig as plain dicts and lists (identity for plain values)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def compose(config_name: str, overrides: list[str], source: str = "overrides",
            return_hydra_config: bool = False) -> DictConfig:
    """masklab's primary config ``config_name`` with ``overrides``, through Hydra's compose API.

    Works inside or outside a running Hydra app (a GlobalHydra already initialised is left as it
    was). A bad key or option is a UserError naming ``source`` (the file or flag the overrides
    came from).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from masklab.errors import UserError

    def run() -> DictConfig:
        try:
            return hydra_compose(config_name, list(overrides), return_hydra_config=return_hydra_config)
        except HydraException as exc:
            raise UserError(f"{source}: {exc}") from None

    if GlobalHydra.instance().is_initialized():
        return run()
    with initialize_config_dir(CONF_DIR, version_base="1.3", job_name=config_name):
        return run()
