"""Writing next to the user's files without harming them: temporary names the program creates
itself (never a fixed name a file of the user's could have), with the permissions a plain new
file or folder would get, and the same-file test for outputs."""

import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_file(folder, prefix, suffix):
    """Create a new empty file in ``folder`` with a unique name; returns its path."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    os.chmod(path, 0o666 & ~_umask())
    return path


def temporary_folder(folder, prefix):
    """Create a new empty folder in ``folder`` with a unique name; returns its path."""
    path = tempfile.mkdtemp(prefix=prefix, dir=folder)
    os.chmod(path, 0o777 & ~_umask())
    return path


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name the same file (through links and other spellings)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
