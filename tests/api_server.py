"""A real HTTP server for API tests: uvicorn serving an app on a free port, in a thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from sqlalchemy.orm import Session

from newsletter.accounts.models import User
from newsletter.accounts.roles import ROLE_SCOPES, Role
from newsletter.accounts.tokens import create_token
from newsletter.accounts.users import create_user
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker
from tests.smtp_sink import free_port

PASSWORD = "correct horse battery staple"


class ServerThread:
    """`uvicorn.Server` for `app` on 127.0.0.1, started and stopped around a block."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@dataclass
class Staff:
    """A running server and a way to act on it as someone."""

    url: str
    settings: Settings

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=60)

    def session(self) -> Session:
        return make_sessionmaker(make_engine(self.settings.database_url))()

    def user(self, email: str, role: str = "admin", **fields: Any) -> User:
        with self.session() as session:
            user = create_user(session, email, role, password=PASSWORD, **fields)
            session.commit()
            return user

    def token(self, email: str, *scopes: str, role: str = "admin") -> str:
        with self.session() as session:
            user = session.query(User).filter_by(email=email).one_or_none()
            if user is None:
                user = create_user(session, email, role, password=PASSWORD)
            chosen = list(scopes) or sorted(ROLE_SCOPES[Role(user.role)])
            secret = create_token(session, user, chosen).token
            session.commit()
            return secret
