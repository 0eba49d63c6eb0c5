"""Exceptions raised by blocksearch.

Every error a user can cause derives from :class:`BlocksearchError`, so the
command line catches that one class, prints its message and exits with
:attr:`BlocksearchError.exit_code` instead of showing a traceback.

Exit codes: 1 any other blocksearch error, 2 invalid command-line usage
(argparse), 3 invalid block description, 4 dataset problem, 5 space file
problem, 6 storage or study problem, 130 interrupted with Ctrl-C.
"""

from __future__ import annotations


class BlocksearchError(Exception):
    """Base class of every error caused by user input or the environment."""

    #: Process exit code the command line uses for this error.
    exit_code: int = 1


class UsageError(BlocksearchError):
    """Option value that argparse accepted but blocksearch cannot use."""

    exit_code = 2


class DslError(BlocksearchError):
    """Invalid block description: a syntax error, unknown op or bad argument."""

    exit_code = 3


class DataError(BlocksearchError):
    """Dataset that is missing, unreadable or laid out in an unsupported way."""

    exit_code = 4


class SpaceError(BlocksearchError):
    """Search-space file that is missing, fails to load or lacks a field."""

    exit_code = 5


class StudyError(BlocksearchError):
    """Study storage that cannot be opened, or a study in a conflicting state."""

    exit_code = 6
