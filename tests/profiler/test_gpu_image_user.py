"""The GPU images run as whatever uid `docker run --user` gives, not a fixed uid 10001 that cannot write a
bind-mounted tables directory: no USER and no user made at build time, and the volumes and caches are writable by
any uid (mode 1777: sticky, so one uid cannot delete another's files)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import PurePosixPath

import pytest

from tests.profiler.dockerfiles import DOCKER, GPU_IMAGES, instructions

CACHE_VARIABLES = ("VITLUT_ENGINE_CACHE", "XDG_CACHE_HOME", "TORCH_HOME")  # where the profiler and torch write


def shell_commands(image: str) -> list[list[str]]:
    """The commands of the image's RUN instructions, split at `&&`, as shell words."""
    commands = []
    for instruction in instructions(DOCKER / image):
        if instruction.startswith("RUN "):
            commands += [shlex.split(part) for part in re.split(r"&&", instruction[4:]) if part.strip()]
    return commands


def environment(image: str) -> dict[str, str]:
    pairs = " ".join(i[4:] for i in instructions(DOCKER / image) if i.startswith("ENV "))
    return dict(word.split("=", 1) for word in shlex.split(pairs))


def writable_directories(image: str) -> dict[str, int]:
    """Each directory the build creates (`mkdir -p` makes the parents too) and then chmods, with its octal mode."""
    created: set[str] = set()
    modes: dict[str, int] = {}
    for command in shell_commands(image):
        if command[:1] == ["mkdir"]:
            paths = [PurePosixPath(w) for w in command[1:] if not w.startswith("-")]
            parents = {str(parent) for path in paths for parent in path.parents} if "-p" in command else set()
            created.update({str(path) for path in paths} | parents)
        elif command[:1] == ["chmod"] and re.fullmatch(r"[0-7]{3,4}", command[1]):
            modes.update({path: int(command[1], 8) for path in command[2:] if path in created})
    return modes


@pytest.mark.parametrize("image", GPU_IMAGES)
def test_the_image_sets_no_fixed_user(image: str) -> None:
    """Defect 12: no `USER 10001` (nor any USER) and no build-time user or ownership that would imply one."""
    steps = instructions(DOCKER / image)
    assert [i for i in steps if i.split()[0].upper() == "USER"] == []
    made = [c for c in shell_commands(image) if c and c[0] in ("useradd", "adduser", "groupadd", "chown")]
    assert made == []


@pytest.mark.parametrize("image", GPU_IMAGES)
def test_its_volumes_and_caches_are_writable_by_any_uid_with_the_sticky_bit(image: str) -> None:
    """Defect 12: /tables, /cache and the caches under it are created mode 1777, so `--user` of any uid writes them."""
    volumes = [json.loads(i[len("VOLUME ") :]) for i in instructions(DOCKER / image) if i.startswith("VOLUME ")]
    caches = {name: environment(image).get(name, "") for name in CACHE_VARIABLES}
    assert all(path.startswith("/cache") for path in caches.values()), caches  # not under an unwritable $HOME
    directories = {path for paths in volumes for path in paths} | set(caches.values())
    assert {"/tables", "/cache"} <= directories
    modes = writable_directories(image)
    assert {path: oct(modes.get(path, 0)) for path in directories} == {path: "0o1777" for path in directories}
