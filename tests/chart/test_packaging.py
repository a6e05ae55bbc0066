"""Tests of how the operator reaches a cluster: the install commands the docs give, the image's
Dockerfile and the release workflow that publishes it.

No Docker here: the Dockerfile and the workflow are checked by reading them (and the workflow's
own shell step is run), the documented `helm install` commands are rendered with the chart.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

try:
    import helm_python as helm
except ImportError:  # reported by the `chart` fixture, never silently
    helm = None

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "outbox-operator"
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
DOCKERFILE = ROOT / "Dockerfile"
INSTALL_DOCS = [ROOT / "README.md", ROOT / "docs" / "install.md"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def chart():
    if helm is None:
        message = "helm-python-sdk is not installed: run `make venv`"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    loaded = helm.Chart.load(str(CHART_DIR))
    yield loaded
    loaded.close()


def app_version() -> str:
    return str(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"])


# ---------------------------------------------------------------------------------------------
# the documented commands, as a user would paste them


def shell_commands(doc: Path) -> list[str]:
    """Every command in the doc's ```sh blocks, continuation lines joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def helm_installs(doc: Path) -> list[list[str]]:
    found = []
    for command in shell_commands(doc):
        words = shlex.split(command, comments=True)
        if words[:2] == ["helm", "install"]:
            found.append(words)
    return found


def set_values(words: list[str]) -> dict[str, Any]:
    """The values of a `helm install` command's --set flags, merged as helm merges them."""
    values: dict[str, Any] = {}
    for i, word in enumerate(words):
        if word == "--set":
            layer = helm.parse_set_string(words[i + 1])
            values = merge(values, layer)
    return values


def merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in layer.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def namespace_of(words: list[str]) -> str:
    for flag in ("--namespace", "-n"):
        if flag in words:
            return words[words.index(flag) + 1]
    return "default"


@pytest.mark.parametrize("doc", INSTALL_DOCS, ids=lambda p: p.name)
def test_documented_helm_install_renders_as_written(chart, doc):
    # The quickstart must work when followed literally: every --set passes the schema and the
    # templates' checks, the image included. (-f files are shown in the docs; their values,
    # an IRSA annotation, change nothing these checks see.)
    installs = helm_installs(doc)
    assert installs, f"{doc.name} has no `helm install` command"
    for words in installs:
        values = set_values(words)
        assert "repository" in values.get("image", {}), f"{doc.name}: {' '.join(words)} sets no image.repository"
        files = chart.render(values, name=words[2], namespace=namespace_of(words))
        assert any(name.endswith("deployment.yaml") for name in files)


@pytest.mark.parametrize("doc", INSTALL_DOCS, ids=lambda p: p.name)
def test_documented_install_pushes_the_image_it_installs(doc):
    # The tag helm uses by default is the chart's appVersion: the documented build must push
    # exactly <image.repository>:<appVersion>, or the pod pulls a tag nobody pushed.
    commands = shell_commands(doc)
    pushed = set()
    for command in commands:
        words = shlex.split(command, comments=True)
        if words[:1] == ["docker"] and ("--push" in words or words[1:2] == ["push"]):
            pushed |= {w for w in words if ":" in w and "/" in w and not w.startswith("-")}
            pushed |= {words[i + 1] for i, w in enumerate(words) if w in ("-t", "--tag")}
    for words in helm_installs(doc):
        repository = set_values(words)["image"]["repository"]
        assert f"{repository}:{app_version()}" in pushed, (
            f"{doc.name} installs {repository}:{app_version()} but pushes only {sorted(pushed)}"
        )


def test_readme_quickstart_says_the_image_must_be_built_and_pushed():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using it", 1)[1].split("\n## ", 1)[0]
    assert "No image is published" in section
    assert "docker buildx build --platform linux/amd64,linux/arm64" in section
    assert "kind load docker-image" in section


# ---------------------------------------------------------------------------------------------
# the Dockerfile


def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_dockerfile_installs_every_tool_build_lambdas_needs_from_the_pins():
    # build-lambdas.sh runs cargo-lambda (with zig) and the glibc check (pyelftools, run with
    # $VENV_PYTHON since .dockerignore keeps .venv out): all three come from dev/requirements.txt.
    match = re.search(r"grep -E '([^']+)' dev/requirements.txt", dockerfile())
    assert match, "the Dockerfile no longer picks the Lambda tools from dev/requirements.txt"
    pins = (ROOT / "dev" / "requirements.txt").read_text().splitlines()
    picked = [line.split("==")[0] for line in pins if re.search(match.group(1), line)]
    assert sorted(picked) == ["cargo-lambda", "pyelftools", "ziglang"]
    assert "VENV_PYTHON=/opt/venv/bin/python" in dockerfile()
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()


def test_dockerfile_builds_both_lambda_architectures_by_default():
    text = dockerfile()
    assert "ARG LAMBDA_ARM64=1" in text
    assert "1) rustup target add aarch64-unknown-linux-gnu ;;" in text
    # build-lambdas.sh builds arm64 exactly when that target is installed.
    assert "aarch64-unknown-linux-gnu" in (ROOT / "scripts" / "build-lambdas.sh").read_text()
    assert 'archs="x86_64 arm64"' in text


def test_dockerfile_cross_compiles_so_a_multi_arch_build_needs_no_emulation():
    froms = re.findall(r"^FROM (.*)$", dockerfile(), re.M)
    *build_stages, final = froms
    assert build_stages and all(f.startswith("--platform=$BUILDPLATFORM ") for f in build_stages), froms
    # The final stage has no RUN: it only copies, so it never executes a foreign binary.
    assert "RUN " not in dockerfile().split(f"FROM {final}", 1)[1]
    text = dockerfile()
    assert "amd64) triple=x86_64-unknown-linux-gnu" in text
    assert "arm64) triple=aarch64-unknown-linux-gnu" in text


def test_install_doc_lists_what_the_image_contains():
    # The doc's table of the image names the paths the Dockerfile checks it produced.
    doc = (ROOT / "docs" / "install.md").read_text()
    text = dockerfile()
    assert "ENV OUTBOX_ARTIFACTS_DIR=/artifacts" in text and "COPY --from=lambdas /out/artifacts /artifacts" in text
    assert 'test -f "/out/artifacts/$arch/$fn/bootstrap.zip"' in text and "for fn in relay writer consumer" in text
    for arch in ("x86_64", "arm64"):
        assert f"`/artifacts/{arch}/{{relay,writer,consumer}}/bootstrap.zip`" in doc, arch
    assert "LAMBDA_ARM64=0" in doc


# ---------------------------------------------------------------------------------------------
# the release workflow (not run here; nothing depends on it)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 (PyYAML) reads the key `on` as True; GitHub reads it as "on".
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def step_using(workflow: dict[str, Any], action: str) -> dict[str, Any]:
    (found,) = [s for s in steps(workflow) if s.get("uses", "").startswith(action + "@")]
    return found


def test_release_workflow_publishes_both_platforms_on_version_tags_only(workflow):
    assert workflow["on"]["push"] == {"tags": ["v*.*.*"]}
    build = step_using(workflow, "docker/build-push-action")["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64"
    assert build["push"] == "${{ github.event_name == 'push' }}"
    step_using(workflow, "docker/setup-buildx-action")
    # Every action is pinned to a released major version, never a branch.
    for step in steps(workflow):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_release_workflow_pushes_to_the_users_registry_with_their_credentials(workflow):
    login = step_using(workflow, "docker/login-action")
    assert login["with"]["registry"] == "${{ steps.image.outputs.registry }}"
    assert "secrets.REGISTRY_PASSWORD" in login["with"]["password"]
    text = WORKFLOW.read_text()
    assert "${{ vars.IMAGE_REPOSITORY }}" in text and "${{ vars.REGISTRY }}" in text
    assert workflow["permissions"] == {"contents": "read", "packages": "write"}


def run_resolve_step(workflow: dict[str, Any], tmp_path: Path, **env: str) -> tuple[int, str, dict[str, str]]:
    (step,) = [s for s in steps(workflow) if s.get("id") == "image"]
    output = tmp_path / "github_output"
    output.write_text("")
    full_env = {"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output), **step["env"], **env}
    full_env = {k: v for k, v in full_env.items() if "${{" not in v}
    proc = subprocess.run(["bash", "-c", step["run"]], cwd=ROOT, env=full_env, capture_output=True, text=True)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return proc.returncode, proc.stdout + proc.stderr, outputs


def test_release_workflow_names_the_image_from_the_repository_variables(workflow, tmp_path):
    version = app_version()
    rc, log, out = run_resolve_step(
        workflow, tmp_path, EVENT="push", REF_NAME=f"v{version}", OWNER="Acme",
        IMAGE_REPOSITORY="", REGISTRY="",
    )
    assert rc == 0, log
    assert out == {"repository": "ghcr.io/acme/outbox-operator", "registry": "ghcr.io", "version": version}
    rc, log, out = run_resolve_step(
        workflow, tmp_path, EVENT="push", REF_NAME=f"v{version}", OWNER="acme",
        IMAGE_REPOSITORY="registry.example.com:5000/platform/outbox-operator", REGISTRY="",
    )
    assert rc == 0, log
    assert out["repository"] == "registry.example.com:5000/platform/outbox-operator"
    assert out["registry"] == "registry.example.com:5000"


def test_release_workflow_refuses_a_tag_that_is_not_the_charts_app_version(workflow, tmp_path):
    # The chart's default image.tag is appVersion: a release under another tag would be unused.
    rc, log, out = run_resolve_step(
        workflow, tmp_path, EVENT="push", REF_NAME="v99.0.0", OWNER="acme", IMAGE_REPOSITORY="", REGISTRY="",
    )
    assert rc != 0 and "does not match Chart.yaml appVersion" in log
    assert out == {}


# ---------------------------------------------------------------------------------------------
# the kind recipe's install (scripts/e2e-kind.sh needs Docker; its helm command is checked here)


def test_kind_recipe_helm_install_renders(chart):
    # The script's `helm install` runs with `helm` replaced by a printer, its constants taken
    # from the script itself; the values it passes must render (the image check included).
    script = (ROOT / "scripts" / "e2e-kind.sh").read_text()
    constants = re.findall(r"^(?:IMAGE|RELEASE|NAMESPACE|SECRET|CLUSTER_NAME|REGION)=.*$", script, re.M)
    (install,) = re.findall(r"^helm --kube-context .*? install .*?--wait --timeout \S+$", script, re.M | re.S)
    program = "\n".join(
        ["set -eu", *constants, "endpoint=http://172.18.0.3:4566", "helm() { printf '%s\\n' \"$@\"; }", install]
    )
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.splitlines()
    values = set_values(words)
    assert values["image"] == {"repository": "outbox-operator", "tag": "e2e", "pullPolicy": "Never"}
    files = chart.render(values, name=words[words.index("install") + 1], namespace=namespace_of(words))
    assert any(name.endswith("deployment.yaml") for name in files)


def test_documented_openshift_settings_drop_the_fixed_uid(chart):
    doc = ROOT / "docs" / "install.md"
    (line,) = [c for c in shell_commands(doc) if c.startswith("--set podSecurityContext.")]
    required = {"clusterId": "c", "aws": {"region": "eu-west-1"}}
    values = merge(
        {**required, "image": {"repository": "registry.example.com/o/outbox-operator"}},
        set_values(shlex.split(line)),
    )
    deployment = yaml.safe_load(chart.render(values, name="outbox-operator", namespace="outbox")[
        "outbox-operator/templates/deployment.yaml"
    ])
    pod = deployment["spec"]["template"]["spec"]
    assert "runAsUser" not in pod["securityContext"] and "runAsGroup" not in pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_docker_context_keeps_everything_the_build_reads():
    # .dockerignore trims the context; the build still needs the workspace, the lock file, the
    # Lambda build script with its glibc check and the tool pins.
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "Cargo.toml", "Cargo.lock", "operator/Cargo.toml", "lambdas/relay/Cargo.toml",
        "dev/trigger/Cargo.toml", "scripts/build-lambdas.sh", "dev/glibc_needed.py", "dev/requirements.txt",
    ]
    for path in needed:
        assert (ROOT / path).exists(), path
        parts = Path(path).parts
        hits = [p for p in ignored if any(Path(*parts[: i + 1]).match(p) for i in range(len(parts)))]
        assert hits == [], f"{path} is excluded from the Docker build context by {hits}"


def dockerfile_runs() -> list[str]:
    """The shell of every RUN instruction, continuation lines joined, --mount flags dropped."""
    lines = [line for line in dockerfile().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    runs = []
    for line in joined.splitlines():
        if line.startswith("RUN "):
            runs.append(re.sub(r"^RUN (--\S+ +)*", "", line))
    return runs


def test_dockerfile_run_steps_are_valid_posix_shell():
    # A quoting or continuation slip would otherwise surface only in a Docker build. The
    # build image's /bin/sh is dash, as here (sh -n checks syntax only, nothing runs).
    runs = dockerfile_runs()
    assert len(runs) >= 6, runs
    for body in runs:
        proc = subprocess.run(["sh", "-n", "-c", body], capture_output=True, text=True)
        assert proc.returncode == 0, f"{body}\n{proc.stderr}"


def stub(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def run_operator_stage(tmp_path: Path, target: str, build: str, machine: str) -> tuple[int, str, Path]:
    """The operator stage's two RUN steps, with apt-get, rustup, cargo and readelf stubbed and
    the absolute paths moved under tmp_path: what they would install, export and build."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}\n')
    stub(bin_dir, "rustup", f'echo "rustup $*" >> {log}\n')
    stub(
        bin_dir,
        "cargo",
        f'echo "cargo $*" >> {log}\nenv | grep -E "_LINKER=|^CC_|^AR_" | sort >> {log}\n'
        'triple=$(echo "$*" | sed "s/.*--target \\([^ ]*\\).*/\\1/")\n'
        'mkdir -p "target/$triple/release" && echo binary > "target/$triple/release/outbox-operator"\n',
    )
    stub(bin_dir, "readelf", f'echo "  Machine:                           {machine}"\n')
    *_, select, build_step = dockerfile_runs()
    program = "\n".join(
        step.replace("/rust-target", str(tmp_path / "rust-target")).replace("/out/", f"{tmp_path}/out/")
        for step in (select, build_step)
    )
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TARGETARCH": target, "BUILDARCH": build}
    proc = subprocess.run(["sh", "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True)
    calls = log.read_text() if log.exists() else ""
    return proc.returncode, proc.stdout + proc.stderr + calls, tmp_path


# What readelf -h prints as the Machine of an x86_64 ELF file.
X86_64_MACHINE = "Advanced Micro Devices X86-64"


def test_operator_stage_cross_compiles_arm64_on_an_amd64_builder(tmp_path):
    rc, out, where = run_operator_stage(tmp_path, target="arm64", build="amd64", machine="AArch64")
    assert rc == 0, out
    assert "apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross" in out
    assert "rustup target add aarch64-unknown-linux-gnu" in out
    assert "cargo build --release --locked -p outbox-operator --target aarch64-unknown-linux-gnu" in out
    assert "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc" in out
    assert "CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc" in out
    assert "AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar" in out
    assert (where / "out" / "outbox-operator").exists()


def test_operator_stage_builds_amd64_natively_without_cross_packages(tmp_path):
    rc, out, _ = run_operator_stage(tmp_path, target="amd64", build="amd64", machine=X86_64_MACHINE)
    assert rc == 0, out
    assert "apt-get" not in out
    assert "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc" in out
    assert "--target x86_64-unknown-linux-gnu" in out


def test_operator_stage_cross_compiles_amd64_on_an_arm64_builder(tmp_path):
    rc, out, _ = run_operator_stage(tmp_path, target="amd64", build="arm64", machine=X86_64_MACHINE)
    assert rc == 0, out
    assert "install -y --no-install-recommends gcc-x86-64-linux-gnu libc6-dev-amd64-cross" in out


def test_operator_stage_refuses_a_binary_of_the_wrong_architecture(tmp_path):
    rc, out, _ = run_operator_stage(tmp_path, target="arm64", build="amd64", machine=X86_64_MACHINE)
    assert rc != 0 and "is not built for linux/arm64" in out


def test_operator_stage_refuses_an_unsupported_platform(tmp_path):
    rc, out, _ = run_operator_stage(tmp_path, target="riscv64", build="amd64", machine="RISC-V")
    assert rc != 0 and "TARGETARCH 'riscv64' is not supported" in out
