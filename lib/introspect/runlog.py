"""Logging for workflow jobs: everything a job says (logging, warnings, tqdm bars) goes to its log file."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def logged(log_path: str | Path | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send logging, stdout and stderr of the enclosed block to `log_path` (or leave them on the terminal)."""
    logger = logging.getLogger("introspect")
    if log_path is None:
        logging.basicConfig(level=level, format=LOG_FORMAT)
        yield logger
        return
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", buffering=1, encoding="utf-8") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(True)
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield logger
        except BaseException:
            logger.exception("job failed after %.1f s", time.perf_counter() - start)
            raise
        else:
            logger.info("job finished in %.1f s", time.perf_counter() - start)
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            logging.captureWarnings(False)

