"""What one file is: an image to train on (maybe an odd one, decoded with conversion) or a skip and why.

Every file is opened once, and any failure, whatever Pillow or the file system raises for
a hostile file, is that file's reason to be skipped, never the end of the scan. Odd images
(CMYK, 16-bit, TIFF, WebP, ...) are reported as converted: `train.data.images.decode_file`
converts them to 8-bit RGB itself, so no copy is written anywhere.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# Formats and modes that are 8-bit RGB (or gray/palette) as stored; the rest are reported as converted.
_NATIVE = {
    "JPEG": {"L", "RGB"},
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA"},
    "BMP": {"L", "P", "RGB"},
    "GIF": {"L", "P", "RGB"},
}
_PNG_BIT_DEPTH_OFFSET = 24  # byte of the IHDR chunk that holds the bit depth
CONVERTED = "converted"  # the note of a usable image that is decoded with conversion to 8-bit RGB


def inspect_file(path: str, image_size: int) -> tuple[bool, str]:
    """(True, "") for an image to train on, (True, CONVERTED) for an odd one, (False, why) for a skip."""
    try:
        info = os.stat(path)
    except OSError as error:
        return False, f"cannot be read ({error.strerror or error}; a broken link or no permission?)"
    if not stat.S_ISREG(info.st_mode):
        return False, "not a regular file (a device, pipe or socket)"  # opening a pipe would wait forever
    if info.st_size == 0:
        return False, "empty file (0 bytes)"
    try:
        return _open(Path(path), image_size)
    except PermissionError as error:
        return False, f"cannot be read ({error.strerror}); check its permissions"
    except UnidentifiedImageError:
        return False, "not an image (or a format Pillow cannot read)"
    except Image.DecompressionBombError as error:
        return False, f"too many pixels to decode safely (a decompression bomb?): {error}"
    except Exception as error:  # noqa: BLE001 - a hostile file raises anything (struct.error, IndexError, ...): it is skipped, the scan goes on
        return False, f"unreadable image ({type(error).__name__}: {error})"


def _open(path: Path, image_size: int) -> tuple[bool, str]:
    with Image.open(path) as image:  # Pillow refuses > 2x MAX_IMAGE_PIXELS itself
        if image.width * image.height > Image.MAX_IMAGE_PIXELS:
            return False, f"too many pixels to decode safely ({image.width}x{image.height}; a decompression bomb?)"
        image_format, mode = image.format, image.mode
        if image_format == "JPEG":
            image.draft("RGB", (image_size, image_size))  # decode at reduced scale: fast, still reads every byte
        image.load()
    if mode in _NATIVE.get(image_format, set()) and not _is_16_bit_png(path, image_format):
        return True, ""
    return True, CONVERTED


def _is_16_bit_png(path: Path, image_format: str) -> bool:
    if image_format != "PNG":
        return False
    with open(path, "rb") as handle:
        header = handle.read(_PNG_BIT_DEPTH_OFFSET + 1)
    return len(header) > _PNG_BIT_DEPTH_OFFSET and header[_PNG_BIT_DEPTH_OFFSET] == 16
