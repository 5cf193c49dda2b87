"""The package ships circus-sd.ini(5), the page generated from this checkout's declarations."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile

from test_deb import DEBS, the_deb

from circus_sd.config.manpage import manpage

PAGE = "./usr/share/man/man5/circus-sd.ini.5.gz"


def test_the_package_installs_the_configuration_manual_page() -> None:
    path = DEBS / os.path.basename(the_deb())
    tree = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tree)) as tar:
        page = tar.extractfile(PAGE)
        assert page is not None, f"{PAGE} is not in {path}"
        text = gzip.decompress(page.read()).decode()
        circus_sd_page = tar.extractfile("./usr/share/man/man1/circus-sd.1.gz")
        assert circus_sd_page is not None
        see_also = gzip.decompress(circus_sd_page.read()).decode()
    assert text == manpage()  # made by debian/rules from the installed code: the same page
    assert ".BR circus\\-sd.ini (5)" in see_also
