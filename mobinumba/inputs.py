"""Turning the command line's DIR_OR_GLOB... arguments into a list of image paths.

A directory stands for every image file under it (recursively, by extension), a pattern with
glob characters for the files it matches (`**` recurses), anything else for itself: a plain
path that does not exist is kept, so that it becomes an error row instead of stopping the run.
Directories and patterns are expanded in sorted order; each file is listed once, at its first
occurrence.
"""
import glob
import os

from .errors import InputError

# File name extensions (lower case) that a directory or a pattern contributes.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".jfif"})


def expand_inputs(arguments):
    """The image paths named by files, directories and glob patterns, in order, without repeats.

    Raises InputError when a directory holds no image or a pattern matches none.
    """
    paths = {}  # path -> None: an ordered set
    for argument in arguments:
        argument = os.fspath(argument)
        for path in _expand_one(argument):
            paths.setdefault(path, None)
    return list(paths)


def _expand_one(argument):
    """The paths one argument stands for."""
    if os.path.isdir(argument):
        found = sorted(_images_under(argument))
        if not found:
            raise InputError(f"{argument}: directory holds no image files "
                             f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return found
    if glob.has_magic(argument):
        found = sorted(path for path in glob.iglob(argument, recursive=True)
                       if os.path.isfile(path) and is_image_name(path))
        if not found:
            raise InputError(f"{argument}: pattern matches no image files")
        return found
    return [argument]


def _images_under(directory):
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            if is_image_name(name):
                yield os.path.join(root, name)


def is_image_name(path):
    """Whether a file name has one of IMAGE_EXTENSIONS (any case)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS
