"""Container images for the test node, built here without a registry or a Docker engine.

Each image is one root filesystem packed as a single-layer OCI image archive, which
``ctr -n k8s.io images import`` loads into the node's containerd:

* ``pause``: the sandbox image, only the ``pause`` binary compiled (static) from
  ``build/pause/linux/pause.c`` of the pinned ``k8s.io/kubernetes`` module (``e2e/node/build.sh``).
* ``operator``: Debian bookworm (``mmdebstrap`` from the host's apt sources) with ``python3``, and a venv
  in ``/opt/mtls-operator`` holding this repository's wheel and its pinned dependencies from PyPI: the
  recipe in `OPERATOR_RECIPE`, which also writes the repository's ``Dockerfile`` (`render_dockerfile`), so
  the two cannot drift. The test workloads (TLS servers, StatefulSet, DaemonSet) run this image too: it
  has Python and ``cryptography``, all they need.

Archives are cached under ``$MTLS_CACHE/kubenode/images/`` named by a digest of their inputs (the
recipe, the source files, the pause binary), so a warm run builds nothing.

``python -m mtls_operator.testing.images build`` builds both and prints their references and sizes;
``... dockerfile`` prints the Dockerfile the recipe describes.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "OPERATOR_RECIPE",
    "PAUSE_REF",
    "BuiltImage",
    "ImageError",
    "OperatorRecipe",
    "build_all",
    "cache_dir",
    "oci_archive",
    "render_dockerfile",
]

PAUSE_REF: Final = "docker.io/library/mtls-pause:3.10"
# The image name the chart uses by default (image.repository); the tag is a digest of the inputs.
OPERATOR_REPOSITORY: Final = "docker.io/library/mtls-operator"
EPOCH: Final = 0  # every file in a layer gets this mtime, so equal inputs give equal digests


class ImageError(RuntimeError):
    """An image could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class OperatorRecipe:
    """What goes into the operator image: one description for this builder and for the Dockerfile."""

    suite: str = "bookworm"
    apt_packages: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")
    venv: str = "/opt/mtls-operator"
    # The runtime dependencies are pinned in pyproject.toml; the two it leaves open are pinned here.
    extra_pins: tuple[str, ...] = ("aiohttp==3.14.5", "PyYAML==6.0.3")
    user: str = "65532:65532"
    # kopf names itself after the user (getpass.getuser() -> pwd.getpwuid()), which fails for a uid that
    # /etc/passwd does not list: the image must list it.
    passwd: str = "nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin"
    group: str = "nonroot:x:65532:"
    env: Mapping[str, str] = field(
        default_factory=lambda: {
            "PATH": "/opt/mtls-operator/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    entrypoint: tuple[str, ...] = ("mtls-operator",)
    cmd: tuple[str, ...] = ("--all-namespaces",)
    ports: tuple[int, ...] = (9402,)
    labels: Mapping[str, str] = field(
        default_factory=lambda: {
            "org.opencontainers.image.title": "mtls-operator",
            "org.opencontainers.image.description": (
                "Mutual-TLS certificates (ECDSA, Ed25519, RSA, ML-DSA) for Kubernetes workloads"
            ),
            "org.opencontainers.image.licenses": "Apache-2.0",
        }
    )
    # Documentation, man pages and locales are not needed at run time.
    drop_paths: tuple[str, ...] = (
        "/usr/share/doc",
        "/usr/share/man",
        "/usr/share/info",
        "/usr/share/locale",
        "/var/cache/apt",
        "/var/lib/apt/lists",
        "/var/log",
    )

    def user_lines(self) -> str:
        """The shell that lists the image's user and group (kopf needs a name for its uid)."""
        return f"echo '{self.passwd}' >> /etc/passwd && echo '{self.group}' >> /etc/group"

    def fingerprint(self) -> str:
        return json.dumps(
            {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in vars(self).items()}, sort_keys=True
        )


OPERATOR_RECIPE: Final = OperatorRecipe()


def render_dockerfile(recipe: OperatorRecipe = OPERATOR_RECIPE) -> str:
    """The Dockerfile that builds the same image as `build_operator` (checked by tests/unit)."""
    env_lines = " \\\n    ".join(f"{k}={v}" for k, v in recipe.env.items())
    label_lines = " \\\n      ".join(f'{k}="{v}"' for k, v in recipe.labels.items())
    drop = " ".join(recipe.drop_paths)
    return f"""\
# syntax=docker/dockerfile:1
# Generated from mtls_operator/testing/images.py (OPERATOR_RECIPE) by `make dockerfile`; do not edit.
# The test node builds the same image without Docker (mmdebstrap + pip; see docs/node.md).
#   docker build -t mtls-operator:dev .
# Pin the base by digest in your registry mirror
# (docker buildx imagetools inspect debian:{recipe.suite}-slim).
ARG BASE_IMAGE=debian:{recipe.suite}-slim

FROM ${{BASE_IMAGE}} AS base
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
    {" ".join(recipe.apt_packages)} \\
 && rm -rf {drop} \\
 && {recipe.user_lines()}

FROM base AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv {recipe.venv}
COPY pyproject.toml README.md ./
COPY operator ./operator
# The runtime dependencies are pinned in pyproject.toml; the two it leaves open are pinned here.
RUN {recipe.venv}/bin/pip install {" ".join(f'"{p}"' for p in recipe.extra_pins)} . \\
 && {recipe.venv}/bin/python -c "import mtls_operator.main, cryptography, kopf" \\
 && rm -rf {recipe.venv}/lib/python3*/site-packages/mtls_operator/testing \\
 && find {recipe.venv} -name '__pycache__' -prune -exec rm -rf {{}} + \\
 && {recipe.venv}/bin/pip uninstall -q -y pip

FROM base
LABEL {label_lines}
COPY --from=build {recipe.venv} {recipe.venv}
ENV {env_lines}
# 65532: the conventional "nonroot" uid; the chart runs it with runAsNonRoot and a read-only root fs.
USER {recipe.user}
EXPOSE {" ".join(str(p) for p in recipe.ports)}
ENTRYPOINT {json.dumps(list(recipe.entrypoint))}
CMD {json.dumps(list(recipe.cmd))}
"""


# --------------------------------------------------------------------------------------------------
# OCI archives


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = EPOCH
    info.uname = info.gname = ""
    return info


def layer_from_dir(root: Path) -> bytes:
    """An uncompressed layer tar of everything under `root` (owners and modes kept, mtimes zeroed)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(_walk(root)):
            arcname = path.relative_to(root).as_posix()
            tar.add(path, arcname=arcname, recursive=False, filter=_normalize)
    return buffer.getvalue()


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            yield base / name
        for name in filenames:
            yield base / name


def oci_archive(
    *, ref: str, layer: bytes, config: Mapping[str, Any], out: Path, architecture: str = "amd64"
) -> str:
    """Write a one-layer OCI image archive for `ref` to `out`; returns the manifest digest.

    The layer is stored gzip-compressed (level 1: fast; the digest is of the compressed bytes). The
    index carries ``io.containerd.image.name`` so ``ctr images import`` names the image `ref`.
    """
    compressed = gzip.compress(layer, compresslevel=1, mtime=EPOCH)
    image_config = {
        "architecture": architecture,
        "os": "linux",
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [_sha256(layer)]},
        "history": [{"created_by": "mtls_operator.testing.images"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": _sha256(compressed),
                "size": len(compressed),
            }
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = _sha256(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": architecture, "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    blobs = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
    }
    for data in (config_bytes, manifest_bytes, compressed):
        blobs["blobs/sha256/" + _sha256(data).removeprefix("sha256:")] = data
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w") as tar:
        for name, data in blobs.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return manifest_digest


# --------------------------------------------------------------------------------------------------
# Building


def cache_dir() -> Path:
    """``$MTLS_CACHE/kubenode`` (default ``~/.cache/mtls-operator/kubenode``): node binaries and images."""
    cache = os.environ.get("MTLS_CACHE")
    if cache:
        root = Path(cache).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "mtls-operator"
    return root / "kubenode"


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    archive: Path
    # Bytes of the unpacked root filesystem (what the node stores) and of the archive (what is imported).
    rootfs_bytes: int
    archive_bytes: int
    cached: bool


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for base in here.parents:
        if (base / "pyproject.toml").is_file() and (base / "operator" / "mtls_operator").is_dir():
            return base
    raise ImageError("cannot find the repository root (pyproject.toml next to operator/)")


def _digest_inputs(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


# The test harness (this package) is not part of the operator: left out of the image and of its digest,
# so changing it does not rebuild the image.
_TESTING: Final = Path(__file__).resolve().parent


def _source_files(repo: Path) -> list[Path]:
    files = [repo / "pyproject.toml", repo / "README.md"]
    # Only the package: the build itself rewrites operator/*.egg-info, which must not change the digest.
    files += sorted(
        p
        for p in (repo / "operator" / "mtls_operator").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.is_relative_to(_TESTING)
    )
    return files


def _meta_path(archive: Path) -> Path:
    return archive.with_suffix(".json")


def _cached(name: str, ref: str, archive: Path) -> BuiltImage | None:
    meta = _meta_path(archive)
    if not (archive.is_file() and meta.is_file()):
        return None
    recorded = json.loads(meta.read_text())
    return BuiltImage(
        name=name,
        ref=ref,
        archive=archive,
        rootfs_bytes=int(recorded["rootfs_bytes"]),
        archive_bytes=archive.stat().st_size,
        cached=True,
    )


def _finish(name: str, ref: str, archive: Path, rootfs: Path, config: Mapping[str, Any]) -> BuiltImage:
    layer = layer_from_dir(rootfs)
    oci_archive(ref=ref, layer=layer, config=config, out=archive)
    _meta_path(archive).write_text(json.dumps({"ref": ref, "rootfs_bytes": len(layer)}))
    return BuiltImage(
        name=name,
        ref=ref,
        archive=archive,
        rootfs_bytes=len(layer),
        archive_bytes=archive.stat().st_size,
        cached=False,
    )


def build_pause(pause_binary: Path, images: Path) -> BuiltImage:
    data = pause_binary.read_bytes()
    archive = images / f"pause-{_digest_inputs([data])}.tar"
    found = _cached("pause", PAUSE_REF, archive)
    if found is not None:
        return found
    with tempfile.TemporaryDirectory(prefix="pause-rootfs-") as tmp:
        root = Path(tmp)
        shutil.copy2(pause_binary, root / "pause")
        (root / "pause").chmod(0o755)
        return _finish("pause", PAUSE_REF, archive, root, {"Entrypoint": ["/pause"], "User": "65535:65535"})


def _run(argv: Sequence[str], what: str, **kwargs: Any) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise ImageError(
            f"{what} failed (exit {result.returncode}): {' '.join(argv[:3])} ...\n" + "\n".join(output[-30:])
        )


def build_operator(images: Path, recipe: OperatorRecipe = OPERATOR_RECIPE) -> BuiltImage:
    """The operator image: mmdebstrap (host apt sources), a venv, this repository's wheel and its pins."""
    repo = _repo_root()
    inputs = [recipe.fingerprint().encode()]
    for path in _source_files(repo):
        inputs += [path.relative_to(repo).as_posix().encode(), path.read_bytes()]
    tag = _digest_inputs(inputs)
    ref = f"{OPERATOR_REPOSITORY}:{tag}"
    archive = images / f"operator-{tag}.tar"
    found = _cached("operator", ref, archive)
    if found is not None:
        return found
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed: `make node-deps` (apt-get install mmdebstrap)")
    with tempfile.TemporaryDirectory(prefix="operator-image-", dir=images) as tmp:
        work = Path(tmp)
        wheels, root = work / "wheels", work / "rootfs"
        wheels.mkdir()
        # The wheels come from the host's pip (PyPI): this repository's own and its pinned dependencies.
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--wheel-dir",
                str(wheels),
                *recipe.extra_pins,
                str(repo),
            ],
            "pip wheel",
            cwd=repo,
        )
        hook = f'chroot "$1" python3 -m venv {recipe.venv}'
        install = (
            f'mkdir -p "$1/tmp/wheels" && cp {wheels}/*.whl "$1/tmp/wheels/" && '
            f'chroot "$1" {recipe.venv}/bin/pip install -q --no-index --no-cache-dir '
            f"--disable-pip-version-check --find-links /tmp/wheels mtls-operator "
            + " ".join(f"'{p}'" for p in recipe.extra_pins)
            + f' && chroot "$1" {recipe.venv}/bin/python -c "import mtls_operator.main, cryptography, kopf"'
            + f' && rm -rf "$1/tmp/wheels" "$1{recipe.venv}"/lib/python3*/site-packages/mtls_operator/testing'
            + f' && find "$1{recipe.venv}" -name __pycache__ -prune -exec rm -rf {{}} +'
            + f' && chroot "$1" {recipe.venv}/bin/pip uninstall -q -y pip'
        )
        drop = " ".join(f'"$1{p}"' for p in recipe.drop_paths)
        _run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=essential",
                "--mode=root",
                "--format=directory",
                f"--include={','.join(recipe.apt_packages)}",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                f"--customize-hook={hook}",
                f"--customize-hook={install}",
                f'--customize-hook=rm -rf {drop}; mkdir -p "$1/var/log" "$1/tmp"; chmod 1777 "$1/tmp"',
                f'--customize-hook=chroot "$1" sh -c "{recipe.user_lines()}"',
                recipe.suite,
                str(root),
            ],
            "mmdebstrap",
        )
        user = recipe.user
        config = {
            "User": user,
            "Env": [f"{k}={v}" for k, v in recipe.env.items()],
            "Entrypoint": list(recipe.entrypoint),
            "Cmd": list(recipe.cmd),
            "ExposedPorts": {f"{p}/tcp": {} for p in recipe.ports},
            "Labels": dict(recipe.labels),
        }
        return _finish("operator", ref, archive, root, config)


def build_all(pause_binary: Path, images: Path | None = None) -> dict[str, BuiltImage]:
    where = images if images is not None else cache_dir() / "images"
    where.mkdir(parents=True, exist_ok=True)
    with _build_lock(where):
        built = {"pause": build_pause(pause_binary, where), "operator": build_operator(where)}
        _prune(where, keep={image.archive for image in built.values()})
        return built


def _prune(where: Path, keep: set[Path], newest: int = 2) -> None:
    """Drop old archives of each image: the ones in `keep` and the `newest` others stay."""
    for name in ("pause", "operator"):
        archives = sorted(where.glob(f"{name}-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [a for a in archives if a not in keep][newest:]:
            old.unlink(missing_ok=True)
            _meta_path(old).unlink(missing_ok=True)


@contextlib.contextmanager
def _build_lock(where: Path) -> Iterator[None]:
    import fcntl

    with (where / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_operator.testing.images")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or find cached) the pause and operator images")
    build.add_argument("--pause-binary", type=Path, default=cache_dir() / "bin" / "pause")
    sub.add_parser("dockerfile", help="print the Dockerfile the operator recipe describes")
    args = parser.parse_args(argv)
    if args.command == "dockerfile":
        sys.stdout.write(render_dockerfile())
        return 0
    try:
        built = build_all(args.pause_binary)
    except ImageError as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    for image in built.values():
        state = "cached" if image.cached else "built"
        print(
            f"images: {image.name} {image.ref} {state}: rootfs {image.rootfs_bytes / 1e6:.1f} MB, "
            f"archive {image.archive_bytes / 1e6:.1f} MB ({image.archive})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
