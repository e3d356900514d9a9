"""The one error an image build raises: the message names the input and the reason."""

from __future__ import annotations

from worker.errors import ConnectorError


class ImageBuildError(ConnectorError):
    """An image could not be built; the message says which input and why."""
