"""`python -m api`: the HTTP API on API_HOST:API_PORT, with the worker's environment."""

from __future__ import annotations

import uvicorn

from api.main import create_app
from api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="info", proxy_headers=False)


if __name__ == "__main__":
    main()
