"""`python -m activelearn.labeling.labelstudio serve`: a local Label Studio server."""

import sys

from activelearn.labeling.labelstudio import main

sys.exit(main())
