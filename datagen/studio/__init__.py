"""``datagen studio``: paint a label map and watch the model render it, browse and label vectors.

A local web app (Starlette + uvicorn, ``pip install -e '.[studio]'``): one static page
(``static/``: HTML, vanilla JS, CSS; no build step) over a small JSON/PNG API
(:mod:`datagen.studio.app`) over one session object that owns the recipe, the model and
the vector libraries (:mod:`datagen.studio.session`; it does not import the web framework).
Beside it, :mod:`datagen.studio.wire` (label maps in, PNGs out, paths checked, one-line
errors) and :mod:`datagen.studio.export` (a painted map as a recipe YAML).
See docs/studio.md.
"""

from .session import Studio

__all__ = ["Studio", "create_app"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "create_app":  # imports starlette: only when asked for
        from .app import create_app

        return create_app
    raise AttributeError(name)
