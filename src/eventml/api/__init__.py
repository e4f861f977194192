"""HTTP: the Open Inference Protocol v2, the native JSON API, tokens and metrics (``eventml serve``)."""

from eventml.api._service import ApiOptions
from eventml.api.app import create_app
from eventml.api.auth import TokenStore
from eventml.api.writer import GroupCommitSink

__all__ = ["ApiOptions", "GroupCommitSink", "TokenStore", "create_app"]
