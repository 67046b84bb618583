"""Entry point of the server: `python cmd/server/main.py` runs `movieservice serve`.

Deliberately thin: configuration, wiring and the RPC logic live in `internal/`.
"""

import sys

from movieservice.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
