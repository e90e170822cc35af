"""What every HTTP adapter reads from the application: the core directory."""

from __future__ import annotations

from fastapi import Request

from service.core.directory import Directory


def directory_of(request: Request) -> Directory:
    directory: Directory = request.app.state.directory
    return directory
