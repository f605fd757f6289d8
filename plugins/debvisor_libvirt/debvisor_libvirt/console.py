"""`hv console VM`: the serial console like `virsh console` (escape: Ctrl-]).

libvirt's default event loop runs in a thread; the console is a non-blocking stream
whose output goes to stdout, and stdin goes to the guest. On a terminal, stdin is put
in raw mode and Ctrl-] (0x1d) detaches; with stdin not a terminal, the console ends at
the escape byte or at end of input (after ``--linger`` seconds of output).

Nothing raised in the event thread escapes as a thread traceback: an error in a stream
callback (e.g. stdout closed by ``| head``) ends the console with one clear sentence.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from debvisor_core.errors import DebvisorError

from .nodes import lv

if TYPE_CHECKING:
    import libvirt

ESCAPE = b"\x1d"  # Ctrl-]
_loop_started = False
_loop_lock = threading.Lock()


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once).

    Must run before the connection used for the console is opened.
    """
    global _loop_started
    libvirt = lv()
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception as exc:  # noqa: BLE001 - keep the loop; never a thread traceback
                    from debvisor_core import log

                    log.debug(f"libvirt event loop: {type(exc).__name__}: {exc}")
                    time.sleep(0.1)

        threading.Thread(target=run, daemon=True, name="libvirt-events").start()
        _loop_started = True


def attach(dom: libvirt.virDomain, *, force: bool = False, linger: float = 1.0) -> int:
    """Relay the console until the escape key, EOF or the guest closes it; return 0."""
    libvirt = lv()
    conn = dom.connect()
    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else libvirt.VIR_DOMAIN_CONSOLE_SAFE
    try:
        dom.openConsole(None, stream, flags)
    except libvirt.libvirtError as exc:
        raise DebvisorError(f"cannot open the console of {dom.name()}: "
                            f"{exc.get_error_message()}", hint="another session may hold it; "
                            "use --force to take it over") from None
    done = threading.Event()
    failure: list[str] = []
    out = sys.stdout.buffer

    def on_event(st: Any, events: int, opaque: Any) -> None:
        try:
            relay(st, events, opaque)
        except BrokenPipeError:
            failure.append("the console output was closed")
            done.set()
        except BaseException as exc:  # noqa: BLE001 - reported by attach(), one sentence
            failure.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            done.set()

    def relay(st: Any, events: int, _opaque: Any) -> None:
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            done.set()
            return
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = st.recv(4096)
                except libvirt.libvirtError:
                    done.set()
                    return
                if data == -2:  # would block
                    return
                if not data:
                    done.set()
                    return
                out.write(data)
                out.flush()

    stream.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                            | libvirt.VIR_STREAM_EVENT_HANGUP, on_event, None)
    fd = sys.stdin.fileno()
    tty = os.isatty(fd)
    saved = None
    if tty:
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(fd)
        ttymod.setraw(fd)
        sys.stderr.write(f"Connected to {dom.name()} (escape character is ^])\r\n")
        sys.stderr.flush()
    try:
        eof_at: float | None = None
        while not done.is_set():
            if eof_at is not None:
                if time.monotonic() - eof_at >= linger:
                    break
                time.sleep(0.05)
                continue
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 1024)
            if not data:
                eof_at = time.monotonic()
                continue
            if ESCAPE in data:
                data = data[: data.index(ESCAPE)]
                _send(stream, data)
                break
            _send(stream, data)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            sys.stderr.write("\n")
        try:
            stream.eventRemoveCallback()
            stream.abort()
        except libvirt.libvirtError:
            pass
    if failure:
        _quiet_stdout()
        raise DebvisorError(f"console of {dom.name()} ended: {failure[0]}")
    return 0


def _quiet_stdout() -> None:
    """Point stdout at /dev/null when its reader is gone, so that flushing it at exit does
    not raise BrokenPipeError again."""
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _send(stream: libvirt.virStream, data: bytes) -> None:
    libvirt = lv()
    while data:
        try:
            n = stream.send(data)
        except libvirt.libvirtError as exc:
            raise DebvisorError(f"console closed: {exc.get_error_message()}") from None
        if n == -2:
            time.sleep(0.01)
            continue
        data = data[n:]
