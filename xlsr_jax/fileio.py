"""Run-directory file I/O that works for local paths and object stores (gs://...) alike.

A TPU pod run keeps its workdir in a bucket: Orbax writes the checkpoints there itself, and
everything else in the run directory (config.json, metrics.jsonl, eval reports, TensorBoard
events) goes through these helpers. Remote paths use `etils.epath` (TensorFlow's gfile backend
for gs://); local paths keep plain `os` behaviour, including atomic tmp-file-and-rename writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
    """True for URLs such as gs://bucket/run (anything with a scheme other than file://)."""
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def abspath(path: PathLike) -> str:
    """`os.path.abspath` for local paths; remote URLs are already absolute and stay as they are.

    (os.path.abspath would turn gs://bucket/run into <cwd>/gs:/bucket/run.)
    """
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(path)


def join(path: PathLike, *parts: str) -> str:
    """Joins path components with '/' (the separator of both POSIX paths and URLs)."""
    return os.path.join(os.fspath(path), *parts)


def makedirs(path: PathLike) -> None:
    """Creates `path` and its parents if missing (object stores: a no-op-like marker)."""
    if is_remote(path):
        epath.Path(os.fspath(path)).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def exists(path: PathLike) -> bool:
    """Whether a file or directory exists at `path`."""
    return epath.Path(os.fspath(path)).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: PathLike) -> bool:
    """Whether `path` is a directory (a prefix with objects under it, on object stores)."""
    return epath.Path(os.fspath(path)).is_dir() if is_remote(path) else os.path.isdir(path)


def isfile(path: PathLike) -> bool:
    """Whether `path` is an existing file (object)."""
    if is_remote(path):
        p = epath.Path(os.fspath(path))
        return p.exists() and not p.is_dir()
    return os.path.isfile(path)


def listdir(path: PathLike) -> list[str]:
    """Names (not paths) of the entries directly under the directory `path`."""
    if is_remote(path):
        return [p.name for p in epath.Path(os.fspath(path)).iterdir()]
    return os.listdir(path)


def rename(src: PathLike, dst: PathLike) -> None:
    """Moves a file or directory to `dst` (same filesystem / bucket); `dst` must not exist."""
    if is_remote(src):
        epath.Path(os.fspath(src)).rename(epath.Path(os.fspath(dst)))
    else:
        os.rename(src, dst)


def remove(path: PathLike) -> None:
    """Deletes one file."""
    if is_remote(path):
        epath.Path(os.fspath(path)).unlink()
    else:
        os.remove(path)


def read_text(path: PathLike) -> str:
    """The whole UTF-8 text of the file at `path`."""
    if is_remote(path):
        return epath.Path(os.fspath(path)).read_text(encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_text(path: PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically, creating the parent directory.

    Local: through `atomic_file`, so readers never see half a file.
    Object stores: one object upload is already atomic (readers see the old or the new object).
    """
    path = os.fspath(path)
    if is_remote(path):
        p = epath.Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        return
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def current_umask() -> int:
    """The process's file mode creation mask (read by setting it and putting it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary local file path next to `path`; moves it onto `path` when the block ends.

    The one atomic file writer of the package: a reader sees the old file or the complete new one,
    never half of one; on an exception the temporary file is removed and `path` is untouched.

    Args:
      path: the final local file (its parent directory is created).
      suffix: ending of the temporary name (writers such as `np.savez` append ".npz" otherwise).
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp-", suffix=suffix, dir=os.path.dirname(path))
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 -> what open() would have given
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary local directory next to `path`; renames it to `path` when the block ends.

    The one atomic directory writer (exported checkpoints, transformers folders): a reader never
    sees a half-written directory; on an exception the temporary one is removed.

    Args:
      path: the final local directory.
      overwrite: replace an existing `path` (the old one is moved aside, then deleted).
    Raises:
      FileExistsError: `path` exists and `overwrite` is False.
    """
    final = os.path.abspath(os.fspath(path))
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) to replace it")
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(final) + ".tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 -> what mkdir would have given
        yield tmp
        if os.path.exists(final):
            old = final + ".old-" + os.path.basename(tmp)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class JsonlAppender:
    """Appends text lines to a file: a cheap append locally, a whole rewrite on object stores.

    Object stores have no append, so on a remote path all lines of the run (the ones already
    there when a run resumes, then the new ones) are kept in memory and the object is rewritten
    on every `flush`. metrics.jsonl has one short line per logging step, so this stays small.
    """

    def __init__(self, path: PathLike):
        """Opens `path` for appending (creating its parent directory)."""
        self.path = os.fspath(path)
        self._remote = is_remote(self.path)
        self._closed = False
        if self._remote:
            self._lines = [read_text(self.path)] if exists(self.path) else []
            if self._lines and not self._lines[0].endswith("\n"):
                self._lines[0] += "\n"
            self._dirty = False
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run

    def write(self, line: str) -> None:
        """Adds one line (a trailing newline is added if missing); visible after `flush`."""
        line = line if line.endswith("\n") else line + "\n"
        if self._remote:
            self._lines.append(line)
            self._dirty = True
        else:
            self._file.write(line)

    def flush(self) -> None:
        """Makes the lines written so far visible to readers."""
        if self._remote:
            if self._dirty:
                write_text(self.path, "".join(self._lines))
                self._dirty = False
        else:
            self._file.flush()

    def close(self) -> None:
        """Flushes and releases the file (a second call does nothing, like `file.close`)."""
        if self._closed:
            return
        self.flush()
        if not self._remote:
            self._file.close()
        self._closed = True


class ScalarEventWriter:
    """TensorBoard scalars: tensorboardX for local logdirs, TensorFlow's writer for remote ones.

    tensorboardX would need google-cloud-storage for gs://; TensorFlow (a dependency of the
    input pipeline) writes event files through its gfile, which handles gs:// natively.
    """

    def __init__(self, logdir: PathLike):
        """Opens an event file in `logdir` (created if needed)."""
        self.logdir = os.fspath(logdir)
        self._remote = is_remote(self.logdir)
        if self._remote:
            import tensorflow as tf
            from tensorflow.core.framework import summary_pb2

            self._tf = tf
            self._writer = tf.summary.create_file_writer(self.logdir)
            # tf.summary.scalar lives in the tensorboard package (not installed); the core
            # `tf.summary.write` with the scalars plugin's metadata produces the same record.
            self._metadata = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
            ).SerializeToString()
        else:
            from tensorboardX import SummaryWriter

            os.makedirs(self.logdir, exist_ok=True)
            self._writer = SummaryWriter(self.logdir)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Writes {tag: value} at `step` and flushes."""
        if self._remote:
            tf = self._tf
            with self._writer.as_default():
                for key, value in scalars.items():
                    tf.summary.write(key, tf.constant(float(value), tf.float32), step=step, metadata=self._metadata)
        else:
            for key, value in scalars.items():
                self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file (a second call does nothing)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
