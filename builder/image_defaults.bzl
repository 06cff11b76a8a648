"""Constants the image rules share with builder/build.py (builder/layer_tool_test.py checks them)."""

# builder/build.py USER and APP_DIR.
IMAGE_USER = "65534"
IMAGE_WORKDIR = "/app"

# The base's Python (deploy/base/assemble.py PYTHON_VERSION): wheels are installed for it.
IMAGE_PYTHON_VERSION = "3.13"

# mtime of every layer entry and the images' `created` (SOURCE_DATE_EPOCH of `pipedreamer build`).
IMAGE_SOURCE_DATE_EPOCH = 0

# The cluster's zot (deploy/zot: NodePort 30500); crane pushes to localhost over plain HTTP.
DEFAULT_REGISTRY = "localhost:30500"
