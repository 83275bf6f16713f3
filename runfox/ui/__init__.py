"""``runfox ui``: a read-only web dashboard over a backend (Flask; the ``ui`` extra).

``create_app(backend)`` returns the Flask application (JSON endpoints under
``/api/`` and one static page, ``runfox/ui/static/``, shipped in the package);
``runfox.cli.ui`` serves it. Only the command line imports this package.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
