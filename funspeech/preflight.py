"""Start-up checks that turn a wrong environment into one clear line instead of a traceback:
directories a process must write, the extra a backend needs, ports already taken, and whether
NATS_URL names this machine. Each failure raises StartupError (a SystemExit with the message)."""

from __future__ import annotations

import ipaddress
import os
import socket
from importlib.util import find_spec
from pathlib import Path

from funspeech.settings import Settings

# modules of the `funasr` extra (pyproject.toml) that the FunASR backend imports
FUNASR_MODULES = ("torch", "funasr", "kaldi_native_fbank", "modelscope", "wetext")


class StartupError(SystemExit):
    """A start-up failure: uncaught, the process prints this one line and exits with 1."""


def writable_dir(setting: str, value: str, path: Path) -> Path:
    """Create `path` if needed and prove it writable, else a StartupError naming the setting."""
    path = path.absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        user = _user()
        raise StartupError(
            f"{setting}={value!r}: cannot write to {path} ({exc.strerror}); make it writable "
            f"for user {user} or set {setting} to a directory that is"
        ) from None
    return path


def check_log_file(settings: Settings) -> None:
    if settings.log_file:
        writable_dir("LOG_FILE", settings.log_file, Path(settings.log_file).parent)


def check_data_dir(settings: Settings) -> None:
    writable_dir("DATA_DIR", settings.data_dir, Path(settings.data_dir))


def check_backend(settings: Settings) -> None:
    """ASR_BACKEND=funasr needs the `funasr` extra installed in this environment."""
    if settings.asr_backend != "funasr":
        return
    missing = [m for m in FUNASR_MODULES if not _installed(m)]
    if missing:
        raise StartupError(
            f"ASR_BACKEND=funasr needs the funasr extra ({', '.join(missing)} not installed): "
            'pip install -e ".[funasr]" (or pip install ".[funasr]"), or set ASR_BACKEND=light'
        )


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked (sys.modules[module] is None)
        return False


def check_port_free(setting: str, host: str, port: int) -> None:
    from funspeech.procs import port_free

    if not port_free(host or "0.0.0.0", port):
        raise StartupError(
            f"{setting}: port {port} on {host or '0.0.0.0'} is already in use (another FunSpeech "
            f"or another program); stop it or choose another {setting}"
        )


def local_address(host: str) -> str | None:
    """The address to listen on when `host` names this machine (a loopback or local interface
    address, or a name resolving to one); None when it names another machine."""
    if host in ("", "localhost", "0.0.0.0", "::"):
        return "127.0.0.1" if host in ("", "localhost") else host
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for family, _, _, _, addr in infos:
        ip = str(addr[0])
        if ipaddress.ip_address(ip).is_loopback or _bindable(family, ip):
            return ip
    return None


def _bindable(family: int, ip: str) -> bool:
    with socket.socket(family) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
    return True


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def check_process(settings: Settings, component: str) -> None:
    """What every process checks before it logs a line: its log directory, DATA_DIR, and for
    an engine the backend's extra. component: "main" (launcher), "bridge-N", "engine-<dev>"."""
    check_log_file(settings)
    check_data_dir(settings)
    if component.startswith("engine"):
        check_backend(settings)
