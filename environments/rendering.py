"""Chooses MuJoCo's offscreen rendering backend before dm_control is imported.

dm_control reads the MUJOCO_GL environment variable once, when it is first
imported, so the choice must be made before that import. A user's own setting
always wins. Otherwise: EGL when libEGL is present (Mesa's libegl-mesa0 on a
CPU host, the NVIDIA driver on a GPU host), else OSMesa when libOSMesa is,
else nothing is set and pixel observations raise `RenderingUnavailableError`.
"""

import ctypes.util
import os
from typing import Optional

MUJOCO_GL = "MUJOCO_GL"

_HOW_TO_FIX = (
    "Install an offscreen OpenGL backend and select it: on Debian/Ubuntu "
    "'apt-get install libegl-mesa0' (or libegl1 with the NVIDIA driver on a GPU host) "
    "and set MUJOCO_GL=egl, or 'apt-get install libosmesa6' and set MUJOCO_GL=osmesa. "
    "See BUILD.md, 'Rendering'."
)


class RenderingUnavailableError(RuntimeError):
    """MuJoCo cannot render offscreen on this machine."""


def detect_backend() -> Optional[str]:
    """Returns 'egl' or 'osmesa' if that backend's library is present, else None."""
    if ctypes.util.find_library("EGL"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    return None


def select_backend() -> Optional[str]:
    """Sets MUJOCO_GL unless the user already did; returns the backend in force."""
    if MUJOCO_GL not in os.environ:
        backend = detect_backend()
        if backend is not None:
            os.environ[MUJOCO_GL] = backend
    return os.environ.get(MUJOCO_GL)


def rendering_error(cause: BaseException) -> RenderingUnavailableError:
    backend = os.environ.get(MUJOCO_GL, "<unset>")
    return RenderingUnavailableError(
        f"MuJoCo could not render offscreen with MUJOCO_GL={backend}: {cause}. {_HOW_TO_FIX}"
    )
