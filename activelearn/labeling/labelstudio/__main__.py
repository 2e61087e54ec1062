"""`python -m activelearn.labeling.labelstudio serve`: a local Label Studio server."""

import sys

from activelearn.labeling.labelstudio.cli import main

sys.exit(main())
