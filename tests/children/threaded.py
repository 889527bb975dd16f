"""A module that starts a thread when imported (a fork server must refuse to fork from it)."""

from __future__ import annotations

import threading

_stop = threading.Event()
threading.Thread(target=_stop.wait, name="started-on-import", daemon=True).start()
