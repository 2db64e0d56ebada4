"""Building deployment packages in tests."""

from __future__ import annotations

import io
import zipfile


def make_zip(files: dict[str, str | bytes], mode: int = 0o644) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


ECHO = make_zip({"app.py": "def handler(event, context):\n    return event\n"})
