"""`python -m engine --workflow DIR`: the serving process (the image's entrypoint)."""

import sys

from engine.serve.process import main

if __name__ == "__main__":
    sys.exit(main())
