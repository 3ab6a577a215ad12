"""The OpenAPI document, checked in as api/openapi.json so a change to the API shows in review.

    python -m api.openapi        # rewrite api/openapi.json from the app
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from api.main import create_app

PATH: Final = Path(__file__).with_name("openapi.json")


def document() -> str:
    return json.dumps(create_app().openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    PATH.write_text(document())
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
