"""Search-space parts (network, compression, accelerator) and the joint space."""

from search_spaces.dims import SpaceError
from search_spaces.joint import JointSpace, build

__all__ = ["JointSpace", "SpaceError", "build"]
