"""The one family of errors madopd raises.

Every error names what was wrong (argument, file, line, field) and what was expected, so a
notebook user can fix the input without reading our source.
"""

from __future__ import annotations


class MadopdError(Exception):
    """Base class: catch this to catch anything madopd raises on purpose."""


class ShapeError(MadopdError, ValueError):
    """A tensor argument has the wrong shape, dtype or vocabulary size."""


class ValueRangeError(MadopdError, ValueError):
    """A scalar argument (beta, tau, temperature, ...) is outside its range, or a tensor holds NaN/inf."""


class ConfigError(MadopdError, ValueError):
    """A configuration field is invalid; the message names the field."""


class DataError(MadopdError, ValueError):
    """A malformed input row. The message names the file, the line and the field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = ", ".join(
            part for part in (
                f"file {path}" if path is not None else "",
                f"line {line}" if line is not None else "",
                f"field {field!r}" if field is not None else "",
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.line, self.field = path, line, field


class StorageError(MadopdError, OSError):
    """Writing the run folder failed (full disk, read-only or missing folder); the message says
    what was kept (e.g. the previous checkpoint) and which file was being written."""


class RunInUseError(MadopdError, RuntimeError):
    """Another process holds the run folder's lock (its PID is in the message)."""


class TeacherError(MadopdError, RuntimeError):
    """A teacher backend failed (server down, timeout, malformed reply) after its retries."""


class RolloutError(MadopdError, RuntimeError):
    """The student's rollout engine failed: its server is unreachable, timed out, or refused a
    weight update (the message names the URL and the route)."""


class TrackerError(MadopdError, RuntimeError):
    """An experiment tracker (TensorBoard, trackio, W&B) failed under on_tracker_error='raise'."""


class TokenizerMismatchError(MadopdError, ValueError):
    """Student and teacher tokenizers differ and cross-tokenizer scoring is not configured
    (``DistillConfig.cross_tokenizer``, madopd.crosstok)."""


class MissingExtraError(MadopdError, ImportError):
    """An optional dependency is missing; the message names the pip extra that installs it."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(f"{purpose} needs the optional package {package!r}: "
                         f"{install_hint(extra, package)}")
        self.package, self.extra = package, extra


def install_hint(extra: str, package: str | None = None) -> str:
    """A pip command that works where this madopd is installed. madopd is not on PyPI, so
    ``pip install 'madopd[extra]'`` fails outside a checkout: from a checkout (an editable
    install) the hint names that folder, elsewhere the package itself."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        hint = f"pip install -e '{root}[{extra}]'"  # the madopd[extra] of this checkout
        return f"{hint}  (madopd[{extra}] of this checkout; or pip install {package})" \
            if package else hint
    return f"pip install {package}" if package else "pip install " + " ".join(
        f"'{p}'" for p in _extra_requirements(extra))


def _extra_requirements(extra: str) -> list[str]:
    """The requirements of an extra, from the installed package's metadata."""
    from importlib import metadata

    try:
        reqs = metadata.metadata("madopd").get_all("Requires-Dist") or []
    except metadata.PackageNotFoundError:
        return [f"madopd[{extra}]"]
    marker = (f'extra == "{extra}"', f"extra == '{extra}'")
    return [r.split(";")[0].strip() for r in reqs if any(m in r for m in marker)] or [
        f"madopd[{extra}]"]


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the CLI prints errors this way; ``--debug`` shows all)."""
    text = " | ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
