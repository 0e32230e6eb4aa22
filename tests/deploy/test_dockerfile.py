"""deploy/Dockerfile and .dockerignore, checked without a container runtime (none runs here).

What is checked: the Dockerfile's instructions as parsed here (two stages; the builder
makes a wheel with `pip wheel --no-deps`; the final stage is python:3.11-slim, installs
only that wheel, runs as a numeric non-root USER, EXPOSEs the ports the manifests use, and
runs `trelay serve` with the settings the manifests mount); the build context as Docker
would send it, computed from .dockerignore with Docker's matching rules (last matching
pattern wins, `!` re-includes, a directory's match covers its contents): every COPY source
is in it, and .venv, .git, caches and secret-looking files are not; and the builder's
command itself, run by pip on a copy of that context (`--no-build-isolation --no-index`:
the installed hatchling, nothing fetched), must give the same wheel as the checkout.
What is not: pulling python:3.11-slim, running the RUN steps in it, the image's size,
and starting a container.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.venvs import CHECKOUT, OFFLINE_BUILD, build_wheel, run
from trelay.process.cli import build_parser

DOCKERFILE = CHECKOUT / "deploy" / "Dockerfile"
DOCKERIGNORE = CHECKOUT / ".dockerignore"
IMAGE = "trelay:0.1.0"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for word, arguments in self.instructions if word == keyword]


def stages() -> list[Stage]:
    """The Dockerfile's stages: instructions with their arguments, continuations joined."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    found: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(words[0], name))
        else:
            assert found, f"{keyword} before FROM"
            found[-1].instructions.append((keyword, arguments))
    return found


# --- .dockerignore, as Docker reads it (moby's patternmatcher) -----------------------------


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per pattern, in order."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif pattern[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif pattern[index] == "?":
                regex, index = regex + "[^/]", index + 1
            elif pattern[index] == "[":
                end = pattern.index("]", index)
                regex, index = regex + pattern[index : end + 1], end + 1
            else:
                regex, index = regex + re.escape(pattern[index]), index + 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `path` (relative, with /) out of the build context."""
    parents = [path]
    parts = path.split("/")
    parents += ["/".join(parts[:n]) for n in range(1, len(parts))]
    excluded = False
    for negated, regex in patterns:
        if any(regex.fullmatch(candidate) for candidate in parents):
            excluded = not negated
    return excluded


def build_context() -> set[str]:
    """Every file and link of the checkout that Docker sends as the build context."""
    patterns = ignore_patterns()
    sent = set()
    for directory, subdirectories, names in os.walk(CHECKOUT):
        relative_dir = Path(directory).relative_to(CHECKOUT)
        for name in [*names, *(d for d in subdirectories if (Path(directory) / d).is_symlink())]:
            relative = (relative_dir / name).as_posix()
            if not ignored(relative, patterns):
                sent.add(relative)
    return sent


def test_the_ignore_matcher_follows_dockers_rules() -> None:
    patterns = ignore_patterns()
    assert ignored(".venv/bin/python", patterns)  # `*` covers a directory's contents
    assert not ignored("relay/process/cli.py", patterns)  # `!relay` brings it back
    assert ignored("relay/process/__pycache__/cli.cpython-311.pyc", patterns)
    assert ignored("keys.toml", patterns) and ignored("relay/config/keys.toml", patterns)
    assert not ignored("relay/config/secrets_file.py", patterns)  # a name, not a secret


def test_the_build_context_holds_the_sources_and_no_secrets_or_checkout_state() -> None:
    context = build_context()
    tops = {path.split("/")[0] for path in context}
    assert tops == {"pyproject.toml", "README.md", "LICENSE", "relay", "stun", "turn"}
    patterns = ignore_patterns()
    for path in (".venv", ".git", ".git/config", ".mypy_cache", ".pytest_cache", ".ruff_cache",
                 ".hypothesis", "dist/trelay-0.1.0-py3-none-any.whl", "tests", "benchmarks",
                 "keys.toml", "secrets", "revoked.toml", "deploy/keys.toml", "relay/keys.toml",
                 "stun/secrets", "relay/tls/privkey.pem", "server.key", "trelay"):  # fmt: skip
        assert ignored(path, patterns), path
    assert not [path for path in context if "__pycache__" in path or path.endswith(".pyc")]


def test_two_stages_and_the_final_one_is_small_non_root_and_runs_trelay() -> None:
    builder, final = stages()
    assert builder.base == final.base == "python:3.11-slim"
    assert builder.name == "builder" and final.name is None
    # The builder makes the wheel; the final stage installs only that wheel.
    [build] = builder.all("RUN")
    assert shlex.split(build)[:3] == ["pip", "wheel", "--no-cache-dir"] and "--no-deps" in build
    [copied] = final.all("COPY")
    assert copied.startswith("--from=builder ")
    [install] = final.all("RUN")
    assert "pip install --no-cache-dir" in install and "trelay-*.whl" in install
    assert not [word for word, _ in final.instructions if word == "ADD"]
    # USER is numeric (runAsNonRoot can check it), not root, and set after the last RUN.
    [user] = final.all("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) != 0 and int(gid) != 0
    words = [word for word, _ in final.instructions]
    assert words.index("USER") > max(i for i, word in enumerate(words) if word == "RUN")
    [entrypoint] = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["trelay"]
    [command] = final.all("CMD")
    arguments = build_parser().parse_args(json.loads(command))
    assert arguments.command == "serve"
    assert arguments.config == Path("/etc/trelay/trelay.toml")
    [exposed] = final.all("EXPOSE")
    assert set(exposed.split()) == {"3478/udp", "3478/tcp", "5349/tcp", "9478/tcp"}


def test_every_copy_source_is_in_the_build_context() -> None:
    context = build_context()
    builder, _ = stages()
    for arguments in builder.all("COPY"):
        *sources, _ = shlex.split(arguments)
        for source in sources:
            assert (CHECKOUT / source).exists(), source
            assert source in context or any(p.startswith(f"{source}/") for p in context), source


def test_the_builders_wheel_command_works_on_the_build_context(tmp_path: Path) -> None:
    # The context copied as Docker sends it (links as links), laid out as the builder's
    # COPY lines lay it out in WORKDIR /src: the same paths, so a copy of the context is it.
    builder, _ = stages()
    assert builder.all("WORKDIR") == ["/src"]
    source = tmp_path / "src"
    for path in sorted(build_context()):
        target = source / path
        target.parent.mkdir(parents=True, exist_ok=True)
        original = CHECKOUT / path
        if original.is_symlink():
            target.symlink_to(os.readlink(original))
        elif original.is_file():
            shutil.copy2(original, target)
    [build] = builder.all("RUN")
    command = shlex.split(build)
    # The builder's own command, offline: hatchling from this environment, no index.
    command = [sys.executable, "-m", *command[:2], *OFFLINE_BUILD, *command[2:]]
    command = [str(tmp_path / "wheels") if w == "/wheels" else w for w in command]
    run(command, cwd=source)
    [built] = (tmp_path / "wheels").glob("trelay-*.whl")
    reference = build_wheel(tmp_path)
    with zipfile.ZipFile(built) as image_wheel, zipfile.ZipFile(reference) as checkout_wheel:
        assert sorted(image_wheel.namelist()) == sorted(checkout_wheel.namelist())
        assert any(n.endswith("licenses/LICENSE") for n in image_wheel.namelist())


def test_the_readme_builds_the_tag_the_manifests_use() -> None:
    readme = (CHECKOUT / "README.md").read_text()
    assert f"docker build -f deploy/Dockerfile -t {IMAGE} ." in readme
    assert f"-t {IMAGE} ." in DOCKERFILE.read_text()
