"""Turning the command line's DIR_OR_GLOB... arguments into a list of image paths.

A directory stands for every image file under it (recursively, by extension), a pattern with
glob characters for the image files it matches (`**` recurses), anything else for itself.
Directories and patterns are expanded in sorted order; each file is listed once, at its first
occurrence. An argument that stands for no image (a missing file, a directory without image
files, a pattern that matches none) is kept as it is, so that reading it gives that argument
an error (line or row) and the run carries on past it, like past any unreadable image.
"""
import glob
import os

# File name extensions (lower case) that a directory or a pattern contributes.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".jfif"})


def expand_inputs(arguments):
    """The image paths named by files, directories and glob patterns, in order, without
    repeats; an argument that names no image file is kept as it is."""
    paths = {}  # path -> None: an ordered set
    for argument in arguments:
        argument = os.fspath(argument)
        for path in _expand_one(argument) or [argument]:
            paths.setdefault(path, None)
    return list(paths)


def _expand_one(argument):
    """The image paths one argument stands for ([] if none, or if it is a plain path)."""
    if os.path.isfile(argument):  # itself, even with glob characters in its name
        return [argument]
    if os.path.isdir(argument):
        return sorted(_images_under(argument))
    if glob.has_magic(argument):
        return sorted(path for path in glob.iglob(argument, recursive=True)
                      if os.path.isfile(path) and is_image_name(path))
    return []


def _images_under(directory):
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            if is_image_name(name):
                yield os.path.join(root, name)


def is_image_name(path):
    """Whether a file name has one of IMAGE_EXTENSIONS (any case)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS
