"""Rules for names and values users send."""

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
IMAGE_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$"
DEFAULT_DATA_DISK_GB = 50  # an instance's /root/data unless it asks otherwise

_name = re.compile(NAME_PATTERN)
_env_name = re.compile(ENV_NAME_PATTERN)


def is_valid_name(value: str) -> bool:
    return bool(_name.fullmatch(value))


def is_valid_env_name(value: str) -> bool:
    return bool(_env_name.fullmatch(value))


# Names the platform and the NVIDIA runtime set or act on: a user's value could load code
# into every process (LD_PRELOAD), reach other GPUs (NVIDIA_VISIBLE_DEVICES) or pose as ours.
RESERVED_ENV_PREFIXES = ("LD_", "NVIDIA_", "DOCKYARD_")


def reserved_env_name(names) -> str | None:
    """The first of `names` a user may not set, or None."""
    return next((n for n in names if n.upper().startswith(RESERVED_ENV_PREFIXES)), None)
