"""Where a run's training data comes from: URLs, files, directories, pipes, an OCI image.

Everything the run itself writes (downloads, a pipe's contents, a pulled image) goes under
hidden, kaito-named directories of the work dir and is the only thing removed afterwards: a
work dir may be the user's own directory (``--work-dir .``), and their ``data/`` folder in it is
theirs. A pipe (``--data /dev/stdin``, ``--data <(zcat train.jsonl.gz)``) is read once, into the
work dir, because the data is read several times (a checking pass, then tokenizing).
"""

from __future__ import annotations

import os
import select
import shutil
import stat
from pathlib import Path
from typing import Any, Mapping

from kaito_core.api.training.errors import DataError

DOWNLOADS = ".kaito-downloads"
IMAGE_DATA = ".kaito-image-data"


def is_stream(path: Path) -> bool:
    """A FIFO or character device: it can be read once, from the start, and not again."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def spool(path: Path, dest_dir: Path, index: int) -> Path:
    """Copy a pipe's bytes into ``dest_dir`` (same name), so it can be read more than once."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"{index:03d}-{path.name or 'stdin'}"
    try:
        with open(path, "rb", buffering=0) as src, open(target, "wb") as out:
            while True:
                # A signal (Ctrl-C, a Job's SIGTERM) may be delivered to another thread (torch's
                # and tokenizers' pools); a read blocked on a silent pipe would then never see
                # it. Waking every half second lets Python run the handler in this thread.
                ready, _, _ = select.select([src], [], [], 0.5)
                if not ready:
                    continue
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise DataError(f"cannot read the data stream {path} into {dest_dir} ({exc.strerror or exc}); give a file "
                        "or a work dir with room (--work-dir)") from None
    return target


class Inputs:
    """The run's data inputs, and what reading them wrote into the work dir."""

    def __init__(self, work: Path):
        self.work = work
        self.made: list[Path] = []

    @property
    def downloads(self) -> Path:
        return self.work / DOWNLOADS

    def gather(self, req: Any, dataset: Mapping[str, Any]) -> list[Path]:
        """The data files of ``req.data`` and ``req.input_image`` (see :class:`TuneRequest`)."""
        from kaito_core.tuning import data as data_mod
        from kaito_core.tuning import fetch

        paths: list[Path] = []
        for i, item in enumerate(req.data):
            if str(item).startswith(("http://", "https://")) or "://" in str(item):
                self.made.append(self.downloads / fetch.filename_for(str(item), i))
                paths.append(fetch.download(str(item), self.downloads, index=i,
                                            allow_private=req.allow_private_urls, max_bytes=req.max_download_bytes))
            elif is_stream(Path(item)):
                paths.append(spool(Path(item), self.downloads, i))
                self.made.append(paths[-1])
            else:
                paths.append(Path(item))
        if req.input_image:
            from kaito_core.tuning import oci

            target = self.work / IMAGE_DATA
            self.made.append(target)
            oci.pull(req.input_image, target, docker_config=req.pull_secret, insecure=req.insecure_registries,
                     what="tuning.input.image")
            paths.append(target)
        if not paths:
            raise DataError("no training data: give --data (URLs, files or directories) or tuning.input "
                            "(urls, image or volumeSource)")
        return data_mod.find_data_files(paths, dataset_path=dataset.get("dataset_path"))

    def cleanup(self) -> None:
        """Remove what :meth:`gather` wrote (never anything else in the work dir)."""
        for path in self.made:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        try:
            self.downloads.rmdir()
        except OSError:
            pass  # absent, or holds something that is not ours
